/**
 * Framing of the agent channel: newline-delimited JSON control lines plus
 * binary data frames.
 *
 *     {"t":"req","id":1,"m":"ping","p":{}}\n                    a control line
 *     {"t":"data","id":7,"s":"stdout","n":5}\nhello             a data frame: header line + n raw bytes
 *
 * Every line is at most `maxLine` bytes: a longer one is discarded up to its
 * newline and reported, never buffered. A data frame carries at most
 * `maxChunk` bytes: a header announcing more cannot be skipped safely (its
 * length is the only thing delimiting it), so the decoder reports it as fatal
 * and stops trusting the stream (see `resyncOn`).
 *
 * Pure: no I/O, no clock. Used on the host (Node 20) and the guest (Node 18).
 */
import { Buffer } from 'node:buffer';
import * as v from 'valibot';
import { MAX_CHUNK, MAX_LINE } from './constants.ts';
import { DataHeaderSchema, describeIssues, type DataHeader } from './schemas.ts';

const NL = 0x0a;

/** One control line as JSON, with its newline. */
export function encodeLine(message: object): Buffer {
  return Buffer.from(`${JSON.stringify(message)}\n`, 'utf8');
}

/** One binary data frame: header line then the raw payload, as one buffer. */
export function encodeData(id: number, stream: DataHeader['s'], payload: Uint8Array): Buffer {
  const [header] = encodeDataParts(id, stream, payload);
  return Buffer.concat([header, payload], header.length + payload.length);
}

/**
 * A data frame as two buffers, its header line and the payload itself (not
 * copied): for a stream's `writev`, where `encodeData`'s one buffer would be
 * a copy of every payload byte (and, in the monitor, an allocation as large
 * as the frame per frame relayed).
 */
export function encodeDataParts(id: number, stream: DataHeader['s'], payload: Uint8Array): [Buffer, Uint8Array] {
  if (payload.length > MAX_CHUNK) throw new RangeError(`data frame of ${payload.length} bytes exceeds MAX_CHUNK (${MAX_CHUNK})`);
  return [Buffer.from(`${JSON.stringify({ t: 'data', id, s: stream, n: payload.length })}\n`, 'utf8'), payload];
}

/** What the decoder found. `message` is parsed JSON, not yet validated (the session does that). */
export type Decoded =
  | { kind: 'message'; message: Record<string, unknown> & { t: string } }
  | { kind: 'data'; header: DataHeader; payload: Buffer }
  | { kind: 'bad'; reason: BadReason; detail: string }
  | { kind: 'fatal'; reason: 'bad-frame-length'; detail: string };

export type BadReason = 'json' | 'not-a-message' | 'line-too-long' | 'bad-data-header';

export interface DecoderOptions {
  maxLine?: number;
  maxChunk?: number;
  /**
   * After a fatal framing error the decoder drops everything. With
   * `resyncOn: 'sync'` it keeps splitting lines and resumes at the first
   * control line whose `t` is that value (the agent waits for the host's next
   * sync); without it, nothing more is emitted until `reset()`.
   */
  resyncOn?: string;
  /**
   * Lend payloads instead of handing them over: a `data` event's payload is
   * valid until the next `push` (not after it), a view of the chunk given to
   * `push` when the frame lies whole in it, else of a buffer of the
   * decoder's where frames split across chunks are put together. For a relay
   * that passes payloads on at once, or waits before it pushes again (the
   * monitor): no allocation per frame, and no copy of a frame that came in
   * one read.
   */
  borrow?: boolean;
}

type Mode = 'line' | 'discard' | 'data';

export class FrameDecoder {
  readonly #maxLine: number;
  readonly #maxChunk: number;
  readonly #resyncOn: string | undefined;
  readonly #borrow: boolean;
  readonly #emit: (event: Decoded) => void;

  #mode: Mode = 'line';
  #broken = false;
  #lineParts: Buffer[] = [];
  #lineLength = 0;
  #header: DataHeader | undefined;
  /** A data frame whose header failed validation but whose length is known: its payload is skipped. */
  #skipping = false;
  #remaining = 0;
  /** The frame's payload, allocated at its header (with `borrow`, a view of `#assembly`) and filled as bytes arrive. */
  #payload: Buffer | undefined;
  /**
   * With `borrow`: where frames split across chunks are put together, two
   * buffers taken in turn, so the frame lent by one `push` is not written over
   * before the next `push` (a push completes at most one such frame, its
   * first, and may start one, its last).
   */
  readonly #assembly: [Buffer | undefined, Buffer | undefined] = [undefined, undefined];
  #turn = 0;
  #filled = 0;

  constructor(emit: (event: Decoded) => void, options: DecoderOptions = {}) {
    this.#emit = emit;
    this.#maxLine = options.maxLine ?? MAX_LINE;
    this.#maxChunk = options.maxChunk ?? MAX_CHUNK;
    this.#resyncOn = options.resyncOn;
    this.#borrow = options.borrow ?? false;
  }

  /** True after a fatal framing error, until a resync line or `reset()`. */
  get broken(): boolean {
    return this.#broken;
  }

  /** Bytes held for an incomplete line or frame (bounded by maxLine + maxChunk). */
  get bufferedBytes(): number {
    return this.#lineLength + this.#filled;
  }

  /** Forget any partial line or frame (a new session starts). */
  reset(): void {
    this.#mode = 'line';
    this.#broken = false;
    this.#lineParts = [];
    this.#lineLength = 0;
    this.#header = undefined;
    this.#skipping = false;
    this.#remaining = 0;
    this.#payload = undefined;
    this.#filled = 0;
  }

  /**
   * Decode `chunk`. Nothing of it is kept after the call (payloads and
   * partial lines are copied; with `borrow`, payloads are views valid until
   * the next push): the caller may reuse its buffer, and a small slice never
   * pins a large one.
   */
  push(chunk: Buffer): void {
    let pos = 0;
    while (pos < chunk.length) {
      if (this.#mode === 'data') {
        const take = Math.min(this.#remaining, chunk.length - pos);
        if (this.#borrow && this.#filled === 0 && !this.#skipping) {
          if (take === this.#remaining) {
            // The whole payload is in this chunk: lent as it lies, not copied.
            this.#remaining = 0;
            pos += take;
            this.#finishFrame(chunk.subarray(pos - take, pos));
            continue;
          }
          // Split across chunks: put together in the assembly buffer the last frame put together did not use.
          this.#turn ^= 1;
          this.#payload = (this.#assembly[this.#turn] ??= Buffer.allocUnsafe(this.#maxChunk)).subarray(0, this.#remaining);
        }
        if (this.#payload !== undefined) {
          chunk.copy(this.#payload, this.#filled, pos, pos + take);
          this.#filled += take;
        }
        this.#remaining -= take;
        pos += take;
        if (this.#remaining === 0) this.#finishFrame();
        continue;
      }
      const nl = chunk.indexOf(NL, pos);
      if (this.#mode === 'discard') {
        if (nl === -1) return;
        this.#mode = 'line';
        pos = nl + 1;
        continue;
      }
      // line mode
      if (nl === -1) {
        const rest = chunk.length - pos;
        if (this.#lineLength + rest > this.#maxLine) {
          this.#tooLong(this.#lineLength + rest);
          this.#mode = 'discard';
          this.#lineParts = [];
          this.#lineLength = 0;
          return;
        }
        this.#lineParts.push(Buffer.from(chunk.subarray(pos)));
        this.#lineLength += rest;
        return;
      }
      const piece = chunk.subarray(pos, nl);
      pos = nl + 1;
      if (this.#lineLength + piece.length + 1 > this.#maxLine) {
        this.#tooLong(this.#lineLength + piece.length + 1);
        this.#lineParts = [];
        this.#lineLength = 0;
        continue;
      }
      let line: Buffer;
      if (this.#lineParts.length === 0) line = piece;
      else {
        this.#lineParts.push(piece);
        line = Buffer.concat(this.#lineParts, this.#lineLength + piece.length);
        this.#lineParts = [];
      }
      this.#lineLength = 0;
      this.#line(line);
    }
  }

  #tooLong(bytes: number): void {
    if (this.#broken) return;
    this.#emit({ kind: 'bad', reason: 'line-too-long', detail: `line longer than ${this.#maxLine} bytes (${bytes} seen) discarded` });
  }

  #line(line: Buffer): void {
    // Blank lines (the host's sync starts with one) and a stray CR are ignored.
    if (line.length === 0 || (line.length === 1 && line[0] === 0x0d)) return;
    let parsed: unknown;
    try {
      parsed = JSON.parse(line.toString('utf8'));
    } catch (err) {
      if (!this.#broken) this.#emit({ kind: 'bad', reason: 'json', detail: `not JSON: ${(err as Error).message}` });
      return;
    }
    if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed) || typeof (parsed as { t?: unknown }).t !== 'string') {
      if (!this.#broken) this.#emit({ kind: 'bad', reason: 'not-a-message', detail: 'expected a JSON object with a string "t"' });
      return;
    }
    const message = parsed as Record<string, unknown> & { t: string };
    if (this.#broken) {
      if (this.#resyncOn !== undefined && message.t === this.#resyncOn) {
        this.#broken = false;
        this.#emit({ kind: 'message', message });
      }
      return;
    }
    if (message.t !== 'data') {
      this.#emit({ kind: 'message', message });
      return;
    }
    const n = message.n;
    if (typeof n !== 'number' || !Number.isInteger(n) || n < 0 || n > this.#maxChunk) {
      this.#broken = true;
      this.#emit({
        kind: 'fatal',
        reason: 'bad-frame-length',
        detail: `data frame announces ${JSON.stringify(n)} bytes; the limit is ${this.#maxChunk}: the stream cannot be resynchronised from here`,
      });
      return;
    }
    const header = v.safeParse(DataHeaderSchema, message);
    if (header.success) {
      this.#header = header.output;
      this.#skipping = false;
    } else {
      this.#header = undefined;
      this.#skipping = true;
      this.#emit({ kind: 'bad', reason: 'bad-data-header', detail: `data frame skipped: ${describeIssues(header.issues)}` });
    }
    this.#remaining = n;
    // One copy per payload byte, however the frame was split across chunks (lent: chosen at its first bytes, in push).
    if (this.#skipping) this.#payload = undefined;
    else if (this.#borrow) this.#payload = n === 0 ? Buffer.alloc(0) : undefined;
    else this.#payload = Buffer.allocUnsafe(n);
    this.#filled = 0;
    if (n === 0) this.#finishFrame();
    else this.#mode = 'data';
  }

  #finishFrame(lent?: Buffer): void {
    const header = this.#header;
    const payload = lent ?? this.#payload;
    this.#mode = 'line';
    this.#header = undefined;
    this.#payload = undefined;
    this.#filled = 0;
    if (this.#skipping || header === undefined || payload === undefined) {
      this.#skipping = false;
      return;
    }
    this.#emit({ kind: 'data', header, payload });
  }
}
