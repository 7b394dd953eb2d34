/**
 * The agent's outgoing side on a real FIFO (the agent's test transport, which
 * like the virtio-serial port blocks a write while the reader lags): frames
 * queued while a write is in flight go out together, in order, byte for byte;
 * a frame larger than a batch goes alone; dropQueued forgets what a new
 * session must not see. Plus the pure batching and bookkeeping.
 */
import { Buffer } from 'node:buffer';
import { randomBytes } from 'node:crypto';
import { open } from 'node:fs/promises';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { FdLink, LINK_WRITE_BYTES, LINK_WRITE_FRAMES, consume, writeBatch } from '../../guest-agent/src/link.ts';
import { tempFifo } from '../helpers/agent-process.ts';

describe('writeBatch / consume (pure)', () => {
  const b = (n: number, fill = 1) => Buffer.alloc(n, fill);

  it('takes queued frames up to the byte and frame limits, and a lone large frame alone', () => {
    expect(writeBatch([])).toEqual([]);
    const small = [b(10), b(20), b(30)];
    expect(writeBatch(small)).toEqual(small);
    const big = [b(LINK_WRITE_BYTES - 10), b(20), b(5)];
    expect(writeBatch(big).map((x) => x.length)).toEqual([LINK_WRITE_BYTES - 10]);
    expect(writeBatch([b(LINK_WRITE_BYTES * 2), b(1)]).map((x) => x.length)).toEqual([LINK_WRITE_BYTES * 2]);
    const many = Array.from({ length: LINK_WRITE_FRAMES + 5 }, () => b(1));
    expect(writeBatch(many)).toHaveLength(LINK_WRITE_FRAMES);
  });

  it('consume drops whole frames and keeps the rest of one written in part', () => {
    const q = [Buffer.from('abc'), Buffer.from('defg'), Buffer.from('hi')];
    consume(q, 5);
    expect(q.map((x) => x.toString())).toEqual(['fg', 'hi']);
    consume(q, 2);
    expect(q.map((x) => x.toString())).toEqual(['hi']);
    consume(q, 0);
    expect(q.map((x) => x.toString())).toEqual(['hi']);
    consume(q, 2);
    expect(q).toEqual([]);
  });
});

describe('FdLink on a FIFO', () => {
  let cleanup: () => Promise<void>;
  let fifo: string;

  beforeEach(async () => {
    ({ fifo, cleanup } = await tempFifo('gslk-'));
  });

  afterEach(async () => {
    await cleanup();
  });

  async function pair() {
    const [reader, writer] = await Promise.all([open(fifo, 'r'), open(fifo, 'w')]);
    const link = new FdLink(writer.fd, () => undefined);
    const read = async (n: number): Promise<Buffer> => {
      const out = Buffer.alloc(n);
      let got = 0;
      while (got < n) {
        const r = await reader.read(out, got, n - got);
        if (r.bytesRead === 0) break;
        got += r.bytesRead;
      }
      return out.subarray(0, got);
    };
    return { link, read, close: async () => Promise.all([reader.close(), writer.close()]) };
  }

  it('many frames, small and larger than a batch, arrive in order and whole, while the reader lags', async () => {
    const { link, read, close } = await pair();
    try {
      // More than the FIFO holds (64 KiB): the first write blocks on the pool while the rest queue up.
      const frames = [randomBytes(100_000), ...Array.from({ length: 300 }, (_, i) => randomBytes(1 + (i * 37) % 900)), randomBytes(LINK_WRITE_BYTES + 1234), randomBytes(7)];
      for (const f of frames) link.write(f);
      const expected = Buffer.concat(frames);
      const got = await read(expected.length);
      expect(got.length).toBe(expected.length);
      expect(got.equals(expected)).toBe(true);
      await link.whenWritable();
    } finally {
      await close();
    }
  });

  it('dropQueued forgets the frames not yet handed to a write; the one in flight still completes whole', async () => {
    const { link, read, close } = await pair();
    try {
      const first = randomBytes(200_000); // blocks in the pool: the FIFO holds 64 KiB
      link.write(first);
      await new Promise((r) => setTimeout(r, 50));
      link.write(Buffer.from('stale'));
      link.dropQueued();
      const fresh = Buffer.from('fresh');
      link.write(fresh);
      const got = await read(first.length + fresh.length);
      expect(got.subarray(0, first.length).equals(first)).toBe(true);
      expect(got.subarray(first.length).toString()).toBe('fresh');
    } finally {
      await close();
    }
  });
});
