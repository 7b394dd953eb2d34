/**
 * Reading the virtio-serial port on a thread of its own.
 *
 * A virtio-serial `read(2)` returns at most one virtqueue buffer (4 KiB),
 * however large the request. Reading with `fs.read` costs a libuv thread-pool
 * round trip per 4 KiB (hand the read to a pool thread, wake the main loop,
 * run the callback, hand the next read over); under TCG that caps what the
 * host can send the agent at about 7 MiB/s, against ~110 MiB/s for a plain
 * blocking read loop and 62-70 MiB/s through this ring (measured in the
 * guest, see docs/decisions.md).
 *
 * So a worker thread does nothing but blocking reads, straight into a ring
 * buffer shared with the main thread, and the main thread takes whatever has
 * accumulated in one piece: many 4 KiB reads become one chunk for the decoder,
 * which copies each payload byte once, from the ring into its frame.
 *
 * The ring is a SharedArrayBuffer; an Int32Array holds the positions (byte
 * counts that wrap at 2^32; the ring's size is a power of two, so `pos & mask`
 * is the offset and `(w - r) | 0` the fill) and the events:
 * - the worker advances WRITE after each read, the main thread READ after
 *   taking bytes; neither ever writes the other's slot;
 * - a read of 0 (the port has no connection semantics: `read()` returns 0 at
 *   once while the host side is not connected, see port.ts) is reported as
 *   one EOF bump per disconnect, and only once the main thread has taken
 *   every byte that came before it, so data and disconnects stay in order;
 *   the worker then polls with a backoff (100 ms doubling to 1 s);
 * - SEQ counts events for the main thread's `Atomics.waitAsync`, so a wake-up
 *   is never lost between its check and its wait; the worker notifies only
 *   while WAITING says the main thread sleeps (a wake-up per 4 KiB read would
 *   cost half the throughput);
 * - STOP asks the worker to end after the read in progress.
 * A read error ends the worker with a message; the caller reopens the port.
 */
import { Buffer } from 'node:buffer';
import { Worker } from 'node:worker_threads';

/** Slots of the control array. */
const WRITE = 0;
const READ = 1;
const EOF = 2;
const STOP = 3;
const SEQ = 4;
const WAITING = 5;
const SLOTS = 6;

/** Largest single read (a virtio-serial read returns ≤ 4 KiB; a FIFO in tests may return more). */
const READ_SIZE = 64 * 1024;
/** Largest chunk handed to `onData` at once. */
const MAX_BATCH = 256 * 1024;

export interface PortReaderOptions {
  /** Bytes of the shared ring (a power of two). Default 1 MiB. */
  ringSize?: number;
  backoffMinMs: number;
  backoffMaxMs: number;
  /** Where the ring positions start (tests: to cross the int32 sign and wrap-around without moving 4 GiB). */
  initialPosition?: number;
}

interface WorkerInput {
  fd: number;
  ctl: SharedArrayBuffer;
  ring: SharedArrayBuffer;
  readSize: number;
  backoffMinMs: number;
  backoffMaxMs: number;
}

/**
 * The worker's whole program. It runs from its source text (`eval` worker),
 * so it may use nothing from this module: `require` and the input come in as
 * arguments, the slot numbers are repeated as literals.
 */
function readerThread(require: NodeJS.Require): void {
  const { readSync } = require('node:fs') as typeof import('node:fs');
  const threads = require('node:worker_threads') as typeof import('node:worker_threads');
  const input = threads.workerData as WorkerInput;
  const ctl = new Int32Array(input.ctl);
  const ring = new Uint8Array(input.ring);
  const size = ring.length;
  const mask = size - 1;
  const [W, R, E, S, Q, A] = [0, 1, 2, 3, 4, 5];
  const stopped = (): boolean => Atomics.load(ctl, S) !== 0;
  const signal = (): void => {
    Atomics.add(ctl, Q, 1);
    // Waking the main thread costs an event-loop wake-up: only when it sleeps.
    if (Atomics.load(ctl, A) !== 0) Atomics.notify(ctl, Q);
  };
  let hostPresent = true;
  let backoff = input.backoffMinMs;
  try {
    while (!stopped()) {
      // Room in the ring: wait while the main thread has not taken enough.
      const w = Atomics.load(ctl, W);
      const r = Atomics.load(ctl, R);
      const free = size - ((w - r) | 0);
      if (free === 0) {
        Atomics.wait(ctl, R, r, 1000);
        continue;
      }
      const at = w & mask;
      const n = readSync(input.fd, ring, at, Math.min(free, size - at, input.readSize), null);
      if (n > 0) {
        hostPresent = true;
        backoff = input.backoffMinMs;
        Atomics.store(ctl, W, (w + n) | 0);
        signal();
        continue;
      }
      if (hostPresent) {
        hostPresent = false;
        // Report the disconnect after everything read before it.
        for (let r2 = Atomics.load(ctl, R); r2 !== Atomics.load(ctl, W) && !stopped(); r2 = Atomics.load(ctl, R)) {
          Atomics.wait(ctl, R, r2, 100);
        }
        Atomics.add(ctl, E, 1);
        signal();
      }
      Atomics.wait(ctl, S, 0, backoff);
      backoff = Math.min(backoff * 2, input.backoffMaxMs);
    }
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    threads.parentPort?.postMessage({ code: e.code, message: e.message });
  }
}

const WORKER_SOURCE = `(${readerThread.toString()})(require)`;

/** Raised when the reader thread ends on a read error (the port went away, EIO…). */
export class PortReadError extends Error {
  readonly code: string | undefined;
  constructor(message: string, code?: string) {
    super(message);
    this.code = code;
  }
}

/**
 * Read `fd` until `signal` aborts (resolves) or a read fails (rejects with
 * PortReadError). `onData` gets the bytes in order, as views of the ring that
 * are valid only during the call (copy what must be kept: the frame decoder
 * does); `onHostGone` is called once per host disconnect, after the bytes
 * before it.
 */
export async function readPort(
  fd: number,
  onData: (chunk: Buffer) => void,
  onHostGone: () => void,
  options: PortReaderOptions,
  signal?: AbortSignal,
): Promise<void> {
  const ringSize = options.ringSize ?? 1024 * 1024;
  if (ringSize <= 0 || (ringSize & (ringSize - 1)) !== 0) throw new RangeError(`ring size ${ringSize} is not a power of two`);
  const ctlBuf = new SharedArrayBuffer(SLOTS * Int32Array.BYTES_PER_ELEMENT);
  const ringBuf = new SharedArrayBuffer(ringSize);
  const ctl = new Int32Array(ctlBuf);
  // One Buffer over the ring, sliced per chunk: a view made with Buffer.from(sab, …) costs ~5× a slice under TCG.
  const ringView = Buffer.from(ringBuf);
  const mask = ringSize - 1;
  let read = (options.initialPosition ?? 0) | 0;
  ctl[WRITE] = read;
  ctl[READ] = read;
  const input: WorkerInput = {
    fd,
    ctl: ctlBuf,
    ring: ringBuf,
    readSize: Math.min(READ_SIZE, ringSize),
    backoffMinMs: options.backoffMinMs,
    backoffMaxMs: options.backoffMaxMs,
  };
  const worker = new Worker(WORKER_SOURCE, { eval: true, workerData: input });
  const exited = new Promise<void>((resolve) => worker.once('exit', () => resolve()));
  const failed = new Promise<never>((_resolve, reject) => {
    worker.once('message', (m: { code?: string; message?: string }) => reject(new PortReadError(String(m?.message), m?.code)));
    worker.once('error', reject);
    worker.once('exit', (code) => reject(new PortReadError(`the port reader thread exited (code ${code})`)));
  });
  failed.catch(() => undefined);
  const stop = (): void => {
    Atomics.store(ctl, STOP, 1);
    Atomics.notify(ctl, STOP);
    Atomics.notify(ctl, READ);
    Atomics.add(ctl, SEQ, 1);
    Atomics.notify(ctl, SEQ);
  };
  signal?.addEventListener('abort', stop, { once: true });

  let seenEof = 0;
  /** Hand over one event (a disconnect or a chunk); false when there is none. */
  const takeOne = (): boolean => {
    const eof = Atomics.load(ctl, EOF);
    if (eof !== seenEof) {
      // Everything before this disconnect was taken already (the worker waited for it).
      seenEof = eof;
      onHostGone();
      return true;
    }
    const w = Atomics.load(ctl, WRITE);
    // A disconnect reported after the WRITE load comes before the bytes it
    // covers: take it first, on the next call.
    if (Atomics.load(ctl, EOF) !== eof) return true;
    const fill = (w - read) | 0;
    if (fill === 0) return false;
    const at = read & mask;
    const n = Math.min(fill, ringSize - at, MAX_BATCH);
    // The bytes are lent, not copied: the worker will not overwrite them
    // until READ moves past them, after onData returns.
    onData(ringView.subarray(at, at + n));
    read = (read + n) | 0;
    Atomics.store(ctl, READ, read);
    Atomics.notify(ctl, READ);
    return true;
  };

  try {
    while (!signal?.aborted) {
      const seq = Atomics.load(ctl, SEQ);
      if (takeOne()) {
        // Let timers and I/O callbacks (file writes, acks) run between chunks.
        await new Promise((resolve) => setImmediate(resolve));
        continue;
      }
      // Announce the sleep, then look again: either the worker sees WAITING
      // after its SEQ bump and notifies, or the wait sees SEQ changed.
      Atomics.store(ctl, WAITING, 1);
      const wait = Atomics.waitAsync(ctl, SEQ, seq);
      if (wait.async) await Promise.race([wait.value, failed]);
      Atomics.store(ctl, WAITING, 0);
    }
  } finally {
    signal?.removeEventListener('abort', stop);
    stop();
    await exited;
  }
}
