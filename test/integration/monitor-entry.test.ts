/**
 * The monitor entry's early step (resumeEarly) and the QMP client adopting the
 * connection it hands over, against a real `qemu-system-x86_64 -machine none
 * -S` with a console chardev socket (no guest needed).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { chmod, mkdtemp, rm, stat } from 'node:fs/promises';
import { Socket, connect, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { resumeEarly, type Handover } from '../../src/monitor/early.ts';
import { QmpClient, type QmpEvent } from '../../src/qmp/index.ts';

interface Qemu {
  proc: ChildProcess;
  dir: string;
  qmp: string;
  console: string;
  monitor: string;
  alive: () => boolean;
}

const started: Qemu[] = [];
const clients: QmpClient[] = [];

async function startQemu(extra: string[] = []): Promise<Qemu> {
  const dir = await mkdtemp(join(tmpdir(), 'gse-'));
  await chmod(dir, 0o700);
  const qmp = join(dir, 'qmp.sock');
  const console = join(dir, 'console.sock');
  const proc = spawn(
    'qemu-system-x86_64',
    ['-machine', 'none', '-nodefaults', '-no-user-config', '-display', 'none', '-S', '-qmp', `unix:${qmp},server=on,wait=off`, '-chardev', `socket,id=con0,path=${console},server=on,wait=off`, ...extra],
    { stdio: 'ignore' },
  );
  let gone = false;
  proc.once('exit', () => (gone = true));
  const q = { proc, dir, qmp, console, monitor: join(dir, 'monitor.sock'), alive: () => !gone };
  started.push(q);
  return q;
}

/** QEMU binds its socket a moment before it listens: retry until it does. */
async function until<T>(f: () => Promise<T>): Promise<T> {
  for (let i = 0; ; i++) {
    try {
      return await f();
    } catch (err) {
      if (i > 200) throw err;
      await new Promise((r) => setTimeout(r, 10));
    }
  }
}

afterEach(async () => {
  for (const c of clients.splice(0)) await c.close();
  for (const q of started.splice(0)) {
    q.proc.kill('SIGKILL');
    await rm(q.dir, { recursive: true, force: true });
  }
});

describe('the entry resumes QEMU before the body loads', () => {
  it('negotiates, connects the console, resumes; the adopted client sees RESUME once and answers', async () => {
    const q = await startQemu();
    // Started at the same moment as QEMU, like the monitor's entry: the sockets are not there yet.
    const h = await resumeEarly({ qmp: q.qmp, console: q.console, monitor: q.monitor }, q.alive, 10_000);
    expect(typeof h).toBe('object');
    const handover = h as Handover;
    expect(handover.marks.map((m) => m.split(' ')[0])).toEqual(['connected', 'QMP', 'cont']);
    expect(JSON.parse(handover.greeting)).toHaveProperty('QMP.version.qemu.major');
    // The console came connected and paused: nothing has been read from it.
    expect(handover.console.isPaused()).toBe(true);
    expect(handover.console.bytesRead).toBe(0);
    handover.console.destroy();
    // monitor.sock listens already, owner-only; a client that comes now waits, paused, for the body.
    expect((await stat(q.monitor)).mode & 0o777).toBe(0o600);
    const early = connect({ path: q.monitor });
    await new Promise<void>((r) => early.once('connect', () => r()));
    await until(async () => (handover.listener.queued.length === 1 ? true : Promise.reject(new Error('not queued yet'))));
    expect(handover.listener.queued[0]!.isPaused()).toBe(true);
    early.destroy();
    handover.listener.server.close();

    const events: QmpEvent[] = [];
    // The body adopts the connection some time later.
    await new Promise((r) => setTimeout(r, 50));
    const client = QmpClient.adopt(handover.qmp, { socketPath: q.qmp, greeting: handover.greeting, pending: handover.pending }, { onEvent: (e) => events.push(e) });
    clients.push(client);
    expect(client.state).toBe('running');
    expect(client.greeting?.version.qemu.major).toBeGreaterThanOrEqual(7);
    expect(await client.queryStatus()).toMatchObject({ running: true, status: 'running' });
    // Events after the handover come through the adopted connection.
    await client.stop();
    await client.cont();
    await new Promise((r) => setTimeout(r, 100));
    expect(events.map((e) => e.event)).toEqual(['RESUME', 'STOP', 'RESUME']);
  });

  it('a QMP socket that does not answer in time: gives up, closes what it opened, and QEMU stays paused for the body', async () => {
    const q = await startQemu();
    // Another client holds GoShip's QMP socket: QEMU greets one client at a time.
    const holder = await until(() => QmpClient.connect(q.qmp, { timeoutMs: 5000 }));
    clients.push(holder);
    expect(await resumeEarly({ qmp: q.qmp, console: q.console, monitor: q.monitor }, q.alive, 1_000)).toBe('no QMP greeting');
    // What it opened is closed: monitor.sock too (the body listens there itself).
    expect(existsSync(q.monitor)).toBe(false);
    await holder.close();
    clients.splice(clients.indexOf(holder), 1);
    const client = await until(() => QmpClient.connect(q.qmp, { timeoutMs: 5000 }));
    clients.push(client);
    expect((await client.queryStatus()).status).toBe('prelaunch');
  });

  it('another monitor answering on monitor.sock: the entry leaves the start to the body (which refuses it)', async () => {
    const q = await startQemu();
    const other = createServer().listen(q.monitor);
    await new Promise<void>((r) => other.once('listening', () => r()));
    expect(await resumeEarly({ qmp: q.qmp, console: q.console, monitor: q.monitor }, q.alive, 10_000)).toBe(`another monitor answers on ${q.monitor}`);
    other.close();
    // QEMU was not resumed.
    const client = await until(() => QmpClient.connect(q.qmp, { timeoutMs: 5000 }));
    clients.push(client);
    expect((await client.queryStatus()).status).toBe('prelaunch');
  });

  it('a QEMU that has gone: gives up at once instead of waiting out the timeout', async () => {
    const q = await startQemu(['-no-such-option']);
    await new Promise<void>((r) => q.proc.once('exit', () => r()));
    const t0 = Date.now();
    expect(await resumeEarly({ qmp: q.qmp, console: q.console, monitor: q.monitor }, q.alive, 120_000)).toBe('no QMP connection');
    expect(Date.now() - t0).toBeLessThan(60_000);
  });

  it('an adopted connection that QEMU closes ends the client like any other', async () => {
    const q = await startQemu();
    const handover = (await resumeEarly({ qmp: q.qmp, console: q.console, monitor: q.monitor }, q.alive, 10_000)) as Handover;
    handover.console.destroy();
    q.proc.kill('SIGKILL');
    await new Promise<void>((r) => q.proc.once('exit', () => r()));
    const client = QmpClient.adopt(handover.qmp, { socketPath: q.qmp, greeting: handover.greeting, pending: handover.pending });
    clients.push(client);
    await client.closed;
    expect(client.state).toBe('closed');
  });

  it('refuses a handover whose first line is not a QMP greeting', () => {
    expect(() => QmpClient.adopt(new Socket(), { socketPath: '/nowhere', greeting: '{"hello":1}' })).toThrow(/did not start with a QMP greeting/);
  });
});
