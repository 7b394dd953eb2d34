/**
 * The QMP client against a real `qemu-system-x86_64 -machine none` (no guest
 * needed). Every QEMU started here is killed in afterEach.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { QmpClient, QmpClosedError, QmpCommandError, type QmpError, type QmpEvent } from '../../src/qmp/index.ts';
import { rejection as rejectionOf } from '../helpers/rejection.ts';

const QEMU = 'qemu-system-x86_64';

interface RunningQemu {
  proc: ChildProcess;
  dir: string;
  socketPath: string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  stderr: () => string;
}

const started: RunningQemu[] = [];
const clients: QmpClient[] = [];

async function startQemu(extraArgs: string[] = []): Promise<RunningQemu> {
  // Short path: a unix socket path must fit in 108 bytes.
  const dir = await mkdtemp(join(tmpdir(), 'gsq-'));
  const socketPath = join(dir, 'qmp.sock');
  const argv = [
    '-machine', 'none',
    '-nodefaults',
    '-no-user-config',
    '-display', 'none',
    '-S',
    '-qmp', `unix:${socketPath},server=on,wait=off`,
    ...extraArgs,
  ];
  const proc = spawn(QEMU, argv, { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  proc.stderr!.setEncoding('utf8');
  proc.stderr!.on('data', (chunk: string) => (stderr += chunk));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    proc.once('exit', (code, signal) => resolve({ code, signal })),
  );
  const qemu: RunningQemu = { proc, dir, socketPath, exited, stderr: () => stderr };
  started.push(qemu);

  const deadline = Date.now() + 15_000;
  while (!existsSync(socketPath)) {
    if (proc.exitCode !== null || proc.signalCode !== null) {
      throw new Error(`QEMU exited before creating its QMP socket: ${argv.join(' ')}\n${stderr}`);
    }
    if (Date.now() > deadline) throw new Error(`QEMU did not create ${socketPath} within 15s\n${stderr}`);
    await new Promise((r) => setTimeout(r, 20));
  }
  return qemu;
}

/** QEMU binds its socket a moment before it listens: a connect in between is refused, so retry while it lives. */
async function connect(qemu: RunningQemu): Promise<QmpClient> {
  const deadline = Date.now() + 10_000;
  for (;;) {
    try {
      const client = await QmpClient.connect(qemu.socketPath, { timeoutMs: 10_000 });
      clients.push(client);
      return client;
    } catch (err) {
      const refused = (err as { cause?: { code?: string } }).cause?.code === 'ECONNREFUSED';
      if (!refused || qemu.proc.exitCode !== null || Date.now() > deadline) throw err;
      await new Promise((r) => setTimeout(r, 10));
    }
  }
}

const rejection = (promise: Promise<unknown>) => rejectionOf<QmpError>(promise);

afterEach(async () => {
  for (const client of clients.splice(0)) await client.close();
  for (const qemu of started.splice(0)) {
    if (qemu.proc.exitCode === null && qemu.proc.signalCode === null) {
      qemu.proc.kill('SIGKILL');
      await qemu.exited;
    }
    await rm(qemu.dir, { recursive: true, force: true });
  }
});

describe('QMP against real QEMU', () => {
  it('reports the same version as `qemu-system-x86_64 --version`', async () => {
    const qemu = await startQemu();
    const client = await connect(qemu);
    const version = await client.queryVersion();
    const firstLine = execFileSync(QEMU, ['--version'], { encoding: 'utf8' }).split('\n')[0];
    const numbers = `${version.qemu.major}.${version.qemu.minor}.${version.qemu.micro}`;
    expect(firstLine).toBe(
      `QEMU emulator version ${numbers}${version.package === '' ? '' : ` (${version.package.trim()})`}`,
    );
    expect(client.greeting?.version).toEqual(version);
    expect(client.state).toBe('running');
  });

  it('goes prelaunch → running with cont (RESUME seen while commands are in flight), then STOP', async () => {
    const qemu = await startQemu();
    const client = await connect(qemu);
    await expect(client.queryStatus()).resolves.toMatchObject({ running: false, status: 'prelaunch' });

    const seen: QmpEvent[] = [];
    client.on('event', (e) => seen.push(e));
    const resumeP = client.waitForEvent('RESUME', { timeoutMs: 15_000 });
    const inFlight = [client.queryStatus(), client.cont(), client.queryStatus(), client.queryChardev()];
    const results = await Promise.all(inFlight);
    const resume = await resumeP;
    expect(resume.event).toBe('RESUME');
    expect(resume.timestamp.seconds).toBeGreaterThan(0);
    expect(results[3]).toEqual(expect.arrayContaining([expect.objectContaining({ label: 'compat_monitor0' })]));
    await expect(client.queryStatus()).resolves.toMatchObject({ running: true, status: 'running' });

    const { event: stop } = await client.expectEvent('STOP', () => client.stop(), { timeoutMs: 15_000 });
    expect(stop.event).toBe('STOP');
    await expect(client.queryStatus()).resolves.toMatchObject({ running: false, status: 'paused' });
    expect(seen.map((e) => e.event)).toEqual(['RESUME', 'STOP']);
  });

  it('runs raw commands and keeps QEMU’s error class', async () => {
    const qemu = await startQemu();
    const client = await connect(qemu);
    const commands = await client.execute<Array<{ name: string }>>('query-commands');
    expect(commands.map((c) => c.name)).toEqual(expect.arrayContaining(['query-status', 'cont', 'quit']));

    const err = await rejection(client.execute('no-such-command'));
    expect(err).toBeInstanceOf(QmpCommandError);
    expect((err as QmpCommandError).errorClass).toBe('CommandNotFound');
    expect((err as QmpCommandError).desc).toBe('The command no-such-command has not been found');
    // The connection survives an error reply.
    await expect(client.queryStatus()).resolves.toMatchObject({ status: 'prelaunch' });
  });

  it('reads typed queries, a ringbuf chardev and user-mode port forwards', async () => {
    const qemu = await startQemu(['-chardev', 'ringbuf,id=status0,size=4096', '-netdev', 'user,id=net0']);
    const client = await connect(qemu);
    await expect(client.queryBlock()).resolves.toEqual([]);
    await expect(client.queryCpusFast()).resolves.toBeInstanceOf(Array);
    const chardevs = await client.queryChardev();
    expect(chardevs.map((c) => c.label)).toContain('status0');

    await client.execute('ringbuf-write', { device: 'status0', data: 'ready\n' });
    await expect(client.ringbufRead({ device: 'status0', size: 100 })).resolves.toBe('ready\n');
    await expect(client.ringbufRead({ device: 'status0', size: 100 })).resolves.toBe('');

    await client.hostfwdAdd({ netdevId: 'net0', hostAddr: '127.0.0.1', hostPort: 0 + 47022, guestPort: 22 });
    const network = await client.humanMonitorCommand({ commandLine: 'info usernet' });
    expect(network).toContain('47022');
    await client.hostfwdRemove({ netdevId: 'net0', hostAddr: '127.0.0.1', hostPort: 47022 });
    const again = await rejection(client.hostfwdRemove({ netdevId: 'net0', hostAddr: '127.0.0.1', hostPort: 47022 }));
    expect(again.code).toBe('EQMP_HMP');
    expect(again.message).toBe(
      "HMP command 'hostfwd_remove net0 tcp:127.0.0.1:47022' failed: host forwarding rule for tcp:127.0.0.1:47022 not found",
    );
  });

  it('quit: SHUTDOWN event, then QEMU exits', async () => {
    const qemu = await startQemu();
    const client = await connect(qemu);
    const { event } = await client.expectEvent('SHUTDOWN', () => client.quit(), { timeoutMs: 15_000 });
    expect(event.data).toEqual({ guest: false, reason: 'host-qmp-quit' });
    await expect(qemu.exited).resolves.toEqual({ code: 0, signal: null });
    await client.closed;
    expect(client.state).toBe('closed');
  });

  it('rejects a pending call with EQMP_CLOSED when QEMU is SIGKILLed, without waiting for its timeout', async () => {
    const qemu = await startQemu();
    const client = await connect(qemu);
    // Freeze QEMU so the call stays pending, then kill it.
    qemu.proc.kill('SIGSTOP');
    const callP = client.queryStatus({ timeoutMs: 120_000 });
    callP.catch(() => {});
    await new Promise((r) => setTimeout(r, 50));
    qemu.proc.kill('SIGKILL');
    // Closed by the EOF, not by the 120 s timer (that would be a QmpTimeoutError).
    const err = await rejection(callP);
    expect(err).toBeInstanceOf(QmpClosedError);
    expect(err.code).toBe('EQMP_CLOSED');
    expect(err.message).toBe("QMP connection closed while 'query-status' was pending");
    await expect(qemu.exited).resolves.toEqual({ code: null, signal: 'SIGKILL' });
  });

  it('says another client may hold the socket when a second client connects', async () => {
    const qemu = await startQemu();
    await connect(qemu);
    const err = await rejection(QmpClient.connect(qemu.socketPath, { timeoutMs: 1000 }));
    expect(err.code).toBe('EQMP_CONNECT');
    expect(err.message).toBe(
      `connect to QMP socket ${qemu.socketPath}: no QMP greeting within 1000ms (another client may hold the socket)`,
    );
  });
});
