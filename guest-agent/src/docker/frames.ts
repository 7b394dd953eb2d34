/**
 * The two framings dockerd's Engine API streams use. Pure: bytes in, events out.
 *
 * - Multiplexed (logs and attach without a TTY): each frame is an 8-byte
 *   header `{stream, 0, 0, 0, size uint32 big-endian}` then `size` bytes;
 *   stream 1 is stdout, 2 stderr (0 stdin). Payloads are handed on as they
 *   arrive, in pieces, never held whole: a frame may be megabytes long.
 * - JSON lines (build, load, pull progress): one JSON object per line; a line
 *   longer than `maxLine` is dropped, not buffered.
 */
import { Buffer } from 'node:buffer';

export const MUX_HEADER = 8;

export type MuxStream = 'stdout' | 'stderr';

export class MuxDecoder {
  readonly #emit: (stream: MuxStream, piece: Buffer) => void;
  #header = Buffer.alloc(MUX_HEADER);
  #have = 0;
  #stream: MuxStream | undefined;
  #left = 0;

  constructor(emit: (stream: MuxStream, piece: Buffer) => void) {
    this.#emit = emit;
  }

  /** Whether the decoder stands between frames (nothing partial held). */
  get idle(): boolean {
    return this.#have === 0 && this.#left === 0;
  }

  push(chunk: Buffer): void {
    let pos = 0;
    while (pos < chunk.length) {
      if (this.#left > 0) {
        const n = Math.min(this.#left, chunk.length - pos);
        // A piece of the caller's chunk: consumed before push returns (copy it to keep it).
        if (this.#stream) this.#emit(this.#stream, chunk.subarray(pos, pos + n));
        this.#left -= n;
        pos += n;
        continue;
      }
      const n = Math.min(MUX_HEADER - this.#have, chunk.length - pos);
      chunk.copy(this.#header, this.#have, pos, pos + n);
      this.#have += n;
      pos += n;
      if (this.#have < MUX_HEADER) return;
      this.#have = 0;
      const kind = this.#header[0];
      // stdin (0) and anything unknown are skipped, their length still honoured.
      this.#stream = kind === 1 ? 'stdout' : kind === 2 ? 'stderr' : undefined;
      this.#left = this.#header.readUInt32BE(4);
    }
  }
}

/** Pure: one multiplexed frame (for tests and for writing). */
export function muxFrame(stream: 0 | 1 | 2, payload: Buffer): Buffer {
  const h = Buffer.alloc(MUX_HEADER);
  h[0] = stream;
  h.writeUInt32BE(payload.length, 4);
  return Buffer.concat([h, payload]);
}

/** Splits JSON lines, each parsed; a line over `maxLine` bytes or that is not JSON is reported as `bad`. */
export class JsonLines {
  readonly #emit: (value: Record<string, unknown>) => void;
  readonly #bad: (why: string) => void;
  readonly #maxLine: number;
  #parts: Buffer[] = [];
  #length = 0;
  #skipping = false;

  constructor(emit: (value: Record<string, unknown>) => void, bad: (why: string) => void = () => undefined, maxLine = 1024 * 1024) {
    this.#emit = emit;
    this.#bad = bad;
    this.#maxLine = maxLine;
  }

  push(chunk: Buffer): void {
    let pos = 0;
    while (pos < chunk.length) {
      const nl = chunk.indexOf(0x0a, pos);
      const end = nl === -1 ? chunk.length : nl;
      if (!this.#skipping) {
        this.#parts.push(Buffer.from(chunk.subarray(pos, end)));
        this.#length += end - pos;
        if (this.#length > this.#maxLine) {
          this.#bad(`a line longer than ${this.#maxLine} bytes`);
          this.#parts = [];
          this.#length = 0;
          this.#skipping = true;
        }
      }
      if (nl === -1) return;
      pos = nl + 1;
      if (this.#skipping) {
        this.#skipping = false;
        continue;
      }
      const text = Buffer.concat(this.#parts).toString('utf8').trim();
      this.#parts = [];
      this.#length = 0;
      if (text === '') continue;
      try {
        const v = JSON.parse(text) as unknown;
        if (typeof v === 'object' && v !== null && !Array.isArray(v)) this.#emit(v as Record<string, unknown>);
        else this.#bad('a line that is not a JSON object');
      } catch {
        this.#bad('a line that is not JSON');
      }
    }
  }

  /** The end of the stream: a last line without a newline counts too. */
  end(): void {
    if (this.#length > 0 && !this.#skipping) this.push(Buffer.from('\n'));
  }
}
