/**
 * The fast test guest, for real: built from Debian packages by
 * test/support/fastguest.ts, booted under TCG by QEMU (no mocks), checked on its
 * serial console, its virtio-serial agent port and its ACPI power button.
 */
import { createHash } from 'node:crypto';
import { mkdtemp, readdir, readFile, rm, stat, writeFile, mkdir } from 'node:fs/promises';
import { connect } from 'node:net';
import type { Socket } from 'node:net';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { gunzipSync } from 'node:zlib';
import { build } from 'esbuild';
import { execa } from 'execa';
import type { ResultPromise } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  FASTGUEST_ACPI_IGNORE,
  FASTGUEST_AGENT_PORT,
  FASTGUEST_POWEROFF_LINE,
  FASTGUEST_READY_LINE,
  FASTGUEST_UP_LINE,
  S_IFDIR,
  S_IFREG,
  aptField,
  cacheKey,
  ensureFastGuest,
  kernelDependency,
  moduleOrder,
  newcArchive,
} from '../support/fastguest.ts';
import type { FastGuest } from '../support/fastguest.ts';
import { fastGuest } from '../helpers/fast-guest.ts';

const BUILD_TIMEOUT = 900_000; // a cold build downloads ~27 MB and unpacks a kernel .deb
const BOOT_TIMEOUT = 180_000; // TCG on 2 shared cores

let guest: FastGuest;
let work: string;
const qemus: ResultPromise[] = [];
const buildLog: string[] = [];

beforeAll(async () => {
  // Short base: unix socket paths must stay under 108 bytes.
  work = await mkdtemp(join('/tmp', 'gsfg-'));
  guest = await fastGuest({ log: (l) => buildLog.push(l) });
}, BUILD_TIMEOUT);

afterAll(async () => {
  for (const q of qemus) {
    if (q.exitCode === null && q.pid !== undefined) q.kill('SIGKILL');
  }
  await Promise.allSettled(qemus);
  if (work) await rm(work, { recursive: true, force: true });
});

// ---------------------------------------------------------------------------
// A tiny QMP client (JSON lines over a unix socket), enough for these tests.

interface QmpMessage {
  QMP?: unknown;
  return?: unknown;
  error?: { class: string; desc: string };
  event?: string;
  data?: Record<string, unknown>;
  id?: string;
}

class TinyQmp {
  readonly events: QmpMessage[] = [];
  private buf = '';
  private nextId = 0;
  private waiters: Array<{ match: (m: QmpMessage) => boolean; resolve: (m: QmpMessage) => void }> = [];
  private closed = false;

  private constructor(private readonly sock: Socket) {
    sock.setEncoding('utf8');
    sock.on('data', (chunk: string) => {
      this.buf += chunk;
      for (let nl = this.buf.indexOf('\n'); nl >= 0; nl = this.buf.indexOf('\n')) {
        const line = this.buf.slice(0, nl).trim();
        this.buf = this.buf.slice(nl + 1);
        if (line) this.dispatch(JSON.parse(line) as QmpMessage);
      }
    });
    sock.on('close', () => {
      this.closed = true;
    });
    sock.on('error', () => {});
  }

  static async open(path: string, timeoutMs = 30_000): Promise<TinyQmp> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      try {
        const sock = await new Promise<Socket>((res, rej) => {
          const s = connect(path, () => res(s));
          s.once('error', rej);
        });
        const qmp = new TinyQmp(sock);
        await qmp.waitFor((m) => m.QMP !== undefined, 10_000);
        await qmp.execute('qmp_capabilities');
        return qmp;
      } catch (e) {
        if (Date.now() > deadline) throw e;
        await sleep(50);
      }
    }
  }

  private dispatch(m: QmpMessage): void {
    if (m.event) this.events.push(m);
    const w = this.waiters.findIndex((x) => x.match(m));
    if (w >= 0) {
      const [waiter] = this.waiters.splice(w, 1);
      waiter?.resolve(m);
    }
  }

  waitFor(match: (m: QmpMessage) => boolean, timeoutMs: number): Promise<QmpMessage> {
    const seen = this.events.find(match);
    if (seen) return Promise.resolve(seen);
    return new Promise((resolve, reject) => {
      const waiter = { match, resolve: (m: QmpMessage) => (clearTimeout(t), resolve(m)) };
      const t = setTimeout(() => {
        this.waiters = this.waiters.filter((x) => x !== waiter);
        reject(new Error(`QMP: nothing matched within ${timeoutMs} ms (closed: ${this.closed})`));
      }, timeoutMs);
      this.waiters.push(waiter);
    });
  }

  async execute(command: string, args?: Record<string, unknown>): Promise<unknown> {
    const id = `t${this.nextId++}`;
    const reply = this.waitFor((m) => m.id === id, 10_000);
    this.sock.write(JSON.stringify(args ? { execute: command, arguments: args, id } : { execute: command, id }) + '\n');
    const m = await reply;
    if (m.error) throw new Error(`QMP ${command}: ${m.error.class}: ${m.error.desc}`);
    return m.return;
  }

  close(): void {
    this.sock.destroy();
  }
}

// ---------------------------------------------------------------------------
// QEMU

interface Vm {
  dir: string;
  proc: ResultPromise;
  startedAt: number;
  console: string;
  agent: string;
  qmp: string;
}

async function startVm(name: string, extraCmdline = ''): Promise<Vm> {
  const dir = join(work, name);
  await mkdir(dir);
  const vm = {
    dir,
    console: join(dir, 'console.log'),
    agent: join(dir, 'agent.sock'),
    qmp: join(dir, 'qmp.sock'),
  };
  expect(Buffer.byteLength(vm.agent)).toBeLessThan(108);
  const cmdline = extraCmdline ? `${guest.cmdline} ${extraCmdline}` : guest.cmdline;
  // prettier-ignore
  const argv = [
    '-accel', 'tcg', '-machine', 'q35', '-nodefaults', '-no-user-config', '-display', 'none', '-m', '256',
    '-no-reboot',
    '-kernel', guest.kernel, '-initrd', guest.initrd, '-append', cmdline,
    '-chardev', `file,id=c0,path=${vm.console}`, '-serial', 'chardev:c0',
    '-device', 'virtio-serial-pci,id=vser0',
    '-chardev', `socket,id=a0,path=${vm.agent},server=on,wait=off`,
    '-device', `virtserialport,bus=vser0.0,nr=1,chardev=a0,name=${FASTGUEST_AGENT_PORT}`,
    '-qmp', `unix:${vm.qmp},server=on,wait=off`,
  ];
  const startedAt = Date.now();
  const proc = execa('qemu-system-x86_64', argv, { reject: false, stdin: 'ignore', all: true });
  qemus.push(proc);
  return { ...vm, proc, startedAt };
}

async function consoleText(vm: Vm): Promise<string> {
  return readFile(vm.console, 'utf8').catch(() => '');
}

async function waitConsole(vm: Vm, text: string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await consoleText(vm)).includes(text)) {
    if (vm.proc.exitCode !== null) throw new Error(`QEMU exited (${vm.proc.exitCode}) before "${text}"; console:\n${await consoleText(vm)}`);
    if (Date.now() > deadline) throw new Error(`no "${text}" on the console within ${timeoutMs} ms; console:\n${await consoleText(vm)}`);
    await sleep(100);
  }
}

/** Connects to the agent port's host side and resolves with the first full line the guest writes. */
async function readAgentLine(vm: Vm, timeoutMs: number): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  let sock: Socket | undefined;
  while (!sock) {
    try {
      sock = await new Promise<Socket>((res, rej) => {
        const s = connect(vm.agent, () => res(s));
        s.once('error', rej);
      });
    } catch (e) {
      if (Date.now() > deadline) throw e;
      await sleep(50);
    }
  }
  const s = sock;
  try {
    return await new Promise<string>((resolve, reject) => {
      let buf = '';
      const t = setTimeout(() => reject(new Error(`no line on the agent port within ${timeoutMs} ms (got ${JSON.stringify(buf)})`)), Math.max(1, deadline - Date.now()));
      s.setEncoding('utf8');
      s.on('data', (c: string) => {
        buf += c;
        const nl = buf.indexOf('\n');
        if (nl >= 0) {
          clearTimeout(t);
          resolve(buf.slice(0, nl));
        }
      });
      s.on('error', (e) => (clearTimeout(t), reject(e)));
    });
  } finally {
    s.destroy();
  }
}

async function waitExit(vm: Vm, timeoutMs: number): Promise<boolean> {
  const exited = await Promise.race([vm.proc.then(() => true), sleep(timeoutMs).then(() => false)]);
  return exited;
}

// ---------------------------------------------------------------------------

describe('fast test guest', () => {
  it('returns absolute paths and the documented command line', async () => {
    expect(guest.kernel).toMatch(/^\/.*\/[0-9a-f]{64}\/vmlinuz$/);
    expect(guest.initrd).toBe(join(guest.kernel, '..', 'initrd.img'));
    expect(guest.key).toMatch(/^[0-9a-f]{64}$/);
    expect(guest.cmdline).toContain('console=ttyS0');
    expect(guest.cmdline).toContain('panic=-1');
    expect((await stat(guest.kernel)).size).toBeGreaterThan(1_000_000);
  });

  it('packs a newc initramfs that cpio reads: busybox, applets, /init, /dev/console, modules in order', async () => {
    const cpio = gunzipSync(await readFile(guest.initrd));
    const list = await execa('cpio', ['-itv', '--quiet'], { input: cpio, env: { LC_ALL: 'C' } });
    const lines = list.stdout.split('\n');
    const entry = (name: string) => lines.find((l) => l.endsWith(` ${name}`) || l.includes(` ${name} -> `));
    expect(entry('init')).toMatch(/^-rwxr-xr-x/);
    expect(entry('bin/busybox')).toMatch(/^-rwxr-xr-x/);
    expect(entry('dev/console')).toMatch(/^crw-------.* 5,\s+1 /);
    expect(entry('bin/sh')).toMatch(/^l.* bin\/sh -> \/bin\/busybox$/);
    expect(entry('sbin/acpid')).toBeDefined();
    expect(entry('etc/acpi/PWRF/00000080')).toMatch(/^-rwxr-xr-x/);
    const mods = lines.filter((l) => l.endsWith('.ko')).map((l) => l.replace(/^.*\//, ''));
    for (const m of ['virtio.ko', 'virtio_ring.ko', 'virtio_pci.ko', 'virtio_console.ko', 'virtio_blk.ko', 'virtio_net.ko', 'virtio-rng.ko', 'button.ko', 'evdev.ko', 'net_failover.ko', 'failover.ko']) {
      expect(mods).toContain(m);
    }
    // The load order puts every dependency first.
    const extract = await execa('cpio', ['-i', '--quiet', '--to-stdout', 'etc/goship/modules'], { input: cpio, encoding: 'utf8' });
    const order = extract.stdout.trim().split('\n').map((p) => p.replace(/^.*\//, ''));
    const before = (a: string, b: string) => expect(order.indexOf(a), `${a} before ${b}`).toBeLessThan(order.indexOf(b));
    before('virtio.ko', 'virtio_pci.ko');
    before('virtio_ring.ko', 'virtio_console.ko');
    before('failover.ko', 'net_failover.ko');
    before('net_failover.ko', 'virtio_net.ko');
  });

  it(
    'boots to the ready line on the agent port, then powers off by itself on system_powerdown',
    async () => {
      const vm = await startVm('a');
      const qmp = await TinyQmp.open(vm.qmp);
      try {
        const line = await readAgentLine(vm, BOOT_TIMEOUT);
        const bootSeconds = (Date.now() - vm.startedAt) / 1000;
        expect(line).toBe(FASTGUEST_READY_LINE);
        console.log(`fast guest: QEMU start -> ready line on ${FASTGUEST_AGENT_PORT}: ${bootSeconds.toFixed(1)} s`);
        // acpid starts just after the ready line is queued: wait for init to say it is done.
        await waitConsole(vm, 'goship-fastguest: ready at uptime', 30_000);
        const text = await consoleText(vm);
        expect(text).toContain(FASTGUEST_UP_LINE);
        expect(text).toContain('acpid handles the power button');

        await qmp.execute('system_powerdown');
        expect(await waitExit(vm, 60_000), 'QEMU exits after system_powerdown').toBe(true);
        const shutdown = await qmp.waitFor((m) => m.event === 'SHUTDOWN', 1_000);
        expect(shutdown.data).toMatchObject({ guest: true, reason: 'guest-shutdown' });
        expect(vm.proc.exitCode).toBe(0);
        expect(await consoleText(vm)).toContain(FASTGUEST_POWEROFF_LINE);
      } finally {
        qmp.close();
      }
    },
    BOOT_TIMEOUT + 120_000,
  );

  it(
    `ignores the power button with ${FASTGUEST_ACPI_IGNORE}`,
    async () => {
      const vm = await startVm('b', FASTGUEST_ACPI_IGNORE);
      const qmp = await TinyQmp.open(vm.qmp);
      try {
        expect(await readAgentLine(vm, BOOT_TIMEOUT)).toBe(FASTGUEST_READY_LINE);
        await waitConsole(vm, 'goship-fastguest: ready at uptime', 30_000);
        expect(await consoleText(vm)).toContain('ignoring the ACPI power button');

        await qmp.execute('system_powerdown');
        await qmp.waitFor((m) => m.event === 'POWERDOWN', 5_000);
        expect(await waitExit(vm, 8_000), 'QEMU still running 8 s after system_powerdown').toBe(false);
        expect(qmp.events.some((m) => m.event === 'SHUTDOWN')).toBe(false);
        expect(await consoleText(vm)).not.toContain(FASTGUEST_POWEROFF_LINE);

        await qmp.execute('quit');
        expect(await waitExit(vm, 10_000)).toBe(true);
      } finally {
        qmp.close();
      }
    },
    BOOT_TIMEOUT + 60_000,
  );

  it('returns the cached guest the second time without rebuilding', async () => {
    const before = await Promise.all([stat(guest.kernel), stat(guest.initrd), stat(join(guest.kernel, '..'))]);
    const log: string[] = [];
    const again = await fastGuest({ log: (l) => log.push(l) });
    expect(again).toEqual(guest);
    const after = await Promise.all([stat(again.kernel), stat(again.initrd), stat(join(again.kernel, '..'))]);
    for (let i = 0; i < before.length; i++) {
      expect(after[i]?.mtimeMs).toBe(before[i]?.mtimeMs);
      expect(after[i]?.ino).toBe(before[i]?.ino);
    }
    expect(log.filter((l) => l.includes('building'))).toEqual([]);
  });

  it(
    'builds cold into an empty cache: concurrent builders in three processes leave one complete, identical entry',
    async () => {
      const cache = await mkdtemp(join(tmpdir(), 'goship-fg-cold-'));
      try {
        // A build killed earlier on this host (its PID is gone): swept, never used.
        const stale = join(cache, `.build-${hostname().replace(/[^A-Za-z0-9_.]/g, '_')}-2147483646-deadbeef`);
        await mkdir(join(stale, 'out'), { recursive: true });
        await writeFile(join(stale, 'out', 'initrd.img'), 'half');

        // Two other processes run the same code against the same cache as this one.
        const script = join(cache, '..', `goship-fg-runner-${process.pid}.mjs`);
        await build({
          stdin: {
            contents: `import { ensureFastGuest } from ${JSON.stringify(join(process.cwd(), 'test/support/fastguest.ts'))};\n` +
              `console.log(JSON.stringify(await ensureFastGuest(process.argv[2])));\n`,
            resolveDir: process.cwd(),
            loader: 'ts',
          },
          bundle: true,
          platform: 'node',
          format: 'esm',
          target: 'node20',
          outfile: script,
          banner: { js: "import { createRequire } from 'node:module'; const require = createRequire(import.meta.url);" },
          logLevel: 'silent',
        });
        try {
          const others = [1, 2].map(() => execa(process.execPath, [script, cache]));
          const mine = ensureFastGuest(cache);
          const results = [await mine, ...(await Promise.all(others)).map((r) => JSON.parse(r.stdout) as FastGuest)];
          for (const r of results) {
            expect(r.key).toBe(guest.key);
            expect(r.kernel).toBe(join(cache, guest.key, 'vmlinuz'));
          }
        } finally {
          await rm(script, { force: true });
        }
        expect((await readdir(cache)).sort()).toEqual([guest.key]);
        expect((await readdir(join(cache, guest.key))).sort()).toEqual(['cmdline', 'initrd.img', 'manifest.json', 'vmlinuz']);
        // Same inputs, same bytes (mtime 0 in the archive, fixed order).
        const sha = async (p: string) => createHash('sha256').update(await readFile(p)).digest('hex');
        expect(await sha(join(cache, guest.key, 'initrd.img'))).toBe(await sha(guest.initrd));
        expect(await sha(join(cache, guest.key, 'vmlinuz'))).toBe(await sha(guest.kernel));
      } finally {
        await rm(cache, { recursive: true, force: true });
      }
    },
    BUILD_TIMEOUT,
  );
});

describe('fast guest builder: pure parts', () => {
  it('reads the kernel dependency of the metapackage from apt-cache show', () => {
    const show = 'Package: linux-image-cloud-amd64\nVersion: 6.1.192-2\nDepends: linux-image-6.1.0-56-cloud-amd64 (= 6.1.192-2)\nSHA256: ab\n\nPackage: other\nDepends: x\n';
    expect(aptField(show, 'Version')).toBe('6.1.192-2');
    expect(kernelDependency(aptField(show, 'Depends') ?? '')).toEqual({ name: 'linux-image-6.1.0-56-cloud-amd64', version: '6.1.192-2' });
    expect(kernelDependency('linux-image-6.1.0-9-cloud-amd64-unsigned | linux-image-6.1.0-9-cloud-amd64')).toEqual({ name: 'linux-image-6.1.0-9-cloud-amd64' });
    expect(kernelDependency('libc6')).toBeUndefined();
  });

  it('orders modules dependencies first, skips built-ins, rejects missing modules and cycles', () => {
    const deps: Record<string, string[]> = { virtio_pci: ['virtio_ring', 'virtio'], virtio_ring: [], virtio: [], virtio_net: ['net_failover', 'virtio'], net_failover: ['failover'], failover: [] };
    expect(moduleOrder(['virtio_pci', 'virtio-net', 'ext4'], (n) => deps[n], new Set(['ext4']))).toEqual([
      'virtio_ring', 'virtio', 'virtio_pci', 'failover', 'net_failover', 'virtio_net',
    ]);
    expect(() => moduleOrder(['nope'], (n) => deps[n], new Set())).toThrow(/nope/);
    expect(() => moduleOrder(['a'], (n) => ({ a: ['b'], b: ['a'] })[n], new Set())).toThrow(/cycle/);
  });

  it('writes newc headers padded to 4 bytes, with a trailer', () => {
    const a = newcArchive([{ name: 'd', mode: S_IFDIR | 0o755 }, { name: 'd/f', mode: S_IFREG | 0o644, data: Buffer.from('abcde') }]);
    expect(a.length % 4).toBe(0);
    expect(a.subarray(0, 6).toString()).toBe('070701');
    expect(a.includes('TRAILER!!!')).toBe(true);
    // header 110 + "d/f\0" (4) -> 114, padded to 116; then 5 bytes of data
    const second = a.indexOf('070701', 6);
    expect(a.subarray(second + 116, second + 121).toString()).toBe('abcde');
  });

  it('changes the key when any input changes', () => {
    const base = { builderVersion: 1, kernelDebSha256: 'a', busyboxSha256: 'b', init: 'i', powerHandler: 'p', modules: ['m'], cmdline: 'c' };
    const k = cacheKey(base);
    expect(cacheKey({ ...base })).toBe(k);
    for (const change of [{ builderVersion: 2 }, { kernelDebSha256: 'x' }, { busyboxSha256: 'x' }, { init: 'x' }, { powerHandler: 'x' }, { modules: ['m', 'n'] }, { cmdline: 'x' }]) {
      expect(cacheKey({ ...base, ...change })).not.toBe(k);
    }
  });
});
