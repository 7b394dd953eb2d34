/**
 * The agent's port reader (a worker thread doing blocking reads into a ring
 * shared with the main thread), on real FIFOs: a FIFO, like the virtio-serial
 * port, blocks a read while a writer is connected and returns 0 at once while
 * none is. Tiny rings force the worker to wait for the main thread, and ring
 * positions started near 2^31 and 2^32 cross the int32 sign and wrap-around.
 */
import { Buffer } from 'node:buffer';
import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { open, writeFile, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { PortReadError, readPort, type PortReaderOptions } from '../../guest-agent/src/port-reader.ts';
import { tempFifo } from '../helpers/agent-process.ts';

let dir: string;
let cleanup: () => Promise<void>;
let fifo: string;

beforeEach(async () => {
  ({ dir, fifo, cleanup } = await tempFifo('gspr-'));
});

afterEach(async () => {
  await cleanup();
});

type Event = { data: Buffer } | 'gone';

/** Runs readPort on the FIFO's read end; events are recorded in order. */
async function startReader(options: Partial<PortReaderOptions> = {}, consumeMs = 0) {
  // Opening a FIFO for reading waits for a writer: open both ends together.
  const [reader, writer] = await Promise.all([open(fifo, 'r'), open(fifo, 'w')]);
  const events: Event[] = [];
  const controller = new AbortController();
  let wake: (() => void) | undefined;
  const running = readPort(
    reader.fd,
    (data) => {
      events.push({ data: Buffer.from(data) }); // a view of the ring: copy it
      // A slow consumer: this thread is blocked while the reader thread goes on.
      if (consumeMs > 0) Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, consumeMs);
      wake?.();
    },
    () => {
      events.push('gone');
      wake?.();
    },
    { backoffMinMs: 10, backoffMaxMs: 50, ...options },
    controller.signal,
  );
  let failure: unknown;
  running.catch((err: unknown) => {
    failure = err;
    wake?.();
  });
  const until = async (done: () => boolean, timeoutMs = 20_000): Promise<void> => {
    const deadline = Date.now() + timeoutMs;
    while (!done()) {
      if (failure !== undefined) throw failure;
      if (Date.now() > deadline) throw new Error(`timed out; events: ${summary(events)}`);
      await new Promise<void>((r) => {
        wake = r;
        setTimeout(r, 50);
      });
    }
  };
  return { reader, writer, events, controller, running, until };
}

function summary(events: Event[]): string {
  return events.map((e) => (e === 'gone' ? 'gone' : `data(${e.data.length})`)).join(' ');
}

function bytesOf(events: Event[]): Buffer {
  return Buffer.concat(events.flatMap((e) => (e === 'gone' ? [] : [e.data])));
}

async function writeInPieces(writer: FileHandle, payload: Buffer): Promise<void> {
  for (let pos = 0; pos < payload.length; ) {
    const n = Math.min(payload.length - pos, 1 + Math.floor(Math.random() * 20_000));
    await writer.write(payload, pos, n);
    pos += n;
  }
}

const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

describe('port reader: a worker thread reading into a shared ring', () => {
  it.each([
    ['from 0', 0],
    ['across the int32 sign', 2 ** 31 - 3000],
    ['across 2^32', -3000],
  ])('delivers 4 MiB in order and intact through a 16 KiB ring (positions %s)', async (_what, initialPosition) => {
    const r = await startReader({ ringSize: 16 * 1024, initialPosition });
    const payload = randomBytes(4 * 1024 * 1024);
    await writeInPieces(r.writer, payload);
    await r.until(() => bytesOf(r.events).length >= payload.length);
    expect(r.events).not.toContain('gone');
    expect(sha(bytesOf(r.events))).toBe(sha(payload));
    // No chunk is larger than the ring or the batch limit.
    for (const e of r.events) if (e !== 'gone') expect(e.data.length).toBeLessThanOrEqual(16 * 1024);
    await r.writer.close();
    r.controller.abort();
    await r.running;
    await r.reader.close();
  });

  it('coalesces many small reads into larger chunks when the main thread is busy', async () => {
    const r = await startReader();
    // Keep the main thread busy while the writer (a child process) writes 1000 pieces of 100 bytes.
    const child = execFileSync('sh', ['-c', `for i in $(seq 1000); do printf '%0100d' 0; done > ${fifo}; echo done`], { encoding: 'utf8' });
    expect(child.trim()).toBe('done');
    await r.until(() => bytesOf(r.events).length >= 100_000);
    expect(bytesOf(r.events).equals(Buffer.concat(Array.from({ length: 1000 }, () => Buffer.from('0'.repeat(100)))))).toBe(true);
    // execFileSync blocked the main thread while all 1000 writes happened: they arrive in far fewer chunks.
    expect(r.events.filter((e) => e !== 'gone').length).toBeLessThan(100);
    await r.writer.close();
    r.controller.abort();
    await r.running;
    await r.reader.close();
  });

  it('reports each disconnect once, after every byte the host sent before it', async () => {
    const r = await startReader({ ringSize: 4096 }, 20);
    await r.writer.close(); // no host: reads return 0 from now on
    await r.until(() => r.events.includes('gone'));
    // Idle without a host: exactly one disconnect, no stream of events.
    await new Promise((res) => setTimeout(res, 300));
    expect(r.events).toEqual(['gone']);

    // A host connects, sends 48 KiB and a bit and leaves, all while this
    // thread is blocked; then this thread consumes slowly. The reader thread
    // reads the last 100 bytes and the 0 long before they are taken: the
    // disconnect must still come after the last byte.
    const sent = randomBytes(48 * 1024 + 100);
    const file = join(dir, 'sent');
    await writeFile(file, sent);
    execFileSync('sh', ['-c', 'cat "$1" > "$2"', 'sh', file, fifo]);
    await r.until(() => r.events.filter((e) => e === 'gone').length === 2);
    expect(r.events.at(-1)).toBe('gone');
    expect(bytesOf(r.events).equals(sent)).toBe(true);

    // The next host is read as before.
    const more = randomBytes(32 * 1024);
    const writer2 = await open(fifo, 'w');
    await writeInPieces(writer2, more);
    await writer2.close();
    await r.until(() => r.events.filter((e) => e === 'gone').length === 3);
    expect(r.events.at(-1)).toBe('gone');
    expect(bytesOf(r.events).equals(Buffer.concat([sent, more]))).toBe(true);
    r.controller.abort();
    await r.running;
    await r.reader.close();
  });

  it('ends when aborted while no host is connected', async () => {
    const r = await startReader();
    await r.writer.close();
    await r.until(() => r.events.includes('gone'));
    r.controller.abort();
    await r.running;
    await r.reader.close();
  });

  it('rejects with the errno when a read fails', async () => {
    // A descriptor open for writing only: read(2) fails with EBADF.
    const fh = await open(join(dir, 'plain'), 'w');
    const err = await readPort(fh.fd, () => undefined, () => undefined, { backoffMinMs: 10, backoffMaxMs: 50 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(PortReadError);
    expect((err as PortReadError).code).toBe('EBADF');
    await fh.close();
  });

  it('refuses a ring size that is not a power of two', async () => {
    await expect(readPort(0, () => undefined, () => undefined, { ringSize: 3000, backoffMinMs: 10, backoffMaxMs: 50 })).rejects.toThrow(
      /ring size 3000 is not a power of two/,
    );
  });
});
