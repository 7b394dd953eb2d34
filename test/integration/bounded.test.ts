/**
 * Guest output the host keeps (src/runtime/bounded.ts), fed for real through
 * streams: one endless line of 128 MiB, as a build step or a program could
 * print, costs the host a bounded line and a bounded tail. Before, the
 * deploy's progress writer appended everything to one string and split it
 * again on every chunk, and the failed-start tail kept every byte.
 */
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { describe, expect, it } from 'vitest';
import { LINE_MAX_CHARS, TAIL_MAX_BYTES, lineWriter, tailCollector } from '../../src/runtime/bounded.ts';

const MiB = 1024 * 1024;

/** `total` bytes of `x` in 64 KiB chunks, then `after`. */
function endless(total: number, after = ''): Readable {
  const chunk = Buffer.alloc(64 * 1024, 'x');
  let sent = 0;
  return new Readable({
    read() {
      if (sent >= total) {
        if (after) this.push(Buffer.from(after));
        this.push(null);
        return;
      }
      sent += chunk.length;
      this.push(chunk);
    },
  });
}

describe('bounded guest output', () => {
  it('lineWriter: an endless line is kept to its last LINE_MAX_CHARS, says how much was cut, and the next line is whole', async () => {
    const lines: string[] = [];
    const heapBefore = process.memoryUsage().heapUsed;
    let peak = 0;
    const w = lineWriter((l) => lines.push(l));
    const source = endless(128 * MiB, '\nnext line\nlast');
    source.on('data', () => (peak = Math.max(peak, process.memoryUsage().heapUsed - heapBefore)));
    await pipeline(source, w);
    expect(lines).toHaveLength(3);
    expect(lines[0]).toBe(`[${128 * MiB - LINE_MAX_CHARS} characters of this line cut] ${'x'.repeat(LINE_MAX_CHARS)}`);
    expect(lines.slice(1)).toEqual(['next line', 'last']);
    // The 128 MiB never stood in memory at once (a string of it would be 128 MiB of heap).
    expect(peak).toBeLessThan(64 * MiB);
  });

  it('lineWriter: a character split across two chunks stays one character', async () => {
    const lines: string[] = [];
    const w = lineWriter((l) => lines.push(l));
    const euro = Buffer.from('€\n');
    await pipeline(Readable.from([euro.subarray(0, 1), euro.subarray(1)]), w);
    expect(lines).toEqual(['€']);
  });

  it('tailCollector: keeps exactly the last TAIL_MAX_BYTES of 128 MiB', async () => {
    const tail = tailCollector();
    await pipeline(endless(128 * MiB, 'THE END'), tail.stream);
    const kept = tail.bytes();
    expect(kept.length).toBe(TAIL_MAX_BYTES);
    expect(kept.subarray(-7).toString()).toBe('THE END');
    expect(kept.subarray(0, -7).every((b) => b === 0x78)).toBe(true);
  });
});
