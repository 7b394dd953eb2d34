/**
 * console.log, written by the monitor from the serial console's socket, with
 * a size cap and rotation: at `maxBytes` the file becomes console.log.1 (and
 * .1 becomes .2 … up to `keep` files), so a guest that floods its console
 * never fills the host's disk. Reading the socket waits for each write: a
 * guest that writes faster than the disk takes is slowed, never buffered.
 *
 * Followers (`vm console -f`) see every byte after they subscribe, and can
 * first read what the files hold.
 *
 * The socket is read into one reused buffer and what arrives while a write
 * is in flight is written next in one piece: no allocation per read, few
 * writes (a guest's UART gives thousands of reads of a few bytes a second).
 */
import { Buffer } from 'node:buffer';
import { closeSync, openSync, readSync } from 'node:fs';
import { open, rename, stat, type FileHandle } from 'node:fs/promises';
import type { Socket } from 'node:net';
import { CONSOLE_READ_BYTES, type ReusedReads } from './sockets.ts';

/** Bytes read and not yet written are held up to this; with less than one read's room left, the socket waits. */
const STAGE_BYTES = 2 * CONSOLE_READ_BYTES;

export interface ConsoleLogOptions {
  path: string;
  /** A file is rotated when the next byte would make it larger than this. */
  maxBytes: number;
  /** Rotated files kept beside `path` (`path.1` … `path.keep`). */
  keep: number;
}

/** Pure: how many bytes of a chunk of `length` still fit in a file of `size`, given `maxBytes`. */
export function fitting(size: number, length: number, maxBytes: number): number {
  return Math.max(0, Math.min(length, maxBytes - size));
}

export class ConsoleLog {
  readonly #opts: ConsoleLogOptions;
  #fh: FileHandle;
  #size: number;
  #written = 0;
  #rotations = 0;
  #chain: Promise<void> = Promise.resolve();
  readonly #followers = new Set<(chunk: Buffer) => void>();
  /** `append`'s bytes waiting for the write in flight, and the buffer that write is writing from. */
  #stage = Buffer.allocUnsafe(STAGE_BYTES);
  #staged = 0;
  #spare = Buffer.allocUnsafe(STAGE_BYTES);
  #flushing: Promise<void> | undefined;
  /** Called when `append` has room again after it said it had none. */
  #onRoom: (() => void) | undefined;
  #onError: ((err: Error) => void) | undefined;

  private constructor(opts: ConsoleLogOptions, fh: FileHandle, size: number) {
    this.#opts = opts;
    this.#fh = fh;
    this.#size = size;
  }

  /** Opens a fresh console.log for a new run of the VM: what the last run wrote moves to console.log.1. */
  static async open(opts: ConsoleLogOptions): Promise<ConsoleLog> {
    const size = await stat(opts.path).then(
      (s) => s.size,
      () => 0,
    );
    if (size > 0) await shift(opts);
    const fh = await open(opts.path, 'w', 0o600);
    return new ConsoleLog(opts, fh, 0);
  }

  /** Bytes written in this run, across rotations. */
  get bytes(): number {
    return this.#written;
  }

  get rotations(): number {
    return this.#rotations;
  }

  /**
   * Appends `n` bytes of `buf` (copied: the caller may reuse `buf`), written
   * with whatever else came in while the last write was in flight: one write
   * per disk round, not one per read. Returns false when less than a read's
   * worth of room is left; `onRoom` then says when to go on.
   */
  append(buf: Buffer, n: number): boolean {
    if (this.#staged + n > this.#stage.length) {
      // The caller read on after `false`: keep the bytes anyway, in a larger stage.
      const bigger = Buffer.allocUnsafe(this.#staged + n);
      this.#stage.copy(bigger, 0, 0, this.#staged);
      this.#stage = bigger;
    }
    buf.copy(this.#stage, this.#staged, 0, n);
    this.#staged += n;
    if (!this.#flushing) this.#flush();
    return this.#staged + CONSOLE_READ_BYTES <= STAGE_BYTES;
  }

  /** How `append`'s reader is resumed, and where its write errors go. */
  feedBy(onRoom: () => void, onError: (err: Error) => void): void {
    this.#onRoom = onRoom;
    this.#onError = onError;
  }

  #flush(): void {
    const full = this.#stage;
    const n = this.#staged;
    // The spare's last write is done (one write at a time); a stage grown past its size is dropped after its write.
    this.#stage = this.#spare;
    this.#spare = full.length === STAGE_BYTES ? full : Buffer.allocUnsafe(STAGE_BYTES);
    this.#staged = 0;
    this.#flushing = this.write(full.subarray(0, n)).then(
      () => this.#flushed(),
      (err: unknown) => {
        this.#onError?.(err as Error);
        this.#flushed();
      },
    );
  }

  #flushed(): void {
    this.#flushing = undefined;
    if (this.#staged > 0) this.#flush();
    if (this.#staged + CONSOLE_READ_BYTES <= STAGE_BYTES) this.#onRoom?.();
  }

  /** Appends `chunk`, rotating at the cap; resolves once it is written. Writes run one at a time. Followers see `chunk` during the call only. */
  write(chunk: Buffer): Promise<void> {
    const done = this.#chain.then(() => this.#write(chunk));
    this.#chain = done.catch(() => undefined);
    return done;
  }

  async #write(chunk: Buffer): Promise<void> {
    let pos = 0;
    while (pos < chunk.length) {
      const n = fitting(this.#size, chunk.length - pos, this.#opts.maxBytes);
      if (n === 0) {
        await this.#rotate();
        continue;
      }
      let off = 0;
      while (off < n) off += (await this.#fh.write(chunk, pos + off, n - off)).bytesWritten;
      this.#size += n;
      this.#written += n;
      pos += n;
    }
    for (const f of this.#followers) f(chunk);
  }

  async #rotate(): Promise<void> {
    await this.#fh.close();
    await shift(this.#opts);
    this.#fh = await open(this.#opts.path, 'w', 0o600);
    this.#size = 0;
    this.#rotations++;
  }

  /**
   * Follow the console: `live` gets every chunk written from now on. With
   * `history`, the files' contents up to now are read first (oldest first)
   * and handed to `past` before any live chunk; live chunks that arrive in
   * the meantime wait (up to `maxQueued` bytes; beyond, they are counted as
   * dropped). Returns the unsubscribe function.
   */
  async follow(
    handlers: { live: (chunk: Buffer) => void; past?: (chunk: Buffer) => Promise<void>; dropped?: (bytes: number) => void },
    maxQueued = 1024 * 1024,
  ): Promise<() => void> {
    // Let the write in flight finish, then take the files as they are, all in one tick.
    await this.#chain;
    const files = historyFiles(this.#opts, this.#size);
    let queue: Buffer[] | undefined = handlers.past ? [] : undefined;
    let queued = 0;
    const live = (chunk: Buffer): void => {
      if (queue === undefined) return handlers.live(chunk);
      if (queued + chunk.length > maxQueued) return handlers.dropped?.(chunk.length);
      // A copy: the chunk is the writer's buffer, reused after this call.
      queue.push(Buffer.from(chunk));
      queued += chunk.length;
    };
    this.#followers.add(live);
    const unsubscribe = (): void => {
      this.#followers.delete(live);
    };
    if (handlers.past) {
      try {
        for (const f of files) {
          for (const piece of f.read()) await handlers.past(piece);
        }
      } finally {
        for (const f of files) f.close();
      }
      const waiting = queue!;
      queue = undefined;
      for (const c of waiting) handlers.live(c);
    }
    return unsubscribe;
  }

  async close(): Promise<void> {
    while (this.#flushing) await this.#flushing;
    await this.#chain;
    this.#followers.clear();
    await this.#fh.close().catch(() => undefined);
  }
}

/**
 * Reads a console socket into `log`, the socket made with `reads` (its reads
 * go into one reused buffer). What comes in while a write is in flight is
 * written next, in one piece; with more than the stage holds waiting, the
 * socket is paused until the disk has taken it: a guest that writes faster
 * than the disk takes is slowed down, and nothing piles up in memory.
 */
export function pipeConsole(socket: Socket, reads: ReusedReads, log: ConsoleLog, onError: (err: Error) => void): void {
  log.feedBy(() => {
    if (!socket.destroyed) socket.resume();
  }, onError);
  socket.on('error', () => undefined);
  // It may come paused (connected before its owner was ready): nothing was read yet, nothing is lost.
  if (reads.sinkTo((buf, n) => log.append(buf, n))) socket.resume();
}

/** path → path.1 → path.2 … (the oldest beyond `keep` is replaced). */
async function shift(opts: ConsoleLogOptions): Promise<void> {
  for (let k = opts.keep; k >= 1; k--) {
    const from = k === 1 ? opts.path : `${opts.path}.${k - 1}`;
    await rename(from, `${opts.path}.${k}`).catch((e: NodeJS.ErrnoException) => {
      if (e.code !== 'ENOENT') throw e;
    });
  }
}

interface HistoryFile {
  read(): Generator<Buffer>;
  close(): void;
}

/** The rotated files and the current one (its first `currentSize` bytes), opened now, oldest first. */
function historyFiles(opts: ConsoleLogOptions, currentSize: number): HistoryFile[] {
  const names = [...Array.from({ length: opts.keep }, (_, i) => `${opts.path}.${opts.keep - i}`), opts.path];
  const out: HistoryFile[] = [];
  names.forEach((name, i) => {
    let fd: number;
    try {
      fd = openSync(name, 'r');
    } catch {
      return;
    }
    const limit = i === names.length - 1 ? currentSize : Number.POSITIVE_INFINITY;
    out.push({
      *read() {
        let pos = 0;
        const buf = Buffer.allocUnsafe(64 * 1024);
        while (pos < limit) {
          const n = readSync(fd, buf, 0, Math.min(buf.length, limit - pos), pos);
          if (n <= 0) return;
          pos += n;
          yield Buffer.from(buf.subarray(0, n));
        }
      },
      close: () => closeSync(fd),
    });
  });
  return out;
}
