/**
 * A VM's saved state end to end through goshipctl on the real Debian image.
 * Templates: a warm, two clones restored from it with identities of their own,
 * a clone's forwarded port served at once, `--cold`, and the ways a template is
 * not used (another image build, a truncated state, a state QEMU refuses),
 * each a boot that says why. Suspend and resume: an app's process and the
 * guest's memory come back, a suspend killed mid-save leaves the VM running,
 * a state that cannot be restored leaves the project suspended until
 * `--discard-state`. Snapshots: of the disk and with memory, taken live and
 * stopped, restored, one deleted between others. One file, so that the suspended project is a clone of the
 * warmed template rather than one more boot.
 */
import { randomBytes } from 'node:crypto';
import { access, open, readdir, readFile, stat, truncate, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execa } from 'execa';
import { QmpClient } from '../../src/qmp/index.ts';
import { CLI, goshipctl } from '../helpers/cli.ts';
import { banner, freePort, httpGet, until } from '../helpers/net.ts';
import { projectEnv, type ProjectEnv } from '../helpers/project-env.ts';

let env: ProjectEnv;
const g = (args: string[], timeoutMs = 400_000) => goshipctl(args, env.env, { timeoutMs });
const json = async <T>(args: string[]): Promise<T> => {
  const r = await g([...args, '--json']);
  if (r.code !== 0) throw new Error(`goshipctl ${args.join(' ')} failed (${r.code}): ${r.stderr}`);
  return JSON.parse(r.stdout) as T;
};

interface TemplateJson {
  name: string;
  dir: string;
  image: string;
  cpus: number;
  memoryBytes: number;
  stateBytes: number;
  sizeBytes: number;
}
interface CreatedJson {
  name: string;
  state: string;
  from: 'template' | 'boot';
  template?: string;
  reason?: string;
  boot: { steps: { step: string }[] };
}

async function guest(name: string, script: string): Promise<string[]> {
  const r = await g(['vm', 'exec', name, '--', 'sh', '-c', script]);
  expect(r.code).toBe(0);
  return r.stdout.trim().split('\n');
}

let tpl: TemplateJson;

/** The memfd that VM `name`'s QEMU maps as its RAM and its inode, as /proc/PID/maps says; undefined when it maps none. */
async function ramOf(name: string): Promise<string | undefined> {
  const vms = await json<{ name: string; pid: number | null }[]>(['vm', 'list']);
  const pid = vms.find((v) => v.name === name)?.pid;
  if (!pid) throw new Error(`VM ${name} has no QEMU`);
  const line = (await readFile(`/proc/${pid}/maps`, 'utf8')).split('\n').find((l) => l.includes('/memfd:goship-'));
  if (!line) return undefined;
  const f = line.trim().split(/\s+/);
  return `${f.slice(5).join(' ')} ${f[4]}`;
}

beforeAll(async () => {
  env = await projectEnv('et');
  tpl = await json<TemplateJson>(['image', 'warm', '--memory', '768M']);
}, 900_000);

afterAll(async () => {
  await env?.cleanupAll();
}, 60_000);

describe('a warmed template', { timeout: 600_000 }, () => {
  it('is listed with its image, and its files are root-only where they must be', async () => {
    expect([tpl.image, tpl.cpus, tpl.memoryBytes]).toEqual(['default', 1, 768 * 1024 * 1024]);
    expect(tpl.name).toBe('default-1c-768m-10240m');
    const info = await json<{ templates: TemplateJson[] }>(['image', 'info', 'default']);
    expect(info.templates.map((t) => t.name)).toEqual([tpl.name]);
    // The state is read by the monitor only; the disk is every clone's backing file, read-only to them.
    expect(((await stat(join(tpl.dir, 'state'))).mode & 0o777).toString(8)).toBe('600');
    // The guest's RAM is the memory file, read by the monitors only; the state holds the devices alone.
    const memory = await stat(join(tpl.dir, 'memory'));
    expect([memory.size, (memory.mode & 0o777).toString(8)]).toEqual([768 * 1024 * 1024, '600']);
    expect(tpl.stateBytes).toBeLessThan(4 * 1024 * 1024);
    expect(((await stat(join(tpl.dir, 'disk.qcow2'))).mode & 0o777).toString(8)).toBe('644');
    // No VM is left of the warm.
    expect(await json<unknown[]>(['vm', 'list'])).toEqual([]);
  });

  it('serves two clones, each its own machine, and a clone serves its forwarded port at once', async () => {
    const port = await freePort();
    const a = await json<CreatedJson>(['project', 'create', 'alpha', '--memory', '768M', '--port', `${port}:22`]);
    const b = await json<CreatedJson>(['project', 'create', 'beta', '--memory', '768M']);
    expect([a.from, a.template ?? a.reason, a.state, b.from, b.template ?? b.reason]).toEqual(['template', tpl.name, 'ready', 'template', tpl.name]);
    expect(a.boot.steps.map((s) => s.step)).toEqual(['qemu', 'agent', 'identity', 'network', 'cloud-init']);
    expect(await banner(port)).toBe('SSH-2.0');
    // Both map one memfd of the template's memory (its pages shared, copy on write).
    const [ra, rb] = await Promise.all([ramOf('alpha'), ramOf('beta')]);
    expect(ra).toMatch(new RegExp(`^/memfd:goship-${tpl.name}\\.[0-9a-z]+ \\(deleted\\) [0-9]+$`));
    expect(rb).toBe(ra);
    const facts = 'hostname; cat /etc/machine-id; cat /etc/ssh/ssh_host_ed25519_key.pub | cut -d" " -f2; date +%s; head -c 16 /dev/urandom | od -An -tx1 | tr -d " "';
    const [fa, fb] = await Promise.all([guest('alpha', facts), guest('beta', facts)]);
    expect([fa[0], fb[0]]).toEqual(['alpha', 'beta']);
    for (const i of [1, 2, 4]) expect(fa[i]).not.toBe(fb[i]);
    // Its host keys were made on the host and sshd was not restarted: the key sshd serves is the one in /etc/ssh.
    const scanned = await execa('ssh-keyscan', ['-p', String(port), '-t', 'ed25519', '127.0.0.1'], { reject: false });
    expect(scanned.stdout.trim().split(' ').slice(1)).toEqual(['ssh-ed25519', fa[2]]);
    // The clock came from the host, not from the template's save.
    for (const f of [fa, fb]) expect(Math.abs(Number(f[3]) - Date.now() / 1000)).toBeLessThan(120);
    expect(await guest('alpha', 'systemctl is-active network-online.target; cloud-init status')).toEqual(['active', 'status: done']);
    // The VM generation ID device is there and the kernel's driver holds it: it reseeds the RNG when QEMU announces a new one on a restore.
    expect(await guest('alpha', 'basename "$(readlink /sys/bus/acpi/devices/QEMUVGID:00/driver)"')).toEqual(['vmgenid']);
    // journald writes under the clone's machine-id: journalctl (the local machine's entries) shows what the clone logs.
    const logged = await guest('alpha', 'logger -t goship-id clone-line; for i in $(seq 100); do journalctl -t goship-id -o cat | grep -q clone-line && break; sleep 0.1; done; journalctl -t goship-id -o cat');
    expect(logged).toEqual(['clone-line']);
    // A clone reboots as any VM does: a fresh QEMU that boots from its disk.
    await g(['project', 'stop', 'beta']);
    const again = await json<{ state: string }>(['project', 'start', 'beta', '--wait', 'agent']);
    expect(again.state).toBe('ready');
    expect(await guest('beta', 'hostname')).toEqual(['beta']);
    // Booted from its disk: its memory is its own.
    expect(await ramOf('beta')).toBeUndefined();
  });

  it('serves a project of a bigger disk than its own: the clone\'s disk and root file system grow after the restore', async () => {
    const big = await json<CreatedJson>(['project', 'create', 'big', '--memory', '768M', '--disk', '12G', '--private-memory']);
    expect([big.from, big.template ?? big.reason]).toEqual(['template', tpl.name]);
    // --private-memory: a memfd of the template's memory of its own, not alpha's.
    const [own, alpha] = await Promise.all([ramOf('big'), ramOf('alpha')]);
    expect(own).toMatch(/^\/memfd:goship-/);
    expect(own).not.toBe(alpha);
    expect(big.boot.steps.map((s) => s.step)).toEqual(['qemu', 'agent', 'identity', 'disk', 'network', 'cloud-init']);
    const [sectors, fsBytes, kept] = await guest('big', 'cat /sys/block/vda/size; df -B1 --output=size / | tail -1; cat /etc/hostname');
    expect(Number(sectors)).toBe((12 * 1024 ** 3) / 512);
    // ext4 keeps a little for itself: the file system is near the new size, well past the template's 10G.
    expect(Number(fsBytes)).toBeGreaterThan(11.5 * 1024 ** 3);
    expect(kept).toBe('big');
    // QEMU's view is the overlay's own size now: the next QEMU of this VM starts with it.
    const info = await execa('qemu-img', ['info', '-U', '--output=json', env.layout.vmFile('big', 'overlay')]);
    expect((JSON.parse(info.stdout) as { 'virtual-size': number })['virtual-size']).toBe(12 * 1024 ** 3);
    await g(['project', 'delete', 'big']);
  });

  it('is not used with --cold', async () => {
    const c = await json<CreatedJson>(['project', 'create', 'cold', '--memory', '768M', '--cold', '--wait', 'agent']);
    expect([c.from, c.reason]).toEqual(['boot', '--cold']);
    expect(c.boot.steps.map((s) => s.step)).toEqual(['qemu', 'agent']);
  });

  it('is not used once the image was built again, nor with a truncated state: the boot says why', async () => {
    const record = join(tpl.dir, 'template.json');
    const original = await readFile(record, 'utf8');
    await writeFile(record, original.replace(/"imageKey": "[0-9a-f]+"/, `"imageKey": "${'0'.repeat(64)}"`));
    const rebuilt = await json<CreatedJson>(['project', 'create', 'rebuilt', '--memory', '768M', '--wait', 'agent']);
    expect(rebuilt.from).toBe('boot');
    expect(rebuilt.reason).toMatch(new RegExp(`^template ${tpl.name} is not used: image default was built again since`));
    await writeFile(record, original);

    const state = join(tpl.dir, 'state');
    const saved = await readFile(state);
    await truncate(state, tpl.stateBytes - 4096);
    const cut = await json<CreatedJson>(['project', 'create', 'cut', '--memory', '768M', '--wait', 'agent']);
    expect(cut.from).toBe('boot');
    expect(cut.reason).toMatch(/is not a saved VM state GoShip can restore: it is \d+ bytes long, not the \d+ bytes that were saved \(truncated\)$/);
    await writeFile(state, saved, { mode: 0o600 });
  });

  it('whose state QEMU refuses is left for a boot, named in the output, and nothing of the failed restore stays', async () => {
    const state = join(tpl.dir, 'state');
    const saved = await readFile(state);
    // Same size and header, garbage inside: only QEMU can tell.
    const fh = await open(state, 'r+');
    const garbage = Math.min(1024 * 1024, Math.floor(saved.length / 4));
    await fh.write(randomBytes(garbage), 0, garbage, 64 * 1024);
    await fh.close();
    const r = await json<CreatedJson>(['project', 'create', 'refused', '--memory', '768M', '--wait', 'agent']);
    expect([r.from, r.state]).toEqual(['boot', 'ready']);
    expect(r.reason).toMatch(new RegExp(`^template ${tpl.name} could not be restored: restoring the VM's state from ${state}`));
    // Booted: no identity step (cloud-init names it later in its boot), and it answers.
    expect(r.boot.steps.map((s) => s.step)).toEqual(['qemu', 'agent']);
    expect(await guest('refused', 'echo ok')).toEqual(['ok']);
    const vms = await json<{ name: string; state: string }[]>(['vm', 'list']);
    expect(vms.filter((v) => v.name === 'refused').map((v) => v.state)).toEqual(['ready']);
    await writeFile(state, saved, { mode: 0o600 });
  });
});

interface AppJson {
  process: { pid: number | null } | null;
}
interface ProjectJson {
  name: string;
  state: string;
  vm: { state: string; pid: number | null } | null;
}

describe('suspend and resume', { timeout: 600_000 }, () => {
  let web: number;
  const saved = () => join(env.layout.vmDir('napper'), 'saved.state');
  const appPid = async () => (await json<AppJson>(['app', 'info', 'napper', 'web'])).process?.pid;
  const state = async () => (await json<ProjectJson[]>(['project', 'list'])).find((p) => p.name === 'napper')?.state;
  const serves = async () => (await until(`port ${web} answers`, async () => (await httpGet(web))?.status, 30_000)) === 200;

  beforeAll(async () => {
    // The clones above go: two cores run every idle guest under TCG.
    for (const p of ['alpha', 'beta', 'cold', 'rebuilt', 'cut', 'refused']) await g(['project', 'delete', p, '--force']);
    web = await freePort();
    await json(['project', 'create', 'napper', '--memory', '768M']);
    const r = await g(['app', 'deploy', 'napper', 'web', '--command', '--port', `${web}:8080`, '--', '/usr/bin/python3', '-m', 'http.server', '8080']);
    expect(r.code, r.stderr).toBe(0);
  }, 300_000);

  it("brings back the app's process, the guest's memory and boot, serves again, and sets the clock", async () => {
    const pid = await appPid();
    expect(pid).toBeGreaterThan(1);
    expect(await serves()).toBe(true);
    const [bootId] = await guest('napper', 'cat /proc/sys/kernel/random/boot_id; echo kept > /dev/shm/mark');
    const s = await json<ProjectJson & { saved: { bytes: number; file: string }; totalMs: number }>(['project', 'suspend', 'napper']);
    expect([s.state, s.vm?.state, s.vm?.pid, s.saved.file]).toEqual(['suspended', 'suspended', null, saved()]);
    // Root's alone, in the VM's directory, where its QEMU cannot create or rename.
    const st = await stat(saved());
    expect([st.size, (st.mode & 0o777).toString(8), st.uid]).toEqual([s.saved.bytes, '600', 0]);
    expect(await state()).toBe('suspended');
    const stop = await g(['project', 'stop', 'napper']);
    expect([stop.code, stop.stderr]).toEqual([4, expect.stringMatching(/^goshipctl: error: project napper is suspended: no QEMU runs, and its memory is saved\nhint: resume it \(goshipctl project resume napper\)/)]);

    const r = await json<ProjectJson & { resumed: boolean; boot: { steps: { step: string }[] } }>(['project', 'resume', 'napper']);
    expect([r.state, r.resumed, r.boot.steps.map((x) => x.step)]).toEqual(['ready', true, ['qemu', 'agent', 'clock', 'network', 'cloud-init']]);
    expect(await appPid()).toBe(pid);
    expect(await serves()).toBe(true);
    const [bootAfter, mark, now] = await guest('napper', 'cat /proc/sys/kernel/random/boot_id; cat /dev/shm/mark; date +%s');
    expect([bootAfter, mark]).toEqual([bootId, 'kept']);
    expect(Math.abs(Number(now) - Date.now() / 1000)).toBeLessThan(60);
    // Spent: a second start must never restore a state the disk has moved on from.
    await expect(access(saved())).rejects.toThrow(/ENOENT/);
    const again = await g(['project', 'resume', 'napper']);
    expect([again.code, again.stderr.split('\n')[0]]).toEqual([4, 'goshipctl: error: project napper is not suspended (state: ready)']);
  });

  it('killed with -9 in the middle of its save, leaves the guest running, its app untouched and nothing of the save behind', async () => {
    const pid = await appPid();
    const child = execa(process.execPath, [CLI, 'project', 'suspend', 'napper'], { env: env.env, extendEnv: false, reject: false });
    await until('the save has begun', async () => ((await stat(`${saved()}.partial`).catch(() => undefined))?.size ?? 0) > 4 * 1024 * 1024 || undefined, 60_000, 20);
    child.kill('SIGKILL');
    await child;
    // The VM's monitor saw its client go before the state was recorded: it cancelled the save and ran the guest
    // again, with no other goshipctl run since.
    const qmp = await QmpClient.connect(join(env.layout.vmRunDir('napper'), 'qmp-user.sock'), { timeoutMs: 10_000 });
    try {
      expect(await until('the guest to run again', async () => ((await qmp.queryStatus()).running ? true : undefined), 30_000, 50)).toBe(true);
    } finally {
      await qmp.close();
    }
    expect(await state()).toBe('ready');
    expect(await appPid()).toBe(pid);
    expect(await serves()).toBe(true);
    expect((await readdir(env.layout.vmDir('napper'))).filter((f) => f.startsWith('saved.state'))).toEqual([]);
    expect(await guest('napper', 'echo alive')).toEqual(['alive']);
  });

  it('whose state cannot be restored stays suspended, says why, and boots from its disk with --discard-state', async () => {
    const [bootId] = await guest('napper', 'cat /proc/sys/kernel/random/boot_id; echo on-disk > /var/tmp/mark; sync; echo in-memory > /dev/shm/mark');
    await json(['project', 'suspend', 'napper']);
    const whole = await readFile(saved());
    await truncate(saved(), whole.length - 4096);
    const cut = await g(['project', 'resume', 'napper']);
    expect([cut.code, cut.stderr]).toEqual([1, expect.stringMatching(/^goshipctl: error: project napper stays suspended: .*saved\.state is not a saved VM state GoShip can restore: it is \d+ bytes long, not the \d+ bytes that were saved \(truncated\)\nhint: start it from its disk instead/)]);
    expect(await state()).toBe('suspended');
    // Same size and header, garbage inside: only QEMU can tell, and it exits.
    await writeFile(saved(), whole, { mode: 0o600 });
    const fh = await open(saved(), 'r+');
    await fh.write(randomBytes(1024 * 1024), 0, 1024 * 1024, 64 * 1024);
    await fh.close();
    const refused = await g(['project', 'start', 'napper']);
    expect([refused.code, refused.stderr]).toEqual([1, expect.stringMatching(/^goshipctl: error: project napper stays suspended: restoring the VM's state from .*saved\.state/)]);
    expect(await state()).toBe('suspended');
    expect((await stat(saved())).size).toBe(whole.length);

    const fresh = await json<ProjectJson & { resumed: boolean }>(['project', 'start', 'napper', '--discard-state']);
    expect([fresh.state, fresh.resumed]).toEqual(['ready', false]);
    await expect(access(saved())).rejects.toThrow(/ENOENT/);
    // A boot from the disk as it was at the suspend: what was written there stays, what was only in memory is gone.
    const [bootAfter, disk, memory] = await guest('napper', 'cat /proc/sys/kernel/random/boot_id; cat /var/tmp/mark; cat /dev/shm/mark 2>/dev/null || echo gone');
    expect([bootAfter === bootId, disk, memory]).toEqual([false, 'on-disk', 'gone']);
  });
});

interface SnapshotJson {
  tag: string;
  memory: boolean;
}

describe('snapshots', { timeout: 600_000 }, () => {
  const facts = async () => {
    const [value, bootId, sleeper] = await guest('napper', `cat /var/tmp/v; cat /proc/sys/kernel/random/boot_id; kill -0 "$(cat /var/tmp/sleeper)" 2>/dev/null && echo alive || echo gone`);
    return { value, bootId, sleeper };
  };
  const write = (v: string) => guest('napper', `echo ${v} > /var/tmp/v; sync`);
  const tags = async () => (await json<SnapshotJson[]>(['project', 'snapshot', 'list', 'napper'])).map((x) => `${x.tag}${x.memory ? '+memory' : ''}`);

  it('with memory bring back processes, of the disk alone its files; deleting one keeps the others restorable', async () => {
    await guest('napper', 'setsid sleep 7777 </dev/null >/dev/null 2>&1 & echo $! > /var/tmp/sleeper; echo 1 > /var/tmp/v; sync');
    const at1 = await facts();
    expect([at1.value, at1.sleeper]).toEqual(['1', 'alive']);
    expect((await json<SnapshotJson>(['project', 'snapshot', 'create', 'napper', 'one', '--memory'])).memory).toBe(true);
    await write('2');
    await guest('napper', 'kill "$(cat /var/tmp/sleeper)"');
    await json(['project', 'snapshot', 'create', 'napper', 'two']);
    await write('3');
    await json(['project', 'snapshot', 'create', 'napper', 'three', '--memory']);
    expect(await tags()).toEqual(['one+memory', 'two', 'three+memory']);
    const again = await g(['project', 'snapshot', 'create', 'napper', 'one']);
    expect([again.code, again.stderr.split('\n')[0]]).toEqual([4, 'goshipctl: error: VM napper has a snapshot one already']);

    // The middle one goes; the others are whole.
    await json(['project', 'snapshot', 'delete', 'napper', 'two']);
    expect(await tags()).toEqual(['one+memory', 'three+memory']);
    const r1 = await json<{ state: string; boot: { steps: { step: string }[] } }>(['project', 'snapshot', 'restore', 'napper', 'one']);
    expect([r1.state, r1.boot.steps.map((x) => x.step)]).toEqual(['ready', ['qemu', 'agent', 'clock', 'network', 'cloud-init']]);
    expect(await facts()).toEqual(at1);
    await json(['project', 'snapshot', 'restore', 'napper', 'three']);
    expect(await facts()).toEqual({ value: '3', bootId: at1.bootId, sleeper: 'gone' });

    // A disk snapshot restored: its files, and a boot.
    await write('4');
    await json(['project', 'snapshot', 'create', 'napper', 'four']);
    await write('5');
    const r4 = await json<{ state: string; boot: { steps: { step: string }[] } }>(['project', 'snapshot', 'restore', 'napper', 'four', '--wait', 'agent']);
    expect([r4.state, r4.boot.steps.map((x) => x.step)]).toEqual(['ready', ['qemu', 'agent']]);
    const at4 = await facts();
    expect([at4.value, at4.bootId === at1.bootId, at4.sleeper]).toEqual(['4', false, 'gone']);
  });

  it('of a stopped project are of its disk alone, taken and deleted by qemu-img as the VM\'s identity; bad tags are refused', async () => {
    await g(['project', 'stop', 'napper', '--force']);
    await json(['project', 'snapshot', 'create', 'napper', 'cold']);
    const mem = await g(['project', 'snapshot', 'create', 'napper', 'warm', '--memory']);
    expect([mem.code, mem.stderr.split('\n')[0]]).toEqual([4, 'goshipctl: error: VM napper is stopped: a snapshot with its memory needs it running']);
    expect(await tags()).toEqual(['one+memory', 'three+memory', 'four', 'cold']);
    await json(['project', 'snapshot', 'delete', 'napper', 'cold']);
    for (const [args, code, first] of [
      [['project', 'snapshot', 'restore', 'napper', 'nosuch'], 3, 'goshipctl: error: VM napper has no snapshot nosuch'],
      [['project', 'snapshot', 'create', 'napper', '../x'], 2, 'goshipctl: error: invalid snapshot tag: tag: expected 1-63 lowercase letters, digits or "-", not starting with "-" (it is used in file names), got "../x"'],
    ] as const) {
      const r = await g([...args]);
      expect([r.code, r.stderr.split('\n')[0]]).toEqual([code, first]);
    }
    // The overlay is still the VM's own, and what qemu-img left in it is what GoShip recorded.
    const overlay = join(env.layout.vmDir('napper'), 'disk.qcow2');
    expect((await stat(overlay)).uid).toBe((await stat(env.layout.vmDir('napper'))).gid);
    const listed = await execa('qemu-img', ['snapshot', '-l', '-U', overlay]);
    expect(listed.stdout.split('\n').slice(2).map((l) => l.trim().split(/\s+/)[1])).toEqual(['one', 'three', 'four']);
    // From stopped, a snapshot with memory starts the VM on it.
    await json(['project', 'snapshot', 'restore', 'napper', 'three', '--wait', 'agent']);
    expect((await facts()).value).toBe('3');
  });
});
