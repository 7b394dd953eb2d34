/**
 * The state file on disk: strict read, atomic write, backup copies.
 *
 * `StateFileAdapter` is a lowdb `Adapter<State>`. It replaces lowdb's own
 * `JSONFile` (steno), which writes every update through one fixed temporary
 * name and reads without validation; see docs/store.md.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, open, readFile, readdir, rename, unlink } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import type { Adapter } from 'lowdb';
import { pidAlive } from '../proc.ts';
import { decodeState, encodeState } from './decode.ts';
import { StoreCorruptError, StoreInvalidError, StoreVersionError } from './errors.ts';
import { checkState } from './schema.ts';
import { SCHEMA_VERSION } from './types.ts';
import type { State } from './types.ts';

export const DIR_MODE = 0o700;
export const FILE_MODE = 0o600;

/** `2024-05-01T12-00-00-000Z`: an ISO timestamp that is also a portable file name. */
export function fileStamp(now: Date): string {
  return now.toISOString().replace(/[:.]/g, '-');
}

function errno(err: unknown): string | undefined {
  return typeof err === 'object' && err !== null && 'code' in err ? String((err as { code: unknown }).code) : undefined;
}

/** Creates `dir` (and its parents) with mode 0700. An existing directory is left as it is. */
export async function ensureDir(dir: string): Promise<void> {
  await mkdir(dir, { recursive: true, mode: DIR_MODE });
}

/**
 * Writes `bytes` to `${file}${suffix}` (0600), never overwriting: on a clash
 * it appends `-1`, `-2`… Returns the path written.
 */
export async function keepCopy(file: string, suffix: string, bytes: Uint8Array): Promise<string> {
  for (let n = 0; ; n++) {
    const path = `${file}${suffix}${n === 0 ? '' : `-${n}`}`;
    try {
      const fh = await open(path, 'wx', FILE_MODE);
      try {
        await fh.writeFile(bytes);
        await fh.sync();
      } finally {
        await fh.close();
      }
      return path;
    } catch (err) {
      if (errno(err) !== 'EEXIST' || n >= 100) throw err;
    }
  }
}

/**
 * An earlier `${file}.corrupt-*` copy with exactly these bytes, if any: every
 * command reads the state, and a corrupt file must not leave one copy per command.
 */
async function findCorruptCopy(file: string, bytes: Uint8Array): Promise<string | undefined> {
  const dir = dirname(file);
  const prefix = `${basename(file)}.corrupt-`;
  let names: string[];
  try {
    names = await readdir(dir);
  } catch {
    return undefined;
  }
  for (const name of names.filter((n) => n.startsWith(prefix)).sort()) {
    const path = join(dir, name);
    try {
      const other = await readFile(path);
      if (Buffer.compare(other, bytes) === 0) return path;
    } catch {
      // vanished or unreadable: not a match
    }
  }
  return undefined;
}

/** Copies a corrupt file aside, then returns the error that names both. */
async function corruptError(file: string, bytes: Uint8Array, reason: string, cause: unknown, now: Date): Promise<StoreCorruptError> {
  try {
    const backup = (await findCorruptCopy(file, bytes)) ?? (await keepCopy(file, `.corrupt-${fileStamp(now)}`, bytes));
    return new StoreCorruptError({ file, reason, backup, cause });
  } catch (backupError) {
    return new StoreCorruptError({ file, reason, backup: undefined, backupError, cause });
  }
}

export interface ReadResult {
  state: State;
  /** The version on disk before migration. */
  version: number;
  bytes: Uint8Array;
}

/**
 * Reads and decodes the state file; null when it does not exist. Throws
 * StoreCorruptError (after keeping a copy) or StoreVersionError.
 */
export async function readStateFile(file: string, now: () => Date): Promise<ReadResult | null> {
  let bytes: Uint8Array;
  try {
    bytes = await readFile(file);
  } catch (err) {
    if (errno(err) === 'ENOENT') return null;
    throw err;
  }
  const decoded = decodeState(bytes);
  switch (decoded.kind) {
    case 'ok':
      return { state: decoded.state, version: decoded.version, bytes };
    case 'newer':
      throw new StoreVersionError({ file, fileVersion: decoded.version, supportedVersion: SCHEMA_VERSION });
    case 'corrupt':
      throw await corruptError(file, bytes, decoded.reason, decoded.cause, now());
  }
}

async function fsyncDir(dir: string): Promise<void> {
  const fh = await open(dir, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/** `.state.json.<pid>.<random>.tmp`, next to the file so that rename() is atomic. */
function tempName(file: string): string {
  return join(dirname(file), `.${basename(file)}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`);
}

const TEMP_RE = /^\.(.+)\.(\d+)\.[0-9a-f]{12}\.tmp$/;

/**
 * Replaces `file` with `text` atomically: a uniquely named temporary file in
 * the same directory (0600), written and fsynced, renamed over the file, then
 * the directory fsynced so that the rename itself is durable.
 */
export async function writeFileAtomic(file: string, text: string): Promise<void> {
  const tmp = tempName(file);
  try {
    const fh = await open(tmp, 'wx', FILE_MODE);
    try {
      await fh.writeFile(text, 'utf8');
      await fh.sync();
    } finally {
      await fh.close();
    }
    await rename(tmp, file);
  } catch (err) {
    await unlink(tmp).catch(() => undefined);
    throw err;
  }
  await fsyncDir(dirname(file));
}

/**
 * Removes temporary files left by writers that died between open and rename.
 * Call it only while holding the lock; files of live processes are kept.
 */
export async function removeOrphanTemps(file: string): Promise<void> {
  const dir = dirname(file);
  let names: string[];
  try {
    names = await readdir(dir);
  } catch {
    return;
  }
  for (const name of names) {
    const m = TEMP_RE.exec(name);
    if (m === null || m[1] !== basename(file)) continue;
    const pid = Number(m[2]);
    if (pid !== process.pid && !pidAlive(pid)) await unlink(join(dir, name)).catch(() => undefined);
  }
}

/**
 * lowdb adapter for one read-modify-write. `read` is strict (see readStateFile);
 * `write` refuses a state it would not read back (StoreInvalidError), is atomic, skips the write when nothing changed, and keeps a copy of
 * a file from an older schema version before replacing it.
 */
export class StateFileAdapter implements Adapter<State> {
  private last: ReadResult | null = null;

  constructor(
    readonly file: string,
    private readonly now: () => Date,
  ) {}

  async read(): Promise<State | null> {
    this.last = await readStateFile(this.file, this.now);
    return this.last?.state ?? null;
  }

  async write(state: State): Promise<void> {
    const text = encodeState(state);
    // Check exactly what the next read will see (JSON drops undefined, turns Dates into strings…).
    const issues = checkState(JSON.parse(text));
    if (issues.length > 0) throw new StoreInvalidError({ file: this.file, issues });
    const last = this.last;
    if (last !== null && last.version === SCHEMA_VERSION && Buffer.from(text, 'utf8').equals(last.bytes)) return;
    if (last !== null && last.version < SCHEMA_VERSION) {
      await keepCopy(this.file, `.v${last.version}-${fileStamp(this.now())}`, last.bytes);
    }
    await writeFileAtomic(this.file, text);
    this.last = { state, version: SCHEMA_VERSION, bytes: Buffer.from(text, 'utf8') };
  }
}
