/**
 * console.log as the monitor writes it, fed through a real unix socket as
 * QEMU's console chardev feeds it, at full speed: a 100 MiB flood stays under
 * the cap (files rotate), the writer's memory stays bounded, the newest bytes
 * are kept, and a follower gets the files' contents and then every new byte.
 */
import { readFile, readdir, stat } from 'node:fs/promises';
import { connect, createServer, type Socket } from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ConsoleLog, pipeConsole } from '../../src/monitor/console.ts';
import { CONSOLE_READ_BYTES, ReusedReads } from '../../src/monitor/sockets.ts';
import { tempDir } from '../helpers/agent-process.ts';

let dir: string;
let cleanup: () => Promise<void>;

beforeAll(async () => {
  ({ dir, cleanup } = await tempDir('gsc-'));
});
afterAll(async () => {
  await cleanup?.();
});

/** A console chardev stand-in: a server that writes `total` bytes of a repeating pattern to whoever connects, then closes. */
async function flooder(path: string, total: number, chunk: Buffer): Promise<{ done: Promise<void> }> {
  let done!: () => void;
  const finished = new Promise<void>((r) => (done = r));
  const server = createServer(async (s: Socket) => {
    let sent = 0;
    while (sent < total) {
      const piece = chunk.subarray(0, Math.min(chunk.length, total - sent));
      sent += piece.length;
      if (!s.write(piece)) await new Promise((r) => s.once('drain', r));
    }
    s.end(() => {
      server.close();
      done();
    });
  });
  await new Promise<void>((r) => server.listen(path, () => r()));
  return { done: finished };
}

describe('the monitor\'s console.log', () => {
  it('a 100 MiB flood: two files of at most 1 MiB, the newest bytes kept, memory bounded', async () => {
    const sock = join(dir, 'console.sock');
    const path = join(dir, 'console.log');
    const pattern = Buffer.alloc(64 * 1024);
    for (let i = 0; i < pattern.length; i++) pattern[i] = 0x61 + (i % 26);
    const total = 100 * 1024 * 1024;
    const src = await flooder(sock, total, pattern);
    const log = await ConsoleLog.open({ path, maxBytes: 1024 * 1024, keep: 1 });
    const rssBefore = process.memoryUsage().rss;
    let peak = rssBefore;
    const watch = setInterval(() => (peak = Math.max(peak, process.memoryUsage().rss)), 50);
    const reads = new ReusedReads();
    const s = connect({ path: sock, onread: reads.onread });
    const closed = new Promise((r) => s.once('close', r));
    pipeConsole(s, reads, log, (e) => {
      throw e;
    });
    await src.done;
    await closed;
    await log.close();
    clearInterval(watch);
    expect(log.bytes).toBe(total);
    expect(log.rotations).toBe(99);
    expect((await readdir(dir)).filter((f) => f.startsWith('console.log')).sort()).toEqual(['console.log', 'console.log.1']);
    expect((await stat(path)).size).toBe(1024 * 1024);
    expect((await stat(`${path}.1`)).size).toBe(1024 * 1024);
    // The last bytes written are the last bytes of console.log.
    const tail = (await readFile(path)).subarray(-26);
    const want = Buffer.alloc(26);
    const end = total % pattern.length || pattern.length;
    for (let i = 0; i < 26; i++) want[i] = 0x61 + ((end - 26 + i) % 26);
    expect(tail.equals(want)).toBe(true);
    // Nothing of the flood was held: far less than the 100 MiB that went through.
    expect(peak - rssBefore).toBeLessThan(48 * 1024 * 1024);
  }, 120_000);

  it('a console read a byte at a time (a guest\'s UART): every byte in order, in fewer writes than reads (what came in during a write goes in the next one)', async () => {
    const sock = join(dir, 'uart.sock');
    const path = join(dir, 'uart.log');
    const total = 64 * 1024;
    const want = Buffer.alloc(total);
    for (let i = 0; i < total; i++) want[i] = 0x41 + (i % 58);
    let reads = 0;
    const server = createServer(async (c: Socket) => {
      // One byte per write, yielding between writes, as QEMU's 16550 emits them.
      for (let i = 0; i < total; i++) {
        c.write(want.subarray(i, i + 1));
        if (i % 16 === 15) await new Promise((r) => setImmediate(r));
      }
      c.end(() => server.close());
    });
    await new Promise<void>((r) => server.listen(sock, () => r()));
    const log = await ConsoleLog.open({ path, maxBytes: 1024 * 1024, keep: 1 });
    const counted = new ReusedReads();
    const s = connect({ path: sock, onread: counted.onread });
    // Each read is one append.
    const append = log.append.bind(log);
    log.append = (buf: Buffer, n: number) => {
      reads++;
      return append(buf, n);
    };
    const closed = new Promise((r) => s.once('close', r));
    let writes = 0;
    const write = log.write.bind(log);
    log.write = (chunk: Buffer) => {
      writes++;
      return write(chunk);
    };
    pipeConsole(s, counted, log, (e) => {
      throw e;
    });
    await closed;
    await log.close();
    expect((await readFile(path)).equals(want)).toBe(true);
    expect(log.bytes).toBe(total);
    expect(reads).toBeGreaterThan(0);
    expect(writes).toBeLessThan(reads);
  }, 60_000);

  it('append holds two reads\' worth while a write is in flight, then asks for a pause, and says when there is room again', async () => {
    const path = join(dir, 'stage.log');
    const log = await ConsoleLog.open({ path, maxBytes: 4 * 1024 * 1024, keep: 1 });
    let rooms = 0;
    const room = new Promise<void>((resolve) =>
      log.feedBy(
        () => {
          rooms++;
          resolve();
        },
        (e) => {
          throw e;
        },
      ),
    );
    const read = Buffer.alloc(CONSOLE_READ_BYTES);
    const answers: boolean[] = [];
    for (let i = 0; i < 3; i++) {
      read.fill(0x30 + i);
      answers.push(log.append(read, read.length));
    }
    // The first went to the disk at once; the next two wait for it, and fill the stage.
    expect(answers).toEqual([true, true, false]);
    await room;
    expect(rooms).toBeGreaterThan(0);
    await log.close();
    const written = await readFile(path);
    expect(written.length).toBe(3 * CONSOLE_READ_BYTES);
    for (let i = 0; i < 3; i++) expect(written[i * CONSOLE_READ_BYTES]).toBe(0x30 + i);
  });

  it('a new run rotates the last run\'s log; a follower gets the files, then every new byte, in order', async () => {
    const path = join(dir, 'follow.log');
    const first = await ConsoleLog.open({ path, maxBytes: 8, keep: 2 });
    await first.write(Buffer.from('run one\n'));
    await first.close();
    const log = await ConsoleLog.open({ path, maxBytes: 8, keep: 2 });
    expect(await readFile(`${path}.1`, 'utf8')).toBe('run one\n');
    await log.write(Buffer.from('abcdefghij'));
    const seen: string[] = [];
    const unsubscribe = await log.follow({ live: (c) => seen.push(`live:${c}`), past: async (c) => void seen.push(`past:${c}`) });
    await log.write(Buffer.from('KLM'));
    unsubscribe();
    await log.write(Buffer.from('not seen'));
    await log.close();
    // keep 2: run one (now .2), abcdefgh (.1), then ij in the current file, then the live bytes.
    expect(seen).toEqual(['past:run one\n', 'past:abcdefgh', 'past:ij', 'live:KLM']);
  });
});
