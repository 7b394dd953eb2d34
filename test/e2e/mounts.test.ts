/**
 * Shared folders on the real Debian image (`project create --mount`): a
 * read-write folder owned by a user of this host (`nobody`) and a read-only
 * one owned by root, served by an unprivileged virtiofsd each, mounted by the
 * guest at boot. Reads and writes both ways, ownership as the folder's owner,
 * read-only enforced on the host (a remount in the guest changes nothing),
 * no device nodes or chown from the guest, the mounts back after a restart,
 * and what a project with shared folders refuses. The project boots (no
 * template: its memory is shared with the daemons); one VM for the file.
 */
import { chown, mkdir, readFile, readdir, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cliOf } from '../helpers/cli.ts';
import { until } from '../helpers/net.ts';
import { projectEnv, type ProjectEnv } from '../helpers/project-env.ts';

let env: ProjectEnv;
const { g, ok, json } = cliOf(() => env.env, 600_000);
const guest = (script: string) => g(['vm', 'exec', 'fs', '--', 'sh', '-c', script]);
const NOBODY = 65534;

let rw: string;
let ro: string;

beforeAll(async () => {
  env = await projectEnv('emnt');
  rw = join(env.root, 'src');
  ro = join(env.root, 'data');
  await mkdir(rw);
  await mkdir(ro);
  await writeFile(join(rw, 'hello.txt'), 'from the host\n');
  await chown(rw, NOBODY, NOBODY);
  await chown(join(rw, 'hello.txt'), NOBODY, NOBODY);
  await writeFile(join(ro, 'data.txt'), 'read only\n');
  const made = await json<{ from: string; reason: string; state: string }>(['project', 'create', 'fs', '--memory', '1G', '--mount', `${rw}:/srv/app`, '--mount', `${ro}:/srv/data:ro`]);
  expect([made.state, made.from]).toEqual(['ready', 'boot']);
  expect(made.reason).toMatch(/shared folders need the guest memory shared/);
}, 900_000);

afterAll(async () => {
  await env?.cleanupAll();
}, 60_000);

describe('shared folders', { timeout: 600_000 }, () => {
  it('are listed with their tags, and mounted by the guest at boot', async () => {
    expect(await json(['project', 'mount', 'list', 'fs'])).toEqual([
      { tag: 'goship-0', host: rw, guest: '/srv/app', readOnly: false },
      { tag: 'goship-1', host: ro, guest: '/srv/data', readOnly: true },
    ]);
    const mounts = await ok(['vm', 'exec', 'fs', '--', 'findmnt', '-n', '-o', 'SOURCE,TARGET,FSTYPE', '-t', 'virtiofs']);
    expect(mounts.split('\n').map((l) => l.trim().split(/\s+/))).toEqual([
      ['goship-0', '/srv/app', 'virtiofs'],
      ['goship-1', '/srv/data', 'virtiofs'],
    ]);
  });

  it('read-write: what either side writes, the other reads; the guest writes as the folder\'s owner', async () => {
    expect((await guest('cat /srv/app/hello.txt')).stdout).toBe('from the host');
    const w = await guest('echo "from the guest" > /srv/app/new.txt && mkdir /srv/app/dir && echo deep > /srv/app/dir/f');
    expect([w.code, w.stderr]).toEqual([0, '']);
    expect(await readFile(join(rw, 'new.txt'), 'utf8')).toBe('from the guest\n');
    for (const f of ['new.txt', 'dir', 'dir/f']) expect((await stat(join(rw, f))).uid).toBe(NOBODY);
    await writeFile(join(rw, 'later.txt'), 'written later\n');
    expect(await until('the host\'s new file in the guest', async () => ((await guest('cat /srv/app/later.txt')).stdout || undefined), 30_000)).toBe('written later');
  });

  it('read-write: the guest cannot make device nodes or give files to another user of this host', async () => {
    const dev = await guest('mknod /srv/app/disk b 8 0');
    expect(dev.code).not.toBe(0);
    const own = await guest('chown 1234:1234 /srv/app/new.txt');
    expect(own.code).not.toBe(0);
    expect((await readdir(rw)).sort()).toEqual(['dir', 'hello.txt', 'later.txt', 'new.txt']);
    expect((await stat(join(rw, 'new.txt'))).uid).toBe(NOBODY);
  });

  it('read-only: enforced on the host, even when the guest remounts it read-write', async () => {
    expect((await guest('cat /srv/data/data.txt')).stdout).toBe('read only');
    const w = await guest('echo x > /srv/data/new.txt');
    expect([w.code, w.stderr]).toEqual([2, 'sh: 1: cannot create /srv/data/new.txt: Read-only file system']);
    const again = await guest('mount -o remount,rw /srv/data; echo x > /srv/data/data.txt');
    expect(again.stderr).toMatch(/Read-only file system/);
    expect(await readdir(ro)).toEqual(['data.txt']);
    expect(await readFile(join(ro, 'data.txt'), 'utf8')).toBe('read only\n');
  });

  it('are mounted again after a restart (a fresh virtiofsd for the fresh QEMU)', async () => {
    await ok(['project', 'stop', 'fs']);
    await ok(['project', 'start', 'fs', '--wait', 'agent']);
    expect(await until('the folder after the restart', async () => ((await guest('cat /srv/app/new.txt')).stdout || undefined), 120_000)).toBe('from the guest');
    expect((await guest('cat /srv/data/data.txt')).stdout).toBe('read only');
  });

  it('refuse a suspend and a memory snapshot (QEMU 7.2 cannot save virtio-fs), and a root-owned folder read-write', async () => {
    const s = await g(['project', 'suspend', 'fs']);
    expect([s.code, s.stderr.split('\n')[0]]).toEqual([1, 'goshipctl: error: project fs has shared folders: it cannot be suspended (QEMU 7.2 cannot save the state of a virtio-fs device)']);
    const m = await g(['project', 'snapshot', 'create', 'fs', 'one', '--memory']);
    expect(m.code).toBe(1);
    expect(m.stderr).toMatch(/cannot be snapshotted with its memory/);
    expect((await guest('cat /srv/app/hello.txt')).stdout).toBe('from the host');
    const bad = await g(['project', 'create', 'rooted', '--memory', '512M', '--mount', `${ro}:/srv/x`]);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/--mount\[0\]: HOST_DIR \S+ is owned by root: shared read-write, the guest's root could leave setuid-root files on this host/);
  });

  it('refuse bad --mount values before anything is made', async () => {
    const r = await g(['project', 'create', 'x', '--mount', '/nope:/srv', '--mount', `${rw}:/etc`]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/--mount\[1\]: GUEST_DIR must not be in the guest's system directory \/etc/);
    const own = await g(['project', 'create', 'x', '--mount', `${env.root}:/srv:ro`]);
    expect([own.code, own.stderr]).toEqual([2, expect.stringMatching(/--mount\[0\]: HOST_DIR \S+ holds or is in GoShip's own files/)]);
    const missing = await g(['project', 'create', 'x', '--mount', '/nope:/srv']);
    expect([missing.code, missing.stderr]).toEqual([2, expect.stringMatching(/--mount\[0\]: HOST_DIR \/nope: no such directory/)]);
    expect((await json<unknown[]>(['project', 'list'])).length).toBe(1);
  });
});
