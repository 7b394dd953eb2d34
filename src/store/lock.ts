/**
 * The cross-process lock around every read-modify-write of the state file:
 * proper-lockfile's `mkdir` lock at `state.json.lock`, its mtime refreshed
 * while held, taken over by others once it is older than `staleMs` (the holder
 * was killed). Within one process, callers queue on a promise chain instead of
 * polling the lock directory against each other.
 */
import { AsyncLocalStorage } from 'node:async_hooks';
import { StoreLockError } from './errors.ts';

export interface LockTimings {
  /** A lock not refreshed for this long belongs to a dead process and is taken over. At least 2000. */
  staleMs: number;
  /** How long to wait for the lock before giving up with StoreLockError. */
  waitMs: number;
}

export const DEFAULT_LOCK_TIMINGS: LockTimings = { staleMs: 5_000, waitMs: 60_000 };

/** A held lock. `compromised` is set when the lock was lost (its mtime could not be kept fresh). */
export interface HeldLock {
  readonly compromised: Error | undefined;
}

const POLL_MAX_MS = 50;

const queues = new Map<string, Promise<unknown>>();
const holding = new AsyncLocalStorage<string>();

function lockPath(file: string): string {
  return `${file}.lock`;
}

async function acquire(file: string, timings: LockTimings): Promise<{ held: HeldLock; release: () => Promise<void> }> {
  const held: { compromised: Error | undefined } = { compromised: undefined };
  let release: () => Promise<void>;
  // Loaded on first use: a command that only reads the store (vm ping) does not pay its start-up.
  const { default: lockfile } = await import('proper-lockfile');
  try {
    release = await lockfile.lock(file, {
      realpath: false,
      lockfilePath: lockPath(file),
      stale: timings.staleMs,
      update: Math.floor(timings.staleMs / 2),
      // Poll every 5 ms growing to 50 ms (randomized, so waiters do not march in step)
      // until waitMs has passed. `retry` precomputes one timeout per retry: keep the
      // count near what waitMs needs (a million costs 100 ms per lock).
      retries: {
        retries: Math.ceil(timings.waitMs / POLL_MAX_MS) + 20,
        factor: 1.3,
        minTimeout: 5,
        maxTimeout: POLL_MAX_MS,
        randomize: true,
        maxRetryTime: timings.waitMs,
      },
      // Without this, proper-lockfile throws from a timer and the process dies.
      // We record it instead; update() refuses to write once the lock is lost.
      onCompromised: (err) => {
        held.compromised = err;
      },
    });
  } catch (cause) {
    const code = typeof cause === 'object' && cause !== null && 'code' in cause ? (cause as { code: unknown }).code : undefined;
    if (code === 'ELOCKED') {
      throw new StoreLockError(`cannot lock ${file}: another GoShip process held ${lockPath(file)} for more than ${timings.waitMs} ms`, {
        file,
        hint: `Wait for the other goshipctl to finish. A lock left by a killed process is taken over after ${timings.staleMs} ms.`,
        cause,
      });
    }
    throw new StoreLockError(`cannot lock ${file}: ${cause instanceof Error ? cause.message : String(cause)}`, { file, cause });
  }
  return {
    held,
    release: async () => {
      // After a compromise the lock is already gone (and maybe someone else's): nothing to release.
      if (held.compromised !== undefined) return;
      await release().catch(() => undefined);
    },
  };
}

/**
 * Runs `fn` holding the lock on `file`, then releases it (also when fn throws).
 * A nested call for the same file from inside `fn` would wait for itself: it throws instead.
 */
export async function withLock<T>(file: string, timings: LockTimings, fn: (held: HeldLock) => Promise<T>): Promise<T> {
  if (holding.getStore() === file) {
    throw new StoreLockError(`cannot lock ${file}: already held by this update (nested store.update)`, {
      file,
      hint: 'Do the whole change in one update(): a nested update would wait for itself.',
    });
  }
  const previous = queues.get(file) ?? Promise.resolve();
  const run = previous.then(async () => {
    const { held, release } = await acquire(file, timings);
    try {
      return await holding.run(file, () => fn(held));
    } finally {
      await release();
    }
  });
  const settled = run.then(
    () => undefined,
    () => undefined,
  );
  queues.set(file, settled);
  try {
    return await run;
  } finally {
    if (queues.get(file) === settled) queues.delete(file);
  }
}
