/**
 * One VM's process, seen from the host: boot it (spawn, QMP, cont), stop it
 * (the escalation), ask QMP. No store access here: the callers record results.
 */
import { mkdir, rm, writeFile } from 'node:fs/promises';
import { QemuExitError } from '../qemu/index.ts';
import { stateError } from './errors.ts';
import { QmpClient } from '../qmp/index.ts';
import type { QmpStatusInfo } from '../qmp/index.ts';
import { isOurProcess, launchDetached, logTail, processMarker, signalOurs, waitForPath, waitGone } from '../qemu/index.ts';
import { escalate, type EscalationResult, type StopStep } from './escalate.ts';

export interface MachinePaths {
  dir: string;
  runDir: string;
  qmpSocket: string;
  agentSocket: string;
  consoleLog: string;
  qemuLog: string;
  pidfile: string;
  argvFile: string;
}

export interface BootResult {
  pid: number;
  status: QmpStatusInfo;
}

/** How long QEMU may take to create its QMP socket after spawn. */
export const QMP_SOCKET_TIMEOUT_MS = 10_000;

/**
 * Spawns QEMU paused (-S), waits for its QMP socket, connects and sends `cont`.
 * If QEMU exits early the error quotes the end of qemu.log. On failure nothing
 * of ours keeps running.
 */
export async function bootMachine(id: string, argv: readonly string[], paths: MachinePaths): Promise<BootResult> {
  await mkdir(paths.dir, { recursive: true, mode: 0o700 });
  await mkdir(paths.runDir, { recursive: true, mode: 0o700 });
  // Stale sockets from a crashed run would make QEMU fail to bind.
  await Promise.all([rm(paths.qmpSocket, { force: true }), rm(paths.agentSocket, { force: true }), rm(paths.pidfile, { force: true })]);
  await writeFile(paths.argvFile, `${JSON.stringify(argv, null, 2)}\n`, { mode: 0o600 });
  await writeFile(paths.qemuLog, '', { mode: 0o600 });

  const launched = await launchDetached(argv, paths.qemuLog);
  let exit: { code: number | null; signal: NodeJS.Signals | null } | undefined;
  void launched.exited.then((e) => (exit = e));
  const fail = async (): Promise<never> => {
    // Give the exit a moment to be observed, so the log is complete.
    await Promise.race([launched.exited, new Promise((r) => setTimeout(r, 200))]);
    if (!exit) {
      await signalOurs(launched.pid, processMarker(id), 'SIGKILL');
      exit = await launched.exited;
    }
    throw new QemuExitError(exit.code, exit.signal, await logTail(paths.qemuLog), argv, paths.qemuLog);
  };

  // QEMU exited: its own words, from qemu.log. Still running: kill it and pass the error on.
  const abort = async (err: unknown): Promise<never> => {
    if (exit) return fail();
    await signalOurs(launched.pid, processMarker(id), 'SIGKILL');
    throw err;
  };

  if (!(await waitForPath(paths.qmpSocket, QMP_SOCKET_TIMEOUT_MS, () => exit === undefined))) return fail();
  let qmp: QmpClient;
  try {
    qmp = await connectWhenListening(paths.qmpSocket, () => exit === undefined);
  } catch (err) {
    return abort(err);
  }
  try {
    await qmp.cont();
    const status = await qmp.queryStatus();
    return { pid: launched.pid, status };
  } catch (err) {
    return abort(err);
  } finally {
    await qmp.close();
  }
}

/**
 * QEMU binds its socket (the file appears) a moment before it listens: a
 * connect in between is refused. Retry while the process lives.
 */
async function connectWhenListening(socket: string, alive: () => boolean, timeoutMs = QMP_SOCKET_TIMEOUT_MS): Promise<QmpClient> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      return await QmpClient.connect(socket, { timeoutMs: 5000 });
    } catch (err) {
      const refused = (err as { cause?: { code?: string } }).cause?.code === 'ECONNREFUSED';
      if (!refused || !alive() || Date.now() >= deadline) throw err;
      await new Promise((r) => setTimeout(r, 5));
    }
  }
}

/** Runs one QMP exchange on a short-lived connection (a QMP socket serves one client at a time). */
export async function withQmp<T>(socket: string, fn: (qmp: QmpClient) => Promise<T>, timeoutMs = 5000): Promise<T> {
  const qmp = await QmpClient.connect(socket, { timeoutMs });
  try {
    return await fn(qmp);
  } finally {
    await qmp.close();
  }
}

export interface StopTimeouts {
  /** After the guest agent's `shutdown`. */
  agentMs: number;
  /** After ACPI `system_powerdown`. */
  acpiMs: number;
  /** After QMP `quit`. */
  quitMs: number;
  /** After SIGTERM. */
  termMs: number;
  /** After SIGKILL. */
  killMs: number;
}

/** The ACPI power button is pressed again this often while the guest has not gone. */
export const ACPI_REPEAT_MS = 3_000;

export const DEFAULT_STOP_TIMEOUTS: StopTimeouts = { agentMs: 30_000, acpiMs: 30_000, quitMs: 5_000, termMs: 5_000, killMs: 5_000 };

export interface StopOptions {
  /** Skip the graceful steps: start at QMP `quit`. */
  force?: boolean;
  timeouts?: Partial<StopTimeouts>;
  /** Asks the guest agent to shut down; absent when the VM has no agent. */
  agentShutdown?: () => Promise<void>;
}

/** Stops a running VM with the escalation; reports which step ended it. */
export async function stopMachine(id: string, pid: number, qmpSocket: string, opts: StopOptions = {}): Promise<EscalationResult> {
  const t = { ...DEFAULT_STOP_TIMEOUTS, ...opts.timeouts };
  const marker = processMarker(id);
  const signal = (sig: NodeJS.Signals) => async () => {
    if (!(await signalOurs(pid, marker, sig))) throw stateError('the process is already gone');
  };
  const steps: StopStep[] = [];
  if (!opts.force) {
    if (opts.agentShutdown) steps.push({ name: 'agent', request: opts.agentShutdown, waitMs: t.agentMs });
    steps.push({ name: 'acpi', request: () => withQmp(qmpSocket, (q) => q.systemPowerdown(), 2000), waitMs: t.acpiMs, repeatMs: ACPI_REPEAT_MS });
  }
  steps.push(
    { name: 'quit', request: () => withQmp(qmpSocket, (q) => q.quit(), 2000), waitMs: t.quitMs },
    { name: 'sigterm', request: signal('SIGTERM'), waitMs: t.termMs },
    { name: 'sigkill', request: signal('SIGKILL'), waitMs: t.killMs },
  );
  return escalate(steps, (ms) => waitGone(pid, marker, ms));
}

export { isOurProcess };
