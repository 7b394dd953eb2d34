/**
 * Guest output the host keeps, bounded: whatever a guest, a build or a
 * program prints (one endless line included) costs the host at most a fixed
 * amount of memory.
 */
import { StringDecoder } from 'node:string_decoder';
import { Writable } from 'node:stream';

/** The most of one progress line kept; the rest of a longer line is cut from its start, and the line says so. */
export const LINE_MAX_CHARS = 16 * 1024;
/** The most of a program's last output kept for an error message. */
export const TAIL_MAX_BYTES = 64 * 1024;

/** A Writable that turns bytes into lines for `onLine`, each at most `max` characters (its end kept). */
export function lineWriter(onLine: (line: string) => void, max = LINE_MAX_CHARS): Writable {
  const decoder = new StringDecoder('utf8');
  let rest = '';
  let cut = 0;
  const take = (text: string): void => {
    rest += text;
    if (rest.length > max) {
      cut += rest.length - max;
      rest = rest.slice(-max);
    }
  };
  const emit = (): void => {
    onLine(cut > 0 ? `[${cut} characters of this line cut] ${rest}` : rest);
    rest = '';
    cut = 0;
  };
  const feed = (text: string): void => {
    let from = 0;
    for (let nl = text.indexOf('\n'); nl !== -1; nl = text.indexOf('\n', from)) {
      take(text.slice(from, nl));
      emit();
      from = nl + 1;
    }
    take(text.slice(from));
  };
  return new Writable({
    write(chunk: Buffer, _e, cb) {
      feed(decoder.write(chunk));
      cb();
    },
    final(cb) {
      feed(decoder.end());
      if (rest || cut) emit();
      cb();
    },
  });
}

/** A Writable that keeps only the last `max` bytes written to it. */
export function tailCollector(max = TAIL_MAX_BYTES): { stream: Writable; bytes: () => Buffer } {
  let kept = Buffer.alloc(0);
  return {
    stream: new Writable({
      write(chunk: Buffer, _e, cb) {
        kept = chunk.length >= max ? Buffer.from(chunk.subarray(chunk.length - max)) : Buffer.concat([kept.length + chunk.length > max ? kept.subarray(kept.length + chunk.length - max) : kept, chunk]);
        cb();
      },
    }),
    bytes: () => kept,
  };
}

/** Why a guest command failed, in one line: the last line it printed (at most 300 characters), or its exit. Pure. */
export function failureLine(said: Buffer, r: { exitCode: number | null; signal?: string | null }): string {
  return said.toString('utf8').trim().split('\n').at(-1)?.slice(0, 300) || `exit ${r.exitCode ?? r.signal}`;
}
