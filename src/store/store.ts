/**
 * The state store: one JSON file, `Layout.stateFile`, read as a snapshot and
 * changed only by `update()` under a cross-process lock.
 */
import { dirname } from 'node:path';
import { Low } from 'lowdb';
import type { Layout } from '../layout.ts';
import { StoreLockError } from './errors.ts';
import { StateFileAdapter, ensureDir, readStateFile, removeOrphanTemps } from './file.ts';
import { DEFAULT_LOCK_TIMINGS, withLock } from './lock.ts';
import type { LockTimings } from './lock.ts';
import { emptyState } from './types.ts';
import type { State } from './types.ts';

export interface StoreOptions {
  /** A lock not refreshed for this long is taken over (its holder died). Default 5000, minimum 2000. */
  lockStaleMs?: number;
  /** How long `update()` waits for the lock before failing with ESTORE_LOCK. Default 60000. */
  lockWaitMs?: number;
  /** The clock used for backup names. */
  now?: () => Date;
}

export class Store {
  private constructor(
    /** The state file (`GOSHIP_HOME/state.json`). */
    readonly file: string,
    private readonly timings: LockTimings,
    private readonly now: () => Date,
  ) {}

  /** Creates GOSHIP_HOME (0700) if needed. Reads nothing: a bad file is reported by the first read. */
  static async open(layout: Layout, options: StoreOptions = {}): Promise<Store> {
    return Store.openFile(layout.stateFile, options);
  }

  /** Like `open`, for a state file at an explicit path. */
  static async openFile(file: string, options: StoreOptions = {}): Promise<Store> {
    await ensureDir(dirname(file));
    const timings: LockTimings = {
      staleMs: options.lockStaleMs ?? DEFAULT_LOCK_TIMINGS.staleMs,
      waitMs: options.lockWaitMs ?? DEFAULT_LOCK_TIMINGS.waitMs,
    };
    return new Store(file, timings, options.now ?? (() => new Date()));
  }

  /**
   * A consistent snapshot of the state, migrated to the current schema. No
   * lock: the file is only ever replaced by rename, so a read sees one whole
   * version. Changing the returned object changes nothing on disk.
   * A missing file is an empty state.
   * @throws StoreCorruptError, StoreVersionError
   */
  async read(): Promise<State> {
    const result = await readStateFile(this.file, this.now);
    return result?.state ?? emptyState();
  }

  /**
   * One read-modify-write: takes the lock, re-reads the file, runs `fn` on the
   * state, and if `fn` returns (or resolves) writes the result atomically and
   * returns what `fn` returned. If `fn` throws, nothing is written and the
   * error is rethrown. Keep `fn` short: every other writer waits for it.
   * @throws StoreLockError, StoreCorruptError, StoreVersionError, StoreInvalidError, or what fn throws
   */
  async update<T>(fn: (draft: State) => T | Promise<T>): Promise<T> {
    return withLock(this.file, this.timings, async (held) => {
      await removeOrphanTemps(this.file);
      const db = new Low<State>(new StateFileAdapter(this.file, this.now), emptyState());
      await db.read();
      const result = await fn(db.data);
      if (held.compromised !== undefined) {
        throw new StoreLockError(`lost the lock on ${this.file} during an update: nothing was written`, {
          file: this.file,
          hint: `The update took longer than ${this.timings.staleMs} ms without the lock being refreshed (a blocked event loop or a suspended process); run the command again.`,
          cause: held.compromised,
        });
      }
      await db.write();
      return result;
    });
  }
}
