/**
 * Where QEMU is spawned: the one way a VM's QEMU starts, for its first start,
 * a guest reboot (a fresh QEMU: every argv has -no-reboot) and a restart after
 * a crash. QEMU starts paused (-S) as the monitor's child, by the VM's jailed
 * command (launch.json's `exec`, src/jail/command.ts: it scrubs QEMU's
 * environment, joins its cgroups and drops to its identity), so the monitor
 * learns its exit status and nothing of the guest runs before the monitor
 * has its QMP connection and console.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, openSync, renameSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { FILES, type Layout } from '../layout.ts';
import type { ExitStatus } from '../proc.ts';

/** How long QEMU may take to serve its QMP socket after it was started. */
export const QMP_SOCKET_TIMEOUT_MS = 10_000;

export interface QemuChild {
  pid: number;
  /** Signals this QEMU (nothing once it has exited). */
  kill(signal: NodeJS.Signals): void;
  /** Resolves when QEMU exits. */
  exited: Promise<ExitStatus>;
  /** Rejects when QEMU could not be started at all (ENOENT, EACCES). */
  spawned: Promise<void>;
  startedAt: number;
}

/**
 * Before each QEMU: stale sockets of an earlier run would make QEMU fail to
 * bind, and a stale pidfile would name another process; the last run's
 * qemu.log moves to qemu.log.1 and a new one is made owner-only. Returns the
 * log's path.
 */
export function prepareQemuRun(layout: Layout, id: string): string {
  const runDir = layout.vmRunDir(id);
  for (const s of ['qmpSocket', 'qmpUserSocket', 'agentSocket', 'consoleSocket', 'incomingSocket', 'pidfile'] as const) rmSync(join(runDir, FILES[s]), { force: true });
  const log = join(layout.vmDir(id), FILES.qemuLog);
  try {
    renameSync(log, `${log}.1`);
  } catch {
    // no earlier run
  }
  closeSync(openSync(log, 'a', 0o600));
  return log;
}

/** Spawns `exec` (the jailed command), no stdin, its output appended to `log`; `fds` become its descriptors 3, 4, … */
export function spawnQemu(o: { exec: readonly string[]; log: string; fds?: readonly number[] }): QemuChild {
  const [binary, ...args] = o.exec;
  const fd = openSync(o.log, 'a', 0o600);
  let child: ChildProcess;
  try {
    // QEMU's output goes to its log file, never to a pipe the monitor holds: a killed monitor must not block QEMU.
    // Not detached: the jailed command's setsid makes QEMU's session, and would fork (a new PID) in a group leader.
    child = spawn(binary!, args, { stdio: ['ignore', fd, fd, ...(o.fds ?? [])] });
  } finally {
    closeSync(fd);
  }
  const exited = new Promise<ExitStatus>((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  const spawned = new Promise<void>((resolve, reject) => {
    child.once('spawn', resolve);
    child.once('error', reject);
  });
  spawned.catch(() => undefined);
  return { pid: child.pid ?? 0, kill: (signal) => void child.kill(signal), exited, spawned, startedAt: Date.now() };
}
