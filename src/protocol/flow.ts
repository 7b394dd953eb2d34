/**
 * Credit-based flow control for streams tied to a request id.
 *
 * A sender may have at most the receiver's window of a stream unacknowledged,
 * in frames no larger than the receiver's largest: the limits each side
 * announces in its sync or hello (`sendLimits`). The receiver acknowledges
 * bytes once it has consumed them (written them to a file, a pipe, a caller's
 * Writable), in batches of at least `ACK_THRESHOLD`. A receiver therefore
 * never holds more than one window per stream (its own, STREAM_WINDOW), and a
 * sender that ignores its credit is detected, not obeyed.
 */
import { Buffer } from 'node:buffer';
import type { Writable } from 'node:stream';
import { ACK_THRESHOLD, MAX_CHUNK, STREAM_WINDOW, UNANNOUNCED_LIMITS, type FlowLimits } from './constants.ts';
import { encodeDataParts } from './codec.ts';
import type { DataHeader } from './schemas.ts';

/**
 * What to send a peer within: the limits it announced, never beyond this
 * side's own (so its acks stay within what this side accepts), and the fixed
 * limits of protocol 1 for a peer that announced none.
 */
export function sendLimits(announced: FlowLimits | undefined): FlowLimits {
  if (announced === undefined) return { ...UNANNOUNCED_LIMITS };
  const window = Math.min(announced.window, STREAM_WINDOW);
  return { chunk: Math.min(announced.chunk, MAX_CHUNK, window), window };
}

/** The sending side's credit: what it may still send before the next ack. */
export class CreditWindow {
  readonly #window: number;
  #available: number;
  #waiter: { want: number; resolve: (n: number) => void; reject: (e: unknown) => void } | undefined;
  #closedWith: unknown;
  #closed = false;

  /** @param window the peer's window for this stream (`sendLimits(…).window`) */
  constructor(window: number) {
    this.#window = window;
    this.#available = window;
  }

  get available(): number {
    return this.#available;
  }

  /** Take up to `want` bytes of credit, waiting while there is none. One taker at a time. */
  take(want: number): Promise<number> {
    if (this.#closed) return Promise.reject(this.#closedWith);
    if (this.#waiter) return Promise.reject(new Error('CreditWindow.take: already waiting'));
    if (this.#available > 0) {
      const n = Math.min(want, this.#available);
      this.#available -= n;
      return Promise.resolve(n);
    }
    return new Promise((resolve, reject) => {
      this.#waiter = { want, resolve, reject };
    });
  }

  /** Credit returned by the peer's ack. False when it would exceed the window (a misbehaving peer). */
  grant(n: number): boolean {
    if (this.#available + n > this.#window) return false;
    this.#available += n;
    const w = this.#waiter;
    if (w && this.#available > 0) {
      this.#waiter = undefined;
      const got = Math.min(w.want, this.#available);
      this.#available -= got;
      w.resolve(got);
    }
    return true;
  }

  /** No more credit will come: the waiting taker (and every later one) fails with `reason`. */
  close(reason: unknown): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#closedWith = reason;
    const w = this.#waiter;
    this.#waiter = undefined;
    w?.reject(reason);
  }
}

/** The receiving side's accounting for one stream. */
export class CreditLedger {
  readonly #window: number;
  readonly #threshold: number;
  readonly #sendAck: (n: number) => void;
  /** Received and not yet acknowledged (includes bytes still being consumed). */
  #outstanding = 0;
  #consumedUnacked = 0;

  constructor(sendAck: (n: number) => void, options: { window?: number; ackThreshold?: number } = {}) {
    this.#sendAck = sendAck;
    this.#window = options.window ?? STREAM_WINDOW;
    this.#threshold = Math.min(options.ackThreshold ?? ACK_THRESHOLD, this.#window);
  }

  get outstanding(): number {
    return this.#outstanding;
  }

  /** Account for `n` received bytes. False when the sender overran its window. */
  received(n: number): boolean {
    if (this.#outstanding + n > this.#window) return false;
    this.#outstanding += n;
    return true;
  }

  /** `n` bytes were consumed: acknowledge once enough have accumulated. */
  consumed(n: number): void {
    this.#consumedUnacked += n;
    if (this.#consumedUnacked >= this.#threshold) {
      const ack = this.#consumedUnacked;
      this.#consumedUnacked = 0;
      this.#outstanding -= ack;
      this.#sendAck(ack);
    }
  }
}

/**
 * Send everything `source` yields as data frames of at most `maxChunk`
 * bytes (the peer's `sendLimits(…).chunk`), never more than the credit allows. `send` may return a promise
 * (transport backpressure); it is awaited before the next frame.
 * Resolves with the byte count when the source ends.
 */
export async function pumpWithCredit(
  source: AsyncIterable<Buffer | Uint8Array | string> | Iterable<Buffer | Uint8Array | string>,
  credit: CreditWindow,
  send: (chunk: Buffer) => void | Promise<void>,
  options: { maxChunk: number; onChunk?: (chunk: Buffer) => void },
): Promise<number> {
  const maxChunk = options.maxChunk;
  let total = 0;
  for await (const raw of source) {
    const chunk = typeof raw === 'string' ? Buffer.from(raw) : Buffer.isBuffer(raw) ? raw : Buffer.from(raw.buffer, raw.byteOffset, raw.byteLength);
    let pos = 0;
    while (pos < chunk.length) {
      const want = Math.min(maxChunk, chunk.length - pos);
      const got = await credit.take(want);
      const piece = chunk.subarray(pos, pos + got);
      pos += got;
      total += got;
      options.onChunk?.(piece);
      await send(piece);
    }
  }
  return total;
}

/** Resolves once `stream` can take more writes: at once, on `drain`, or when it closes. */
export function whenWritable(stream: Writable): Promise<void> {
  if (stream.destroyed || !stream.writableNeedDrain) return Promise.resolve();
  return new Promise((resolve) => {
    const done = (): void => {
      stream.off('drain', done);
      stream.off('close', done);
      resolve();
    };
    stream.on('drain', done);
    stream.on('close', done);
  });
}

/**
 * Writes one data frame to `stream`: its header and the payload in one
 * `writev` (corked), the payload itself and not a copy, so the caller hands
 * it over and must not change it while the stream holds it.
 *
 * Returns `undefined` when the kernel has taken every byte already (nothing
 * refers to `payload` any more: the caller may reuse its memory at once), or
 * a promise that settles once the stream is done with it: written, or the
 * stream failed or was destroyed (the write's callback runs either way).
 */
export function writeDataFrame(stream: Writable, id: number, s: DataHeader['s'], payload: Buffer): Promise<void> | undefined {
  const [header] = encodeDataParts(id, s, payload);
  let settle: (() => void) | undefined;
  let done = false;
  stream.cork();
  stream.write(header);
  stream.write(payload, () => {
    done = true;
    settle?.();
  });
  stream.uncork();
  // A write the kernel took at once has left the stream's count synchronously (its callback comes on the next tick).
  if (done || stream.writableLength === 0) return undefined;
  return new Promise((resolve) => {
    settle = resolve;
  });
}
