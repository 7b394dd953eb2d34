/**
 * Real QEMU accepts what the builder makes: each VM below is started with the
 * exact argv `buildArgv` returns (paused by -S), asked over QMP for its status
 * and block devices, and told to quit.
 *
 * Not covered here: hugepages. This host has no hugetlbfs pages
 * (HugePages_Total 0), and `prealloc=on` on an empty pool fails at start; the
 * hugepage backend's argv is covered by the unit tests. Confidential guests
 * need AMD SEV / Intel TDX hardware and a newer QEMU; unit tests only.
 */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { createSocket } from 'node:dgram';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { connect, createServer } from 'node:net';
import { cpus, totalmem } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest';
import { buildArgv } from '../../src/qemu/argv.ts';
import type { HostFacts, VmPaths } from '../../src/qemu/spec.ts';
import { resolveSpec } from '../../src/qemu/validate.ts';

const NO = { available: false, evidence: ['not probed in this test'] };
/** Everything here runs under TCG: this host's KVM is kvm_pvm, under which a normal guest hangs (docs/host-probe.md). */
const HOST: HostFacts = {
  cpuCount: cpus().length,
  memTotalBytes: totalmem(),
  kvm: { usable: false, reason: 'tests run under TCG' },
  confidential: { sev: NO, sevEs: NO, sevSnp: NO, tdx: NO },
};

let dir: string;
const children: ChildProcess[] = [];

/** A 4 KiB file with a valid bzImage setup header: enough for QEMU to load it as a kernel while paused. */
function fakeBzImage(): Buffer {
  const b = Buffer.alloc(4096);
  b[0x1f1] = 1; // setup_sects
  b.writeUInt16LE(0xaa55, 0x1fe);
  b.write('HdrS', 0x202, 'latin1');
  b.writeUInt16LE(0x020f, 0x206); // boot protocol 2.15
  b[0x211] = 1; // loadflags: LOADED_HIGH
  b.writeUInt32LE(0x7fffffff, 0x22c); // initrd_addr_max
  return b;
}

beforeAll(() => {
  // Short: sockets must fit in 107 bytes.
  dir = mkdtempSync('/tmp/gqa-');
  execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', join(dir, 'root disk,1.qcow2'), '64M']);
  execFileSync('qemu-img', ['create', '-q', '-f', 'raw', join(dir, 'data.img'), '16M']);
  mkdirSync(join(dir, 'seed'));
  writeFileSync(join(dir, 'seed', 'meta-data'), 'instance-id: t\nlocal-hostname: t\n');
  writeFileSync(join(dir, 'seed', 'user-data'), '#cloud-config\n');
  execFileSync('xorriso', ['-as', 'mkisofs', '-quiet', '-V', 'cidata', '-J', '-r', '-o', join(dir, 'seed.iso'), join(dir, 'seed')], { stdio: 'ignore' });
  writeFileSync(join(dir, 'vmlinuz'), fakeBzImage());
  writeFileSync(join(dir, 'initrd.img'), Buffer.alloc(1024, 7));
  copyFileSync('/usr/share/OVMF/OVMF_VARS_4M.fd', join(dir, 'VARS.fd'));
});

afterEach(async () => {
  for (const child of children.splice(0)) {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGKILL');
      await new Promise((resolve) => child.once('exit', resolve));
    }
  }
});

afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

function pathsFor(vm: string): VmPaths {
  mkdirSync(join(dir, vm));
  return {
    qmpSocket: join(dir, vm, 'qmp.sock'),
    qmpUserSocket: join(dir, vm, 'qmp-user.sock'),
    agentSocket: join(dir, vm, 'agent.sock'),
    consoleSocket: join(dir, vm, 'console.sock'),
    pidfile: join(dir, vm, 'qemu.pid'),
  };
}

async function freeTcpPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  await new Promise((resolve) => server.close(resolve));
  return port;
}

async function freeUdpPort(): Promise<number> {
  const sock = createSocket('udp4');
  await new Promise<void>((resolve) => sock.bind(0, '127.0.0.1', resolve));
  const { port } = sock.address();
  await new Promise<void>((resolve) => sock.close(() => resolve()));
  return port;
}

interface Qmp {
  execute(command: string): Promise<unknown>;
  close(): void;
}

/** The smallest QMP client that does the job: greeting, then one command at a time by id. */
async function qmpConnect(path: string): Promise<Qmp> {
  const sock = connect(path);
  let buffer = '';
  const waiters: ((msg: Record<string, unknown>) => boolean)[] = [];
  sock.setEncoding('utf8');
  sock.on('data', (chunk: string) => {
    buffer += chunk;
    let nl: number;
    while ((nl = buffer.indexOf('\n')) >= 0) {
      const line = buffer.slice(0, nl).trim();
      buffer = buffer.slice(nl + 1);
      if (!line) continue;
      const msg = JSON.parse(line) as Record<string, unknown>;
      const i = waiters.findIndex((w) => w(msg));
      if (i >= 0) waiters.splice(i, 1);
    }
  });
  const next = (match: (msg: Record<string, unknown>) => boolean): Promise<Record<string, unknown>> =>
    new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('QMP: no reply within 5 s')), 5000);
      waiters.push((msg) => {
        if (!match(msg)) return false;
        clearTimeout(timer);
        resolve(msg);
        return true;
      });
    });
  const greeting = next((m) => 'QMP' in m);
  await new Promise<void>((resolve, reject) => sock.once('connect', resolve).once('error', reject));
  await greeting;
  let id = 0;
  const qmp: Qmp = {
    async execute(command) {
      const myId = ++id;
      const reply = next((m) => m.id === myId);
      sock.write(`${JSON.stringify({ execute: command, id: myId })}\n`);
      const msg = await reply;
      if ('error' in msg) throw new Error(`${command}: ${JSON.stringify(msg.error)}`);
      return msg.return;
    },
    close: () => sock.destroy(),
  };
  await qmp.execute('qmp_capabilities');
  return qmp;
}

interface Started {
  child: ChildProcess;
  qmp: Qmp;
  stderr: () => string;
}

/** Spawns the argv as is and connects to its QMP socket. */
async function start(argv: string[], paths: VmPaths): Promise<Started> {
  const child = spawn(argv[0]!, argv.slice(1), { stdio: ['ignore', 'ignore', 'pipe'] });
  children.push(child);
  let stderr = '';
  child.stderr!.setEncoding('utf8').on('data', (s: string) => (stderr += s));
  const deadline = Date.now() + 10_000;
  while (!existsSync(paths.qmpSocket)) {
    if (child.exitCode !== null || Date.now() > deadline) {
      await sleep(50);
      throw new Error(`QEMU did not start (exit ${child.exitCode}): ${stderr}\nargv: ${JSON.stringify(argv)}`);
    }
    await sleep(10);
  }
  return { child, qmp: await qmpConnect(paths.qmpSocket), stderr: () => stderr };
}

/** Paused as -S promised; `quit` makes QEMU exit 0. */
async function expectPausedThenQuit(vm: Started): Promise<void> {
  expect(await vm.qmp.execute('query-status')).toMatchObject({ status: 'prelaunch', running: false });
  const exited = new Promise<number | null>((resolve) => vm.child.once('exit', (code) => resolve(code)));
  await vm.qmp.execute('quit');
  vm.qmp.close();
  expect(await exited).toBe(0);
  expect(vm.stderr()).toBe('');
}

type BlockInfo = { qdev?: string; inserted?: { ro: boolean; drv: string; file: string } };

describe('real qemu-system-x86_64 accepts the built argv', () => {
  test('q35, direct kernel boot, qcow2 (comma and space in its path) + read-only raw disks, seed CD-ROM, forwards, agent, sandbox', async () => {
    const paths = pathsFor('k');
    const tcp = await freeTcpPort();
    const udp = await freeUdpPort();
    const config = resolveSpec(
      {
        name: 'accept-kernel',
        accel: 'tcg',
        memory: '128M',
        cpu: { count: Math.min(2, HOST.cpuCount) },
        boot: { kernel: join(dir, 'vmlinuz'), initrd: join(dir, 'initrd.img'), cmdline: 'console=ttyS0 a=b,c' },
        disks: [
          { path: join(dir, 'root disk,1.qcow2'), serial: 'root' },
          { path: join(dir, 'data.img'), format: 'raw', readOnly: true, discard: false, cache: 'writethrough' },
        ],
        seed: join(dir, 'seed.iso'),
        network: { forwards: [{ host: tcp, guest: 22 }, { proto: 'udp', host: udp, guest: 53 }] },
      },
      { host: HOST, paths, exists: existsSync },
    );
    const argv = buildArgv(config);
    const vm = await start(argv, paths);

    expect(readFileSync(paths.pidfile, 'utf8').trim()).toBe(String(vm.child.pid));
    expect(existsSync(paths.agentSocket)).toBe(true);
    // The console and the people's QMP monitor are sockets QEMU serves.
    expect(existsSync(paths.consoleSocket)).toBe(true);
    expect(existsSync(paths.qmpUserSocket)).toBe(true);
    // slirp listens on the forwarded host port even while the guest is paused.
    await new Promise<void>((resolve, reject) => connect(tcp, '127.0.0.1').once('connect', function (this: { destroy(): void }) {
      this.destroy();
      resolve();
    }).once('error', reject));

    const blocks = (await vm.qmp.execute('query-block')) as BlockInfo[];
    const byDev = Object.fromEntries(blocks.map((b) => [b.qdev ?? '', b.inserted]));
    expect(byDev['/machine/peripheral/disk0/virtio-backend']).toMatchObject({ ro: false, drv: 'qcow2', file: join(dir, 'root disk,1.qcow2') });
    expect(byDev['/machine/peripheral/disk1/virtio-backend']).toMatchObject({ ro: true, drv: 'raw', file: join(dir, 'data.img') });
    expect(byDev['seed']).toMatchObject({ ro: true, drv: 'raw', file: join(dir, 'seed.iso') });

    await expectPausedThenQuit(vm);
  });

  test('pc, SeaBIOS firmware boot from a disk, no network, no agent, no sandbox', async () => {
    const paths = pathsFor('b');
    const config = resolveSpec(
      { name: 'accept-bios', machine: 'pc', accel: 'tcg', memory: '64M', disks: [{ path: join(dir, 'data.img'), format: 'raw', readOnly: true }], seed: join(dir, 'seed.iso'), network: { mode: 'none' }, agent: false, sandbox: false },
      { host: HOST, paths, exists: existsSync },
    );
    const vm = await start(buildArgv(config), paths);
    expect(existsSync(paths.agentSocket)).toBe(false);
    await expectPausedThenQuit(vm);
  });

  test('q35, UEFI: OVMF code and a vars copy on pflash', async () => {
    const paths = pathsFor('u');
    const config = resolveSpec(
      { name: 'accept-uefi', accel: 'tcg', memory: '128M', boot: { firmware: 'uefi', ovmfVars: join(dir, 'VARS.fd') }, network: { mode: 'user' } },
      { host: HOST, paths, exists: existsSync },
    );
    const vm = await start(buildArgv(config), paths);
    const blocks = (await vm.qmp.execute('query-named-block-nodes')) as { 'node-name': string; ro: boolean }[];
    const formats = blocks.filter((b) => b['node-name'].endsWith('-format')).map((b) => [b['node-name'], b.ro]);
    expect(formats.sort()).toEqual([
      ['pflash0-format', true],
      ['pflash1-format', false],
    ]);
    await expectPausedThenQuit(vm);
  });
});
