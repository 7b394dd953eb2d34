/**
 * Saving a VM's state (memory and devices) to a file, and starting a QEMU on
 * it, through QEMU's migration over a unix socket in the VM's run directory.
 *
 * QEMU 7.2 has no `file:` migration URI, and `exec:` needs a shell that the
 * VM's sandbox (`-sandbox spawn=deny`) forbids; `fd:` needs SCM_RIGHTS, which
 * Node's sockets cannot send. So GoShip plays the other end of a `unix:`
 * migration: on a save it listens and QEMU (as the VM's identity) connects
 * and sends; on a restore QEMU (started with `-incoming defer`) listens and
 * GoShip connects and sends the file. QEMU never opens the state file, so a
 * jailed QEMU needs no access to it, and a template's state stays out of its
 * clones' reach.
 */
import { once } from 'node:events';
import { createReadStream } from 'node:fs';
import { chown, chmod, open, rename, rm, type FileHandle } from 'node:fs/promises';
import { connect, createServer, type Socket } from 'node:net';
import { dirname } from 'node:path';
import type { QmpClient, QmpMigrationInfo } from '../qmp/index.ts';
import { VmStateError } from './errors.ts';
import { STATE_HEADER_BYTES, stateHeaderIssue } from './header.ts';

/** QEMU's default bandwidth cap (128 MiB/s) throttles a save to a local file: lifted to this. */
export const SAVE_BANDWIDTH = 64 * 1024 * 1024 * 1024;
const POLL_MS = 10;
const DEFAULT_TIMEOUT_MS = 120_000;

export interface SaveStateOptions {
  /** Where QEMU sends: a unix socket made here, in the VM's run directory, and removed after. */
  socketPath: string;
  /** QEMU's identity: the socket is given to it, as a jailed QEMU cannot connect to root's. */
  owner?: { uid: number; gid: number };
  /** The state file: written as FILE.partial, synced, then renamed. */
  file: string;
  /** A stream longer than this is cut and the save fails: a QEMU must not fill the disk. */
  maxBytes: number;
  timeoutMs?: number;
  /** Cancels the save (its client went away): QEMU's migration is cancelled, nothing is kept. */
  signal?: AbortSignal;
  /** Leave RAM mapped shared out of the state (`x-ignore-shared`): a template's, whose RAM is its memory file. */
  ignoreShared?: boolean;
}

export interface StateTransfer {
  bytes: number;
  ms: number;
  /** A restore: when the last byte was handed to QEMU. */
  sentMs?: number;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Polls `query-migrate` until the migration completes; a failure rejects with QEMU's reason. */
async function migrationDone(qmp: QmpClient, deadline: number, what: string): Promise<QmpMigrationInfo> {
  for (;;) {
    const info = await qmp.queryMigrate();
    if (info.status === 'completed') return info;
    if (info.status === 'failed' || info.status === 'cancelled') {
      throw new VmStateError(`${what}: QEMU says the migration ${info.status}${info['error-desc'] ? `: ${info['error-desc']}` : ''}`);
    }
    if (performance.now() > deadline) throw new VmStateError(`${what}: not done in time (migration ${info.status ?? 'not started'})`);
    await sleep(POLL_MS);
  }
}

/**
 * Saves the state of the VM behind `qmp` to `o.file`. The VM should be paused
 * first (`stop`): its memory then cannot change under the save, and it stays
 * paused (`postmigrate`) after it. Nothing is left behind on failure.
 */
export async function saveState(qmp: QmpClient, o: SaveStateOptions): Promise<StateTransfer> {
  const start = performance.now();
  const deadline = start + (o.timeoutMs ?? DEFAULT_TIMEOUT_MS);
  const partial = `${o.file}.partial`;
  const what = `saving the VM's state to ${o.file}`;
  await rm(o.socketPath, { force: true });
  const server = createServer();
  let out: FileHandle | undefined;
  let peer: Socket | undefined;
  let bytes = 0;
  try {
    out = await open(partial, 'wx', 0o600);
    server.listen(o.socketPath);
    await once(server, 'listening');
    await chmod(o.socketPath, 0o600);
    if (o.owner) await chown(o.socketPath, o.owner.uid, o.owner.gid);
    const file = out;
    const received = new Promise<void>((resolve, reject) => {
      server.once('connection', (s: Socket) => {
        peer = s;
        server.close(); // one sender only
        let writing = Promise.resolve();
        s.on('data', (chunk: Buffer) => {
          bytes += chunk.length;
          if (bytes > o.maxBytes) {
            s.destroy();
            reject(new VmStateError(`${what}: QEMU sent more than ${o.maxBytes} bytes, more than the VM's memory and devices can take: cut`));
            return;
          }
          s.pause();
          writing = writing.then(() => file.write(chunk)).then(() => void s.resume(), reject);
        });
        s.once('end', () => void writing.then(resolve, reject));
        s.once('error', reject);
      });
    });
    const cancelled = new Promise<never>((_, reject) => {
      const sig = o.signal;
      if (!sig) return;
      const fail = () => reject(new VmStateError(`${what}: cancelled: ${(sig.reason as Error | undefined)?.message ?? 'aborted'}`));
      if (sig.aborted) fail();
      else sig.addEventListener('abort', fail, { once: true });
    });
    cancelled.catch(() => undefined);
    await Promise.race([cancelled, qmp.migrateSetMaxBandwidth(SAVE_BANDWIDTH)]);
    if (o.ignoreShared) await Promise.race([cancelled, qmp.migrateIgnoreShared(true)]);
    await Promise.race([cancelled, qmp.migrate(`unix:${o.socketPath}`)]);
    await Promise.race([cancelled, Promise.all([received, migrationDone(qmp, deadline, what)])]);
    await out.sync();
    await out.close();
    out = undefined;
    await rename(partial, o.file);
    await syncDir(dirname(o.file));
    return { bytes, ms: performance.now() - start };
  } catch (err) {
    await qmp.execute('migrate_cancel').catch(() => undefined);
    throw err instanceof VmStateError ? err : new VmStateError(`${what}: ${(err as Error).message}`, { cause: err });
  } finally {
    peer?.destroy();
    server.close();
    await out?.close().catch(() => undefined);
    await rm(partial, { force: true });
    await rm(o.socketPath, { force: true });
  }
}

export interface RestoreStateOptions {
  /** The state file. */
  file: string;
  /** Its size as recorded when it was saved: a file of another size is refused before QEMU sees it. */
  bytes?: number;
  /** Where QEMU listens for the state: a path in the VM's run directory. */
  socketPath: string;
  timeoutMs?: number;
  /** The state was saved with `x-ignore-shared` (a template's): the RAM QEMU maps (the template's memory) is kept. */
  ignoreShared?: boolean;
}

/** Pure: the state file's facts, checked before any QEMU is given it. */
export function stateFileIssue(head: Buffer, size: number, expected: number | undefined): string | undefined {
  if (expected !== undefined && size !== expected) return `it is ${size} bytes long, not the ${expected} bytes that were saved (${size < expected ? 'truncated' : 'changed'})`;
  return stateHeaderIssue(head);
}

/** Throws VmStateError when `file` is not a whole saved state; returns its size. */
export async function checkStateFile(file: string, expected?: number): Promise<number> {
  let fh: FileHandle | undefined;
  try {
    fh = await open(file, 'r');
    const st = await fh.stat();
    const head = Buffer.alloc(STATE_HEADER_BYTES);
    const { bytesRead } = await fh.read(head, 0, head.length, 0);
    const issue = stateFileIssue(head.subarray(0, bytesRead), st.size, expected);
    if (issue) throw new VmStateError(`${file} is not a saved VM state GoShip can restore: ${issue}`);
    return st.size;
  } catch (err) {
    if (err instanceof VmStateError) throw err;
    throw new VmStateError(`cannot read the saved state ${file}: ${(err as Error).message}`, { cause: err });
  } finally {
    await fh?.close();
  }
}

/**
 * Loads `o.file` into a QEMU started with `-incoming defer` and paused (-S):
 * once this resolves the VM is as it was saved, paused; `cont` runs it. A
 * state QEMU refuses makes it exit: the error says so.
 */
export async function restoreState(qmp: QmpClient, o: RestoreStateOptions): Promise<StateTransfer> {
  const start = performance.now();
  const deadline = start + (o.timeoutMs ?? DEFAULT_TIMEOUT_MS);
  const what = `restoring the VM's state from ${o.file}`;
  const size = await checkStateFile(o.file, o.bytes);
  let sock: Socket | undefined;
  try {
    if (o.ignoreShared) await qmp.migrateIgnoreShared(true);
    await qmp.migrateIncoming(`unix:${o.socketPath}`);
    const s = connect(o.socketPath);
    sock = s;
    const sent = new Promise<void>((resolve, reject) => {
      s.once('connect', () => {
        const input = createReadStream(o.file, { highWaterMark: 1024 * 1024 });
        input.once('error', reject);
        input.pipe(s);
        s.once('finish', resolve);
      });
      s.once('error', reject);
    });
    let sentMs = 0;
    await Promise.all([sent.then(() => (sentMs = performance.now() - start)), migrationDone(qmp, deadline, what)]);
    // The VM's own saves (a suspend, a snapshot) carry all of its RAM, and a VM that restores them has the capability off.
    if (o.ignoreShared) await qmp.migrateIgnoreShared(false);
    return { bytes: size, ms: performance.now() - start, sentMs };
  } catch (err) {
    if (err instanceof VmStateError) throw err;
    throw new VmStateError(`${what}: ${(err as Error).message}`, {
      cause: err,
      hint: 'QEMU refuses a state saved by another QEMU version, machine type or device set, and exits; its reason is in the VM\'s qemu.log',
    });
  } finally {
    sock?.destroy();
    await rm(o.socketPath, { force: true }).catch(() => undefined);
  }
}

async function syncDir(dir: string): Promise<void> {
  const fh = await open(dir, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}
