/**
 * The per-VM monitor on the real Debian image, through goshipctl as a user
 * runs it: the command after `ready` works at once, many goshipctl processes
 * at once on one VM, kill -9 of the monitor in the middle of an exec, live
 * port forwards with traffic (TCP and UDP), a console flood held to its cap,
 * and how the VM ended decided by QEMU's evidence, never by console text.
 * One project VM, restored from a template (test/helpers/test-template.ts),
 * is shared by the tests of this file.
 */
import { createHash, randomBytes } from 'node:crypto';
import { createSocket } from 'node:dgram';
import { readFile, readdir, stat, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { pidAlive } from '../../src/proc.ts';
import { isOurProcess, processMarker } from '../../src/qemu/index.ts';
import { goshipctl } from '../helpers/cli.ts';
import { projectEnv, type ProjectEnv } from '../helpers/project-env.ts';
import { installTestTemplate } from '../helpers/test-template.ts';
import { until, freePort, tcpGet } from '../helpers/net.ts';

let env: ProjectEnv;
const g = (args: string[], timeoutMs = 300_000) => goshipctl(args, env.env, { timeoutMs });
const json = async <T>(args: string[]): Promise<T> => {
  const r = await g([...args, '--json']);
  if (r.code !== 0) throw new Error(`goshipctl ${args.join(' ')} failed (${r.code}): ${r.stderr}`);
  return JSON.parse(r.stdout) as T;
};

interface VmJson {
  state: string;
  pid?: number;
  monitor?: { pid: number; adopted?: boolean };
  end?: { kind: string; summary: string; shutdownReason?: string };
  paths: { consoleLog: string; monitorLog: string };
}

function udpAsk(port: number, message: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = createSocket('udp4');
    const timer = setTimeout(() => {
      s.close();
      reject(new Error('no UDP answer'));
    }, 5000);
    s.on('message', (m) => {
      clearTimeout(timer);
      s.close();
      resolve(m.toString());
    });
    s.send(message, port, '127.0.0.1');
  });
}

/** Private memory of a process in kB (Private_Clean + Private_Dirty of smaps_rollup). */
async function privateKb(pid: number): Promise<number> {
  const text = await readFile(`/proc/${pid}/smaps_rollup`, 'utf8');
  const field = (name: string) => Number(new RegExp(`^${name}:\\s+(\\d+) kB`, 'm').exec(text)?.[1] ?? 0);
  return field('Private_Clean') + field('Private_Dirty');
}

beforeAll(async () => {
  env = await projectEnv('em');
  // The project is restored from a template: what is tested is the monitor, not the boot.
  await installTestTemplate(env, { cpus: 2, memory: '1G' });
}, 600_000);

afterAll(async () => {
  await env?.cleanupAll();
}, 60_000);

describe('the monitor of a project VM', () => {
  it('the command right after `project create` prints ready works at once', async () => {
    // Exactly what a user types: project create X && vm exec X -- true.
    const r = await execa('bash', ['-c', 'node "$CLI" project create mon --cpus 2 --memory 1G --console-max-size 1M && node "$CLI" vm exec mon -- true && node "$CLI" vm exec mon -- hostname'], {
      env: { ...env.env, CLI: join(import.meta.dirname, '..', '..', 'bin', 'goshipctl.cjs') },
      reject: false,
      timeout: 600_000,
    });
    expect([r.exitCode, r.stderr]).toEqual([0, '']);
    expect(r.stdout.trim().split('\n').at(-1)).toMatch(/^(mon|goship)$/);
  }, 600_000);

  it('eight goshipctl processes at once on one VM all succeed', async () => {
    const blob = join(env.root, 'blob.bin');
    const data = randomBytes(4 * 1024 * 1024);
    await writeFile(blob, data);
    const sha = createHash('sha256').update(data).digest('hex');
    await g(['vm', 'cp', blob, 'mon:/var/tmp/seed.bin']);
    const rs = await Promise.all([
      g(['vm', 'exec', 'mon', '--', 'sh', '-c', 'seq 1 50000']),
      g(['vm', 'ping', 'mon']),
      g(['vm', 'cp', blob, 'mon:/var/tmp/up.bin']),
      g(['vm', 'cp', 'mon:/var/tmp/seed.bin', join(env.root, 'down.bin')]),
      g(['vm', 'exec', 'mon', '--', 'sh', '-c', 'for i in 1 2 3 4 5; do echo tick $i; sleep 1; done']),
      g(['vm', 'info', 'mon', '--json']),
      g(['vm', 'exec', 'mon', '--', 'sh', '-c', 'exit 5']),
      g(['vm', 'status', 'mon', '--json']),
    ]);
    expect(rs.map((r) => r.code)).toEqual([0, 0, 0, 0, 0, 0, 5, 0]);
    expect(rs.map((r) => r.stderr)).toEqual(['', '', '', '', '', '', '', '']);
    expect(rs[0]!.stdout.trim().split('\n')).toHaveLength(50000);
    expect(rs[1]!.stdout).toMatch(/^pong from \S+: [\d.]+ ms$/m);
    expect(createHash('sha256').update(await readFile(join(env.root, 'down.bin'))).digest('hex')).toBe(sha);
    expect(rs[4]!.stdout).toBe('tick 1\ntick 2\ntick 3\ntick 4\ntick 5');
    expect((await g(['vm', 'exec', 'mon', '--', 'sha256sum', '/var/tmp/up.bin'])).stdout.split(' ')[0]).toBe(sha);
  }, 300_000);

  it('kill -9 of the monitor mid-exec: that exec fails clearly, QEMU runs on, the next command adopts it', async () => {
    const before = await json<VmJson>(['vm', 'status', 'mon']);
    const running = g(['vm', 'exec', 'mon', '--', 'sh', '-c', 'echo started; sleep 60']);
    await until('the exec to start', async () =>
      (await g(['vm', 'exec', 'mon', '--', 'pgrep', '-f', 'sleep 60'])).code === 0 ? true : undefined,
    );
    process.kill(before.monitor!.pid, 'SIGKILL');
    const r = await running;
    expect(r.code).toBe(1);
    expect(r.stdout).toBe('started');
    expect(r.stderr.split('\n')).toEqual([
      expect.stringMatching(/^goshipctl: error: the VM's monitor went away \(.*\/mon\/monitor\.sock\): what was running through it was cut off$/),
      'hint: run the command again: a new monitor takes over the running VM',
    ]);
    expect(await isOurProcess(before.pid!, processMarker('mon'))).toBe(true);
    // The next command sees the monitor is gone and starts one that adopts the running QEMU.
    const again = await g(['vm', 'exec', 'mon', '--', 'echo', 'adopted']);
    expect([again.code, again.stdout, again.stderr]).toEqual([0, 'adopted', '']);
    const after = await json<VmJson>(['vm', 'status', 'mon']);
    expect(after.pid).toBe(before.pid);
    expect(after.monitor?.adopted).toBe(true);
    expect(after.monitor?.pid).not.toBe(before.monitor!.pid);
  }, 300_000);

  it('live port forwards: add, traffic over TCP and UDP, list, remove', async () => {
    // Two small servers in the guest (its Node), started as transient units so they outlive the exec.
    const tcpServer = "require('net').createServer((s) => s.end('hello from the guest\\n')).listen(8080)";
    const udpServer = "const s = require('dgram').createSocket('udp4'); s.on('message', (m, r) => s.send('echo:' + m, r.port, r.address)); s.bind(5353)";
    expect((await g(['vm', 'exec', 'mon', '--', 'systemd-run', '--unit=gs-tcp', 'node', '-e', tcpServer])).code).toBe(0);
    expect((await g(['vm', 'exec', 'mon', '--', 'systemd-run', '--unit=gs-udp', 'node', '-e', udpServer])).code).toBe(0);
    const tcp = await freePort();
    const udp = await freePort();
    const added = await json<{ recorded: unknown[]; live: { proto: string; host: number; guest: number }[] }>(['project', 'port', 'add', 'mon', `${tcp}:8080`]);
    expect(added.live).toContainEqual({ proto: 'tcp', host: tcp, guest: 8080, hostAddr: '127.0.0.1' });
    await json(['project', 'port', 'add', 'mon', `udp:${udp}:5353`]);
    // slirp accepts at once and closes when the guest refuses: ask until the guest's server answers.
    expect(await until('the guest server', async () => (await tcpGet(tcp).catch(() => '')) || undefined)).toBe('hello from the guest\n');
    expect(await until('the UDP echo', async () => udpAsk(udp, 'ping').catch(() => undefined))).toBe('echo:ping');
    const list = await json<{ recorded: { proto: string; host: number; guest: number }[] }>(['project', 'port', 'list', 'mon']);
    expect(list.recorded).toEqual([
      { proto: 'tcp', host: tcp, guest: 8080 },
      { proto: 'udp', host: udp, guest: 5353 },
    ]);
    // A taken host port is refused before anything changes: this VM has it, and another program has another.
    const dup = await g(['project', 'port', 'add', 'mon', `${tcp}:9090`]);
    expect([dup.code, dup.stderr.split('\n')[0]]).toEqual([4, `goshipctl: error: host port taken: host port tcp:${tcp} is already forwarded by project mon (to guest port 8080)`]);
    const squatter = createServer();
    const busy = await freePort();
    await new Promise<void>((r) => squatter.listen(busy, '127.0.0.1', () => r()));
    const bound = await g(['project', 'port', 'add', 'mon', `${busy}:8080`]);
    squatter.close();
    expect([bound.code, bound.stderr.split('\n')[0]]).toEqual([4, `goshipctl: error: host port taken: host port tcp:${busy} is in use by another program on this host`]);
    // Remove: the forward is gone at once.
    await json(['project', 'port', 'remove', 'mon', String(tcp)]);
    await expect(tcpGet(tcp)).rejects.toThrow();
    expect((await json<{ recorded: unknown[] }>(['project', 'port', 'list', 'mon'])).recorded).toEqual([{ proto: 'udp', host: udp, guest: 5353 }]);
    await json(['project', 'port', 'remove', 'mon', `udp:${udp}`]);
  }, 300_000);

  it('a running guest that prints "reboot: Power down" stays running: console text decides nothing', async () => {
    expect((await g(['vm', 'exec', 'mon', '--', 'sh', '-c', 'echo "reboot: Power down" > /dev/ttyS0'])).code).toBe(0);
    const vm = await json<VmJson>(['vm', 'status', 'mon']);
    expect(await readFile(vm.paths.consoleLog, 'utf8')).toContain('reboot: Power down');
    await new Promise((r) => setTimeout(r, 1000));
    const after = await json<VmJson>(['vm', 'status', 'mon']);
    expect(after.state).toBe('ready');
    expect(after.end).toBeUndefined();
    expect((await g(['vm', 'ping', 'mon'])).code).toBe(0);
  }, 120_000);

  it('a console flood: console.log stays under its cap, the monitor\'s memory stays bounded, other clients are served', async () => {
    // The serial getty starts late in the first boot and hangs ttyS0 up: flood once the guest has settled.
    await g(['vm', 'exec', 'mon', '--', 'systemctl', 'is-system-running', '--wait']);
    const vm = await json<VmJson>(['vm', 'status', 'mon']);
    const monitor = vm.monitor!.pid;
    const before = await privateKb(monitor);
    // 4 MiB through the emulated 16550 (about 65 KB/s under TCG: the UART itself throttles a guest);
    // bench/ and monitor-console.test.ts push 100 MiB through the monitor's console path at full speed.
    const flood = g(['vm', 'exec', 'mon', '--', 'sh', '-c', 'head -c 4194304 /dev/zero | tr "\\0" "x" > /dev/ttyS0'], 600_000);
    // While the guest floods its console, another command is answered.
    const ping = await g(['vm', 'ping', 'mon']);
    expect(ping.code).toBe(0);
    let peak = before;
    const watch = setInterval(() => void privateKb(monitor).then((kb) => (peak = Math.max(peak, kb)), () => undefined), 500);
    const done = await flood;
    clearInterval(watch);
    expect(done.code).toBe(0);
    const dir = join(env.layout.vmDir('mon'));
    // The guest's write returns before the UART has sent the last bytes: the monitor may still be
    // writing (and rotating: console.log is renamed, then made again) when the exec answers.
    const consoleFiles = async (): Promise<string[]> => (await readdir(dir)).filter((f) => f.startsWith('console.log')).sort();
    const files = await until('console.log beside its rotated file', async () => {
      const f = await consoleFiles();
      return f.includes('console.log') ? f : undefined;
    }, 30_000, 100);
    let total = 0;
    for (const f of files) total += (await stat(join(dir, f))).size;
    // The cap given at create: 1 MiB per file, one rotated file kept.
    expect(files).toEqual(['console.log', 'console.log.1']);
    expect(total).toBeLessThanOrEqual(2 * 1024 * 1024);
    // The monitor read every byte and kept none of it: its private memory did not grow with the flood.
    expect(peak - before).toBeLessThan(32 * 1024);
    expect(pidAlive(monitor)).toBe(true);
  }, 900_000);

  it('an in-guest reboot: a fresh QEMU under the same monitor, the agent back from a new boot, live forwards kept', async () => {
    const before = await json<VmJson & { agent?: { bootId: string } }>(['vm', 'status', 'mon']);
    const bootId = (await g(['vm', 'exec', 'mon', '--', 'cat', '/proc/sys/kernel/random/boot_id'])).stdout.trim();
    const port = await freePort();
    await json(['project', 'port', 'add', 'mon', `${port}:8081`]);
    // The exec may lose its answer: the guest goes down under it.
    await g(['vm', 'exec', 'mon', '--', 'systemctl', 'reboot'], 60_000);
    const after = await until(
      'the agent of the next boot',
      async () => {
        const s = await json<VmJson & { reboots?: { count: number } }>(['vm', 'status', 'mon']);
        return s.state === 'ready' && s.pid !== before.pid ? s : undefined;
      },
      600_000,
      500,
    );
    expect(after.monitor!.pid).toBe(before.monitor!.pid);
    expect(after.reboots?.count).toBe(1);
    expect(after.end).toBeUndefined();
    expect(await isOurProcess(before.pid!, processMarker('mon'))).toBe(false);
    expect((await g(['vm', 'exec', 'mon', '--', 'cat', '/proc/sys/kernel/random/boot_id'])).stdout.trim()).not.toBe(bootId);
    const ports = await json<{ live: { proto: string; host: number; guest: number }[] }>(['project', 'port', 'list', 'mon']);
    expect(ports.live).toContainEqual({ proto: 'tcp', host: port, guest: 8081, hostAddr: '127.0.0.1' });
    const log = await readFile(after.paths.monitorLog, 'utf8');
    expect(log).toMatch(/reboot 1: the guest rebooted; its monitor starts QEMU again/);
    await json(['project', 'port', 'remove', 'mon', String(port)]);
  }, 900_000);

  it('a guest that powers itself off with a silent console is recorded as a power-off', async () => {
    const vm = await json<VmJson>(['vm', 'status', 'mon']);
    // No kernel messages, no systemd: straight to the ACPI power-off.
    // The exec may not get its answer back: the guest is gone an instant later.
    await g(['vm', 'exec', 'mon', '--', 'sh', '-c', 'echo 0 > /proc/sys/kernel/printk; exec poweroff -f']);
    await until('the monitor to record the end', async () => (pidAlive(vm.monitor!.pid) ? undefined : true));
    const after = await json<VmJson>(['vm', 'status', 'mon']);
    expect(after.state).toBe('stopped');
    expect(after.end).toMatchObject({ kind: 'poweroff', shutdownReason: 'guest-shutdown', summary: 'the guest powered itself off' });
    const info = await json<{ state: string; vm: { end: { kind: string } } }>(['project', 'info', 'mon']);
    expect(info.vm.end.kind).toBe('poweroff');
  }, 300_000);
});
