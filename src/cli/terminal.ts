/**
 * Guest bytes on the user's terminal. What a guest prints (its console, an
 * app's logs, a command's output) is hostile input: escape sequences can
 * retitle the window, move the cursor over earlier lines, reprogram keys or
 * answer back into the terminal's input. When stdout is a terminal (and not
 * `--raw`), `TerminalFilter` lets text, newline, tab and colour (SGR:
 * `ESC [ params m`) through and shows every other control byte in caret
 * notation, as `cat -v` does (`^[`, `^M`, `^?`); a CR before LF is dropped
 * (CRLF is a newline). Pipes and files get the bytes as they are.
 *
 * Pure and streaming: a sequence split across chunks is held until it is
 * complete, at most SGR_MAX bytes.
 */
import { Writable } from 'node:stream';

const ESC = 0x1b;
const CR = 0x0d;
const LF = 0x0a;
const TAB = 0x09;
/** The longest colour sequence passed through; a longer one is shown, not obeyed. */
export const SGR_MAX = 64;

function caret(b: number): number[] {
  return b === 0x7f ? [0x5e, 0x3f] : [0x5e, b + 0x40];
}

export class TerminalFilter {
  /** Bytes held: a CR, an ESC sequence being read, or 0xC2 (maybe the start of a C1 control). */
  #held: number[] = [];

  push(chunk: Uint8Array): Buffer {
    const out: number[] = [];
    for (const b of chunk) this.#byte(b, out);
    return Buffer.from(out);
  }

  /** What is still held, shown as text (the stream ended inside a sequence). */
  end(): Buffer {
    const out: number[] = [];
    this.#flush(out);
    return Buffer.from(out);
  }

  #flush(out: number[]): void {
    const held = this.#held;
    this.#held = [];
    if (held.length === 0) return;
    if (held[0] === CR) out.push(...caret(CR));
    else if (held[0] === ESC) out.push(...caret(ESC), ...held.slice(1));
    else out.push(...held);
  }

  #byte(b: number, out: number[]): void {
    const held = this.#held;
    if (held.length > 0) {
      const first = held[0]!;
      if (first === CR) {
        this.#held = [];
        if (b === LF) {
          out.push(LF);
          return;
        }
        out.push(...caret(CR));
      } else if (first === ESC) {
        if (held.length === 1 && b === 0x5b) {
          held.push(b);
          return;
        }
        if (held.length >= 2 && ((b >= 0x30 && b <= 0x39) || b === 0x3b || b === 0x3a) && held.length < SGR_MAX) {
          held.push(b);
          return;
        }
        if (held.length >= 2 && b === 0x6d) {
          out.push(...held, b);
          this.#held = [];
          return;
        }
        this.#flush(out);
      } else {
        // 0xC2: a C1 control (U+0080–U+009F) is a control too (0x9B is a CSI on some terminals).
        this.#held = [];
        if (b >= 0x80 && b <= 0x9f) {
          out.push(...caret(ESC), b - 0x40);
          return;
        }
        out.push(first);
      }
    }
    if (b === CR || b === ESC || b === 0xc2) {
      this.#held = [b];
      return;
    }
    if (b === LF || b === TAB || (b >= 0x20 && b !== 0x7f)) {
      out.push(b);
      return;
    }
    out.push(...caret(b));
  }
}

/**
 * Where guest bytes go: `target` itself for a pipe, a file or `--raw`; a
 * filtering writer in front of it for a terminal. Ending the writer never
 * ends `target`.
 */
export function guestSink(target: NodeJS.WriteStream, raw: boolean): Writable {
  if (raw || !target.isTTY) return target as unknown as Writable;
  const filter = new TerminalFilter();
  return new Writable({
    write(chunk: Buffer, _enc, cb) {
      const out = filter.push(chunk);
      if (out.length === 0) cb();
      else target.write(out, (err) => cb(err ?? null));
    },
    final(cb) {
      const rest = filter.end();
      if (rest.length === 0) cb();
      else target.write(rest, (err) => cb(err ?? null));
    },
  });
}
