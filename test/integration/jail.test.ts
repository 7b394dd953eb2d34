/**
 * The jail for real (docs/security.md), against real QEMU and the fast test
 * guest under TCG, as root: each VM's QEMU as its own identity, its files
 * and sockets its own alone, its cgroup with its limits (v1 on this host), a
 * QEMU killed by its memory limit recorded as such, a rewritten backing file
 * refused with nothing touched, a spec naming GoShip's state file refused,
 * a squatted run directory refused.
 */
import { existsSync } from 'node:fs';
import { chown, mkdir, readFile, stat, symlink, writeFile } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ID_REGISTRY, JAIL_ID_BASE, JAIL_ID_COUNT, readQcow2Header } from '../../src/jail/index.ts';
import { Layout } from '../../src/layout.ts';
import { Runtime } from '../../src/runtime/index.ts';
import type { Vm } from '../../src/store/index.ts';
import { FASTGUEST_FILL, fastGuest, type FastGuest } from '../helpers/fast-guest.ts';
import { goshipctl } from '../helpers/cli.ts';
import { until } from '../helpers/net.ts';
import { testEnv, type TestEnv } from '../helpers/runtime-env.ts';

let env: TestEnv;
let rt: Runtime;
let guest: FastGuest;
let base: string;

const MiB = 1024 * 1024;

function spec(name: string, extra: { cmdline?: string; limits?: Record<string, unknown> } = {}) {
  return {
    name,
    memory: '256M',
    boot: { kernel: guest.kernel, initrd: guest.initrd, cmdline: `${guest.cmdline} ${extra.cmdline ?? ''}`.trim() },
    network: { mode: 'none' as const },
    ...(extra.limits ? { limits: extra.limits } : {}),
  };
}

async function status(pid: number): Promise<string> {
  return readFile(`/proc/${pid}/status`, 'utf8');
}
const field = (text: string, name: string): string => new RegExp(`^${name}:[ \\t]*(.*)$`, 'm').exec(text)?.[1]?.trim() ?? '';

/** Runs `argv` as `uid` (its own group, no other): what an escaped QEMU of that identity could do. */
async function asIdentity(uid: number, argv: string[]) {
  return execa('setpriv', [`--reuid=${uid}`, `--regid=${uid}`, '--clear-groups', '--', ...argv], { reject: false, encoding: 'buffer' });
}

beforeAll(async () => {
  guest = await fastGuest();
  env = await testEnv('jl');
  rt = await Runtime.open({ layout: env.layout });
  base = join(env.root, 'base.qcow2');
  await execa('qemu-img', ['create', '-q', '-f', 'qcow2', base, '64M']);
}, 300_000);

afterAll(async () => {
  for (const vm of await rt.vms.list()) await rt.vms.destroy(vm.name, { force: true }).catch(() => undefined);
  await env.cleanup();
}, 120_000);

describe('one identity per VM', () => {
  let a: Vm;
  let b: Vm;

  beforeAll(async () => {
    await rt.vms.create({ spec: spec('jl-a'), base: { path: base } });
    await rt.vms.create({ spec: spec('jl-b'), base: { path: base } });
    a = await rt.vms.start('jl-a');
    b = await rt.vms.start('jl-b');
  }, 120_000);

  it('each QEMU runs as a uid and gid of its own from the jail\'s range, with no supplementary group and only PATH in its environment', async () => {
    for (const vm of [a, b]) {
      const s = await status(vm.pid!);
      expect(field(s, 'Uid').split(/\s+/)).toEqual(Array(4).fill(String(vm.jail!.uid)));
      expect(field(s, 'Gid').split(/\s+/)).toEqual(Array(4).fill(String(vm.jail!.gid)));
      expect(field(s, 'Groups')).toBe('');
      expect(field(s, 'NoNewPrivs')).toBe('1');
      expect(vm.jail!.uid).toBeGreaterThanOrEqual(JAIL_ID_BASE);
      expect(vm.jail!.uid).toBeLessThan(JAIL_ID_BASE + JAIL_ID_COUNT);
      expect((await readFile(`/proc/${vm.pid}/environ`, 'utf8')).split('\0').filter(Boolean)).toEqual(['PATH=/usr/sbin:/usr/bin:/sbin:/bin']);
      // The registry holds the id for this home and VM.
      expect(JSON.parse(await readFile(join(ID_REGISTRY, String(vm.jail!.uid)), 'utf8'))).toMatchObject({ home: env.layout.home, vm: vm.id });
    }
    expect(a.jail!.uid).not.toBe(b.jail!.uid);
  });

  it('its overlay, directories and sockets are its own alone, GoShip\'s home is passed through, its state is root\'s', async () => {
    const mode = async (p: string) => {
      const s = await stat(p);
      return [s.uid, s.gid, (s.mode & 0o7777).toString(8)];
    };
    const id = a.jail!.uid!;
    expect(await mode(a.paths.overlay!)).toEqual([id, id, '600']);
    expect(await mode(a.paths.dir)).toEqual([0, id, '710']);
    expect(await mode(env.layout.vmRunDir(a.id))).toEqual([0, id, '1770']);
    // QEMU makes its sockets under umask 077 (src/jail/command.ts): 0777 & ~077.
    for (const sock of [a.paths.qmpSocket, a.paths.agentSocket, a.paths.qmpUserSocket]) expect(await mode(sock)).toEqual([id, id, '700']);
    expect(await mode(env.layout.home)).toEqual([0, 0, '711']);
    expect(await mode(env.layout.stateFile)).toEqual([0, 0, '600']);
  });

  it('neither reads the other\'s overlay, nor GoShip\'s state; each reads its own', async () => {
    const own = await asIdentity(a.jail!.uid!, ['head', '-c', '4', a.paths.overlay!]);
    expect(own.exitCode).toBe(0);
    expect(Buffer.from(own.stdout).toString('latin1')).toBe('QFI\xfb');
    for (const [who, target] of [
      [a, b.paths.overlay!],
      [b, a.paths.overlay!],
      [a, env.layout.stateFile],
      [a, b.paths.qmpSocket],
    ] as const) {
      const r = await asIdentity(who.jail!.uid!, ['cat', target]);
      expect(r.exitCode, `${who.name} reading ${target}`).not.toBe(0);
      expect(Buffer.from(r.stderr).toString()).toContain('Permission denied');
    }
  });

  it('each QEMU is in a cgroup of its own with the memory, CPU and pids limits recorded for it', async () => {
    const cg = a.jail!.cgroup!;
    expect(cg.version).toBe(1);
    // The defaults under TCG: guest + 256 MiB + the 256 MiB translation buffer + 256 MiB per vCPU; vCPUs + 1; 128 + vCPUs.
    expect([cg.memoryBytes, cg.cpuQuotaUs, cg.cpuPeriodUs, cg.pids]).toEqual([256 * MiB + 256 * MiB + 256 * MiB + 256 * MiB, 200_000, 100_000, 129]);
    const procCgroup = await readFile(`/proc/${a.pid}/cgroup`, 'utf8');
    const memoryPath = /^\d+:memory:(.*)$/m.exec(procCgroup)![1]!;
    expect(memoryPath.endsWith('/goship/jl-a')).toBe(true);
    const memoryDir = join('/sys/fs/cgroup/memory', memoryPath);
    expect(cg.vmDirs).toContain(memoryDir);
    expect(Number(await readFile(join(memoryDir, 'memory.limit_in_bytes'), 'utf8'))).toBe(cg.memoryBytes);
    const cpuDir = cg.vmDirs.find((d) => d.includes('/cpu/'))!;
    expect(Number(await readFile(join(cpuDir, 'cpu.cfs_quota_us'), 'utf8'))).toBe(200_000);
    // It weighs as its vCPU and one more task against the rest of the host, not as one task.
    expect(Number(await readFile(join(cpuDir, 'cpu.shares'), 'utf8'))).toBe(2048);
    const pidsDir = cg.vmDirs.find((d) => d.includes('/pids/'))!;
    expect((await readFile(join(pidsDir, 'pids.max'), 'utf8')).trim()).toBe('129');
    expect((await readFile(join(pidsDir, 'cgroup.procs'), 'utf8')).split('\n')).toContain(String(a.pid));
    // `vm status` shows them.
    const out = await goshipctl(['vm', 'status', 'jl-a'], env.env);
    expect(out.stdout).toContain(`identity  uid ${a.jail!.uid} (its own)`);
    expect(out.stdout).toContain('limits    memory 1024 MiB, CPU 2 host CPUs, 129 tasks (cgroup v1)');
  });

  it('a stop removes the VM\'s cgroup; a destroy frees its id', async () => {
    const dirs = a.jail!.cgroup!.vmDirs;
    await rt.vms.stop('jl-a', { force: true });
    await until('the cgroup of jl-a to go', async () => (dirs.every((d) => !existsSync(d)) ? true : undefined));
    await rt.vms.destroy('jl-a');
    expect(existsSync(join(ID_REGISTRY, String(a.jail!.uid)))).toBe(false);
    expect(existsSync(a.paths.dir)).toBe(false);
  }, 60_000);
});

describe('limits that hold', () => {
  it('a QEMU that outgrows its memory limit is killed by it, and the VM is recorded as crashed for that reason', async () => {
    await rt.vms.create({ spec: spec('jl-oom', { cmdline: `${FASTGUEST_FILL}=200`, limits: { memoryOverhead: '8M' } }) });
    const vm = await rt.vms.start('jl-oom');
    expect(vm.jail!.cgroup!.memoryBytes).toBe(264 * MiB);
    const ended = await until('jl-oom to end', async () => {
      const r = await rt.vms.get('jl-oom');
      return r.end && r.state !== 'running' ? r : undefined;
    }, 90_000);
    expect(ended.state).toBe('crashed');
    expect(ended.end).toMatchObject({ kind: 'crashed', signal: 'SIGKILL', memoryLimit: 264 * MiB, summary: "QEMU was killed by the memory limit of its cgroup (264 MiB: the guest's memory and QEMU's overhead)" });
  }, 120_000);
});

describe('nothing a VM\'s files say is trusted', () => {
  it('an overlay rewritten to name another file as its backing file: refused before anything is touched, the file named', async () => {
    const target = join(env.root, 'scratch-secret');
    await writeFile(target, 'root:$6$hash:19000:0:99999:7:::\n', { mode: 0o600 });
    const before = await stat(target);
    const vm = await rt.vms.create({ spec: spec('jl-evil'), base: { path: base } });
    // What a QEMU that escaped its guest could do to the file it owns.
    await execa('qemu-img', ['rebase', '-u', '-b', target, '-F', 'raw', vm.paths.overlay!]);
    expect(await readQcow2Header(vm.paths.overlay!)).toEqual({ version: 3, backingFile: target, backingFormat: 'raw' });
    const err = (await rt.vms.start('jl-evil').catch((e: unknown) => e)) as { code: string; message: string; hint: string };
    expect(err).toMatchObject({
      code: 'EJAIL',
      message: `VM jl-evil: ${vm.paths.overlay} names "${target}" as its backing file, not the image it was created on (${base}); GoShip changed nothing and will not start it`,
      hint: 'the overlay was rewritten outside GoShip (by its QEMU, or by hand): restore it from a backup, or destroy the VM (goshipctl vm destroy jl-evil)',
    });
    const after = await stat(target);
    expect([after.uid, after.gid, after.mode]).toEqual([before.uid, before.gid, before.mode]);
    expect((await stat(env.root)).mode & 0o7777).toBe(0o711);
    expect((await rt.vms.get('jl-evil')).state).toBe('stopped');
    // `vm status` does not let qemu-img (as root) follow it either.
    await expect(rt.vms.diskChain('jl-evil')).rejects.toMatchObject({ code: 'EJAIL' });
    await rt.vms.destroy('jl-evil');
  }, 60_000);

  it('a symbolic link in place of a VM\'s overlay is refused, never followed', async () => {
    const target = join(env.root, 'scratch-link-target');
    await writeFile(target, 'x', { mode: 0o600 });
    const vm = await rt.vms.create({ spec: spec('jl-link'), base: { path: base } });
    await execa('ln', ['-sf', target, vm.paths.overlay!]);
    const err = (await rt.vms.start('jl-link').catch((e: unknown) => e)) as { code: string; message: string };
    expect(err).toMatchObject({ code: 'EJAIL', message: `${vm.paths.overlay} is a symbolic link: GoShip follows none in a VM's files` });
    expect((await stat(target)).uid).toBe(0);
    await rt.vms.destroy('jl-link');
    expect(existsSync(target)).toBe(true);
  }, 60_000);

  it('a file reached through a link: the directories of the path as written count, not only where the link leads', async () => {
    const closed = join(env.root, 'closed-link');
    await mkdir(closed, { mode: 0o700 });
    await symlink(dirname(guest.kernel), join(closed, 'guest'));
    const kernel = join(closed, 'guest', basename(guest.kernel));
    await rt.vms.create({ spec: { ...spec('jl-through'), boot: { kernel, initrd: guest.initrd, cmdline: guest.cmdline } } });
    const err = (await rt.vms.start('jl-through').catch((e: unknown) => e)) as { code: string; message: string };
    const uid = (await rt.vms.get('jl-through')).jail!.uid!;
    expect(err).toMatchObject({
      code: 'EJAIL',
      message: `VM jl-through: its QEMU runs as uid ${uid} and could not open what it needs: boot.kernel: VM jl-through's QEMU (uid ${uid}) cannot reach ${guest.kernel}: ${closed} is mode 0700 (0:0) and lets it not pass`,
    });
    await rt.vms.destroy('jl-through');
  }, 60_000);

  it('a spec that names GoShip\'s state file is refused (exit 2, the field named), and nothing is made', async () => {
    const file = join(env.root, 'evil.yaml');
    await writeFile(file, `name: jl-state\nmemory: 128M\nnetwork: {mode: none}\ndisks:\n  - {path: ${env.layout.stateFile}, format: raw}\n`);
    const r = await goshipctl(['vm', 'create', file], env.env);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain(`disks[0].path: ${env.layout.stateFile} is one of GoShip's own files, in GoShip's home (${env.layout.home})`);
    expect(existsSync(env.layout.vmDir('jl-state'))).toBe(false);
    await expect(rt.vms.get('jl-state')).rejects.toMatchObject({ code: 'ENOTFOUND' });
  }, 60_000);

  it('a run directory another user made first is refused and never used', async () => {
    const squat = join(env.root, 'squat');
    await mkdir(squat, { mode: 0o777 });
    await chown(squat, 65534, 65534);
    const layout = new Layout(env.layout.home, squat);
    const other = await Runtime.open({ layout });
    await other.vms.create({ spec: spec('jl-squat') });
    const err = (await other.vms.start('jl-squat').catch((e: unknown) => e)) as { code: string; message: string; hint: string };
    expect(err).toMatchObject({
      code: 'EJAIL',
      message: `GoShip's run directory ${squat} belongs to uid 65534, not to uid 0 (who runs GoShip): it holds the VMs' sockets and is never shared`,
    });
    expect(err.hint).toContain(`rm -r ${squat}`);
    expect(await execa('ls', ['-A', squat]).then((r) => r.stdout)).toBe('');
    await other.vms.destroy('jl-squat');
  }, 60_000);
});
