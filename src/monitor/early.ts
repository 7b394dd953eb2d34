/**
 * The first thing a fresh monitor does, before it loads anything else: spawn
 * QEMU. QEMU's own start-up (tens of milliseconds to its QMP socket) then
 * runs while the monitor loads the rest of its code. Node built-ins only.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, openSync, readFileSync, renameSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { FILES, type Layout } from '../layout.ts';
import { LAUNCH_FILE } from './launch-file.ts';

export interface EarlyQemu {
  child: ChildProcess;
  /** Resolves when QEMU exits. */
  exited: Promise<{ code: number | null; signal: string | null }>;
  /** Rejects when QEMU could not be started at all (ENOENT, EACCES). */
  spawned: Promise<void>;
  startedAt: number;
  /** Milliseconds since this process started, at the spawn (for the log). */
  spawnedAtMs: number;
}

/** Spawns QEMU from the VM's launch.json, output to qemu.log (the last run's moves to qemu.log.1). */
export function spawnQemu(layout: Layout, id: string): EarlyQemu {
  const dir = layout.vmDir(id);
  const launch = JSON.parse(readFileSync(join(dir, LAUNCH_FILE), 'utf8')) as { argv: string[]; user?: { uid: number; gid: number } };
  const runDir = layout.vmRunDir(id);
  // Stale sockets of an earlier run would make QEMU fail to bind.
  for (const s of ['qmpSocket', 'qmpUserSocket', 'agentSocket', 'consoleSocket'] as const) rmSync(join(runDir, FILES[s]), { force: true });
  rmSync(join(runDir, FILES.pidfile), { force: true });
  const log = join(dir, FILES.qemuLog);
  try {
    renameSync(log, `${log}.1`);
  } catch {
    // no earlier run
  }
  const [binary, ...args] = launch.argv;
  const fd = openSync(log, 'a', 0o600);
  let child: ChildProcess;
  try {
    // QEMU's output goes to its log file, never to a pipe the monitor holds: a killed monitor must not block QEMU.
    child = spawn(binary!, args, { detached: true, stdio: ['ignore', fd, fd], ...(launch.user ? { uid: launch.user.uid, gid: launch.user.gid } : {}) });
  } finally {
    closeSync(fd);
  }
  const exited = new Promise<{ code: number | null; signal: string | null }>((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  const spawned = new Promise<void>((resolve, reject) => {
    child.once('spawn', resolve);
    child.once('error', reject);
  });
  spawned.catch(() => undefined);
  return { child, exited, spawned, startedAt: Date.now(), spawnedAtMs: Math.round(process.uptime() * 1000) };
}
