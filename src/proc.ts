/**
 * Facts about processes from /proc, shared by every module that must know
 * whether a recorded PID still stands for a running process (the store's
 * writers, interrupted operations, stale builds, QEMU and its monitor).
 */
import { readFileSync } from 'node:fs';

/**
 * Pure: the fields of a /proc/PID/stat line from the state (field 3) on, so
 * field N is at index N - 3; undefined for a line without a command name.
 * `pid (comm) S …`: comm may contain spaces and parentheses, so the fields
 * start after the last ')'.
 */
function statFields(stat: string): string[] | undefined {
  const close = stat.lastIndexOf(')');
  return close < 0 ? undefined : stat.slice(close + 2).trim().split(' ');
}

/** Pure: the state letter of a /proc/PID/stat line (`R`, `S`, `Z`…). */
export function statState(stat: string): string | undefined {
  return statFields(stat)?.[0] || undefined;
}

/**
 * Whether `pid` is a live process (ours or not). A zombie (`Z`) or a dead
 * (`X`) process is gone: it has exited and only waits to be reaped, which on
 * some hosts PID 1 does late. Where /proc cannot be read, `kill(pid, 0)`
 * decides (EPERM counts as alive).
 */
export function pidAlive(pid: number): boolean {
  if (!Number.isInteger(pid) || pid <= 0) return false;
  let stat: string;
  try {
    stat = readFileSync(`/proc/${pid}/stat`, 'latin1');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT' || (err as NodeJS.ErrnoException).code === 'ESRCH') return false;
    try {
      process.kill(pid, 0);
      return true;
    } catch (e) {
      return (e as NodeJS.ErrnoException).code === 'EPERM';
    }
  }
  const state = statState(stat);
  return state !== 'Z' && state !== 'X';
}

/** How a process ended, as `waitpid(2)` tells it: an exit code or the signal that killed it. */
export interface ExitStatus {
  code: number | null;
  signal: NodeJS.Signals | null;
}

