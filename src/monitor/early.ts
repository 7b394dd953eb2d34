/**
 * QEMU as the monitor's child: the one the launcher forked before the monitor
 * became Node (a fresh start, launcher.ts), or one the monitor spawns itself
 * (after a reboot or a crash). Either way the monitor is its parent and learns
 * its exit status. Node built-ins only: the monitor's entry loads this first.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, openSync, readFileSync, renameSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { FILES, type Layout } from '../layout.ts';
import { statExit, type ExitStatus } from '../proc.ts';
import { LAUNCH_FILE } from './launch-file.ts';

export interface EarlyQemu {
  pid: number;
  /** Signals this QEMU (nothing once it has exited: its PID stays ours, unreaped or reaped by Node). */
  kill(signal: NodeJS.Signals): void;
  /** Resolves when QEMU exits. */
  exited: Promise<ExitStatus>;
  /** Rejects when QEMU could not be started at all (ENOENT, EACCES). */
  spawned: Promise<void>;
  startedAt: number;
  /** Milliseconds since this process started, at the spawn (for the log). */
  spawnedAtMs: number;
}

/**
 * Before each QEMU: stale sockets of an earlier run would make QEMU fail to
 * bind, and a stale pidfile would name another process; the last run's
 * qemu.log moves to qemu.log.1 and a new one is made owner-only. Returns the
 * log's path.
 */
export function prepareQemuRun(layout: Layout, id: string): string {
  const runDir = layout.vmRunDir(id);
  for (const s of ['qmpSocket', 'qmpUserSocket', 'agentSocket', 'consoleSocket', 'pidfile'] as const) rmSync(join(runDir, FILES[s]), { force: true });
  const log = join(layout.vmDir(id), FILES.qemuLog);
  try {
    renameSync(log, `${log}.1`);
  } catch {
    // no earlier run
  }
  closeSync(openSync(log, 'a', 0o600));
  return log;
}

/** Spawns QEMU from the VM's launch.json, output to qemu.log. */
export function spawnQemu(layout: Layout, id: string): EarlyQemu {
  const launch = JSON.parse(readFileSync(join(layout.vmDir(id), LAUNCH_FILE), 'utf8')) as { argv: string[]; user?: { uid: number; gid: number } };
  const log = prepareQemuRun(layout, id);
  const [binary, ...args] = launch.argv;
  const fd = openSync(log, 'a', 0o600);
  let child: ChildProcess;
  try {
    // QEMU's output goes to its log file, never to a pipe the monitor holds: a killed monitor must not block QEMU.
    child = spawn(binary!, args, { detached: true, stdio: ['ignore', fd, fd], ...(launch.user ? { uid: launch.user.uid, gid: launch.user.gid } : {}) });
  } finally {
    closeSync(fd);
  }
  const exited = new Promise<ExitStatus>((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  const spawned = new Promise<void>((resolve, reject) => {
    child.once('spawn', resolve);
    child.once('error', reject);
  });
  spawned.catch(() => undefined);
  return { pid: child.pid ?? 0, kill: (signal) => void child.kill(signal), exited, spawned, startedAt: Date.now(), spawnedAtMs: Math.round(process.uptime() * 1000) };
}

/**
 * QEMU that the launcher forked before it exec'd this process: our child,
 * unknown to Node's child_process. Its exit comes as SIGCHLD and its status
 * is read from its zombie's /proc/PID/stat, which stays until this process
 * exits (Node reaps only the children it spawned), so the PID cannot be
 * reused meanwhile. Checked once at once too: QEMU may have ended before Node
 * was listening.
 */
export function forkedQemu(pid: number): EarlyQemu {
  const exited = new Promise<ExitStatus>((resolve) => {
    const check = (): void => {
      let exit: ExitStatus | undefined;
      try {
        exit = statExit(readFileSync(`/proc/${pid}/stat`, 'latin1'));
      } catch {
        // Gone without a zombie: not our child (the PID was wrong), nothing to read.
        exit = { code: null, signal: null };
      }
      if (!exit) return;
      process.off('SIGCHLD', check);
      resolve(exit);
    };
    process.on('SIGCHLD', check);
    check();
  });
  const kill = (signal: NodeJS.Signals): void => {
    try {
      process.kill(pid, signal);
    } catch {
      // already gone
    }
  };
  // The launcher forked QEMU a moment before Node started: this process's own start time is as close as it gets.
  return { pid, kill, exited, spawned: Promise.resolve(), startedAt: Date.now() - Math.round(process.uptime() * 1000), spawnedAtMs: 0 };
}
