/**
 * Facts about processes from /proc, shared by every module that must know
 * whether a recorded PID still stands for a running process (the store's
 * writers, interrupted operations, stale builds, QEMU and its monitor).
 */
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';

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


/** What a private work directory is for: its name starts `.KIND-PID-`. */
export type WorkKind = 'import' | 'build' | 'remove' | 'move' | 'receive' | 'keygen';

/**
 * The private work directories of one kind (`.import-PID-…`, `.build-PID-…`,
 * `.move-PID-…`, `.receive-PID-…`) in `dir` whose process is gone: what a
 * killed import, build or move left. A live PID keeps its directory, whoever
 * it is now.
 */
export async function staleWorkDirs(dir: string, kind: WorkKind): Promise<string[]> {
  const entries = await readdir(dir).catch(() => [] as string[]);
  const pattern = new RegExp(`^\\.${kind}-(\\d+)-[0-9a-f]+$`);
  return entries.filter((e) => {
    const m = pattern.exec(e);
    return m !== null && !pidAlive(Number(m[1]));
  }).map((e) => join(dir, e));
}

/** A new private work directory's name for `staleWorkDirs`: `.KIND-PID-RANDOM`. */
export function workDirName(kind: WorkKind): string {
  return `.${kind}-${process.pid}-${randomBytes(4).toString('hex')}`;
}
