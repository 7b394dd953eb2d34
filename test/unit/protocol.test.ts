/** The shared protocol definition: exact encodings, framing across chunk boundaries, limits, schemas, credit. */
import { Buffer } from 'node:buffer';
import * as v from 'valibot';
import { describe, expect, it } from 'vitest';
import {
  AgentMessageSchema,
  CreditLedger,
  CreditWindow,
  ExecParamsSchema,
  FrameDecoder,
  HostMessageSchema,
  MAX_CHUNK,
  OWN_LIMITS,
  STREAM_WINDOW,
  UNANNOUNCED_LIMITS,
  UploadParamsSchema,
  encodeData,
  encodeDataParts,
  encodeLine,
  pumpWithCredit,
  sendLimits,
  type Decoded,
  type DecoderOptions,
} from '../../src/protocol/index.ts';

/** A seeded generator of integers in [0, n): the same splits on every run. */
function random(seed: number): (n: number) => number {
  return (n) => {
    seed = (seed * 1103515245 + 12345) % 2 ** 31;
    return seed % n;
  };
}

/** `bytes` cut into chunks of 1..max bytes at random. */
function randomChunks(bytes: Buffer, max: number, rand: (n: number) => number): Buffer[] {
  const chunks: Buffer[] = [];
  for (let pos = 0; pos < bytes.length; ) {
    const n = 1 + rand(max);
    chunks.push(bytes.subarray(pos, pos + n));
    pos += n;
  }
  return chunks;
}

function decodeAll(chunks: Buffer[], options?: DecoderOptions): Decoded[] {
  const out: Decoded[] = [];
  const d = new FrameDecoder((e) => out.push(e), options);
  for (const c of chunks) d.push(c);
  return out;
}

describe('encoding', () => {
  it('writes a control line as compact JSON and a newline', () => {
    expect(encodeLine({ t: 'req', id: 1, m: 'ping', p: {} }).toString()).toBe('{"t":"req","id":1,"m":"ping","p":{}}\n');
  });

  it('writes a data frame as a header line followed by the raw bytes', () => {
    const frame = encodeData(7, 'stdout', Buffer.from([0x00, 0x0a, 0xff]));
    expect(frame).toEqual(Buffer.concat([Buffer.from('{"t":"data","id":7,"s":"stdout","n":3}\n'), Buffer.from([0x00, 0x0a, 0xff])]));
  });

  it('gives the same frame as two parts for a writev, the payload itself and not a copy', () => {
    const payload = Buffer.from([0x00, 0x0a, 0xff]);
    const [header, body] = encodeDataParts(7, 'stdout', payload);
    expect(header.toString()).toBe('{"t":"data","id":7,"s":"stdout","n":3}\n');
    expect(body).toBe(payload);
    expect(Buffer.concat([header, body])).toEqual(encodeData(7, 'stdout', payload));
  });

  it('refuses to encode a payload over MAX_CHUNK', () => {
    expect(() => encodeData(1, 'file', Buffer.alloc(MAX_CHUNK + 1))).toThrow(`data frame of ${MAX_CHUNK + 1} bytes exceeds MAX_CHUNK (${MAX_CHUNK})`);
    expect(() => encodeDataParts(1, 'file', Buffer.alloc(MAX_CHUNK + 1))).toThrow(`data frame of ${MAX_CHUNK + 1} bytes exceeds MAX_CHUNK (${MAX_CHUNK})`);
  });
});

describe('FrameDecoder', () => {
  const binary = Buffer.from(Array.from({ length: 300 }, (_, i) => i % 256)); // contains 0x0a and braces
  const stream = Buffer.concat([
    Buffer.from('\n'),
    encodeLine({ t: 'sync', nonce: 'abc' }),
    encodeData(3, 'stdin', binary),
    encodeLine({ t: 'eof', id: 3, s: 'stdin' }),
    encodeData(4, 'file', Buffer.alloc(0)),
    encodeLine({ t: 'ack', id: 3, s: 'stdout', n: 65536 }),
  ]);
  const expected: Decoded[] = [
    { kind: 'message', message: { t: 'sync', nonce: 'abc' } },
    { kind: 'data', header: { t: 'data', id: 3, s: 'stdin', n: 300 }, payload: binary },
    { kind: 'message', message: { t: 'eof', id: 3, s: 'stdin' } },
    { kind: 'data', header: { t: 'data', id: 4, s: 'file', n: 0 }, payload: Buffer.alloc(0) },
    { kind: 'message', message: { t: 'ack', id: 3, s: 'stdout', n: 65536 } },
  ];

  it('decodes lines and binary frames in one chunk', () => {
    expect(decodeAll([stream])).toEqual(expected);
  });

  it('decodes the same across every split into two chunks and byte by byte', () => {
    for (let cut = 0; cut <= stream.length; cut++) {
      expect(decodeAll([stream.subarray(0, cut), stream.subarray(cut)])).toEqual(expected);
    }
    expect(decodeAll([...stream].map((b) => Buffer.from([b])))).toEqual(expected);
  });

  it('decodes the same across random chunk boundaries', () => {
    const rand = random(42);
    for (let round = 0; round < 200; round++) {
      expect(decodeAll(randomChunks(stream, 64, rand))).toEqual(expected);
    }
  });

  it('keeps nothing of a chunk after push: the caller may overwrite it at once (the agent lends views of its ring)', () => {
    const events: Decoded[] = [];
    const decoder = new FrameDecoder((e) => events.push(e));
    const scratch = Buffer.alloc(7);
    for (let pos = 0; pos < stream.length; pos += scratch.length) {
      const n = stream.copy(scratch, 0, pos, pos + scratch.length);
      decoder.push(scratch.subarray(0, n));
      scratch.fill(0xee); // what a reused buffer would do to anything kept
    }
    expect(events).toEqual(expected);
  });

  describe('with borrow (the monitor relays payloads without a copy)', () => {
    /** Decodes `chunks` through one reused read buffer, the way the monitor reads a client; each payload copied when it is emitted. */
    function relay(chunks: Buffer[], onPushed?: (lent: Buffer[]) => void): { events: Decoded[]; lent: Buffer[][] } {
      const events: Decoded[] = [];
      const lent: Buffer[][] = [];
      let now: Buffer[] = [];
      const d = new FrameDecoder(
        (e) => {
          if (e.kind !== 'data') events.push(e);
          else {
            now.push(e.payload);
            events.push({ ...e, payload: Buffer.from(e.payload) });
          }
        },
        { borrow: true },
      );
      const read = Buffer.alloc(Math.max(...chunks.map((c) => c.length)));
      for (const c of chunks) {
        read.fill(0xee); // the reader reuses its buffer: anything lent from the last read is written over
        c.copy(read);
        now = [];
        d.push(read.subarray(0, c.length));
        lent.push(now);
        onPushed?.(now);
      }
      return { events, lent };
    }

    it('decodes what the copying decoder decodes, across every split in two and random splits', () => {
      for (let cut = 0; cut <= stream.length; cut++) expect(relay([stream.subarray(0, cut), stream.subarray(cut)]).events).toEqual(expected);
      expect(relay([...stream].map((b) => Buffer.from([b]))).events).toEqual(expected);
    });

    it('lends a frame that lies whole in the chunk as a view of it: no allocation, no copy', () => {
      const frame = encodeData(3, 'stdin', binary);
      const chunk = Buffer.concat([frame, frame]);
      const views: Buffer[] = [];
      const d = new FrameDecoder((e) => e.kind === 'data' && views.push(e.payload), { borrow: true });
      d.push(chunk);
      expect(views).toHaveLength(2);
      for (const [i, view] of views.entries()) {
        expect(view.buffer).toBe(chunk.buffer);
        expect(view.byteOffset).toBe(chunk.byteOffset + (i + 1) * frame.length - binary.length);
        expect(view).toEqual(binary);
      }
    });

    it('a frame put together across reads stays intact until the next push, even when the same push starts the next one', () => {
      const a = Buffer.alloc(5000, 0xa1);
      const b = Buffer.alloc(3000, 0xb2);
      const c = Buffer.alloc(7000, 0xc3);
      const all = Buffer.concat([encodeData(1, 'file', a), encodeData(1, 'file', b), encodeData(1, 'file', c), encodeData(1, 'file', a)]);
      // Read 1 ends inside A; read 2 holds A's rest, B whole and C's start; read 3 C's rest and A again, split.
      const cutA = 2000;
      const cutC = all.length - a.length - 6000;
      const cuts = [0, cutA, cutC, all.length - 100, all.length];
      const chunks = cuts.slice(1).map((end, i) => all.subarray(cuts[i], end));
      const intact: boolean[] = [];
      const want = [a, b, c, a];
      let k = 0;
      relay(chunks, (lent) => {
        // Right after the push that lent them (before the next one), every lent payload still holds its bytes.
        for (const p of lent) intact.push(p.equals(want[k++]!));
      });
      expect(intact).toEqual([true, true, true, true]);
    });

    it('decodes random frames across random reads of a reused buffer, each payload intact until the next push', () => {
      const rand = random(7);
      const payloads = Array.from({ length: 60 }, (_, i) => Buffer.alloc(rand(3) === 0 ? rand(40) : 1000 + rand(9000), i + 1));
      const all = Buffer.concat(payloads.flatMap((p, i) => [encodeData(i + 1, 'file', p), encodeLine({ t: 'ack', id: i + 1, s: 'stdout', n: 1 })]));
      for (let round = 0; round < 20; round++) {
        const chunks = randomChunks(all, 12000, rand);
        let k = 0;
        const { events } = relay(chunks, (lent) => {
          for (const p of lent) expect(p.equals(payloads[k++]!)).toBe(true);
        });
        expect(k).toBe(payloads.length);
        expect(events.filter((e) => e.kind === 'message')).toHaveLength(payloads.length);
      }
    });

    it('skips a frame with a bad header in the same way', () => {
      const chunks = [Buffer.concat([Buffer.from('{"t":"data","id":-1,"s":"stdin","n":4}\nab'), Buffer.from('cd'), encodeLine({ t: 'sync', nonce: 'n' })])];
      const { events } = relay(chunks);
      expect(events.map((e) => e.kind)).toEqual(['bad', 'message']);
    });
  });

  it('discards an over-long line up to its newline, reports it once, and goes on', () => {
    const long = Buffer.alloc(300, 0x61);
    const events = decodeAll([long.subarray(0, 100), long.subarray(100), Buffer.from('aaa\n{"t":"cancel","id":1}\n')], { maxLine: 64 });
    expect(events).toEqual([
      { kind: 'bad', reason: 'line-too-long', detail: 'line longer than 64 bytes (100 seen) discarded' },
      { kind: 'message', message: { t: 'cancel', id: 1 } },
    ]);
    // A long line completed within one chunk is reported the same way.
    expect(decodeAll([Buffer.from(`${'b'.repeat(80)}\n{"t":"cancel","id":2}\n`)], { maxLine: 64 })).toEqual([
      { kind: 'bad', reason: 'line-too-long', detail: 'line longer than 64 bytes (81 seen) discarded' },
      { kind: 'message', message: { t: 'cancel', id: 2 } },
    ]);
  });

  it('holds at most maxLine bytes of an unfinished line', () => {
    const d = new FrameDecoder(() => undefined, { maxLine: 1024 });
    for (let i = 0; i < 1000; i++) d.push(Buffer.alloc(100, 0x61));
    expect(d.bufferedBytes).toBe(0);
    d.push(Buffer.from('{"t":"x"'));
    expect(d.bufferedBytes).toBe(0); // still inside the discarded line
    d.push(Buffer.from('\n{"t":"x"'));
    expect(d.bufferedBytes).toBe(8);
  });

  it('reports lines that are not JSON messages', () => {
    expect(decodeAll([Buffer.from('{oops\n[1]\n{"t":5}\n\r\n')])).toEqual([
      { kind: 'bad', reason: 'json', detail: expect.stringMatching(/^not JSON: /) },
      { kind: 'bad', reason: 'not-a-message', detail: 'expected a JSON object with a string "t"' },
      { kind: 'bad', reason: 'not-a-message', detail: 'expected a JSON object with a string "t"' },
    ]);
  });

  it('skips the payload of a data frame with a bad header but a valid length', () => {
    const events = decodeAll([Buffer.from('{"t":"data","id":1,"s":"secret","n":3}\nabc{"t":"cancel","id":1}\n')]);
    expect(events).toEqual([
      { kind: 'bad', reason: 'bad-data-header', detail: expect.stringMatching(/^data frame skipped: s: /) },
      { kind: 'message', message: { t: 'cancel', id: 1 } },
    ]);
  });

  it('treats a frame longer than MAX_CHUNK as fatal; with resyncOn it resumes at the next sync', () => {
    const bytes = Buffer.from(`{"t":"data","id":1,"s":"stdin","n":${MAX_CHUNK + 1}}\nxxxx\n{"t":"req","id":2,"m":"ping"}\n{"t":"sync","nonce":"n"}\n{"t":"cancel","id":3}\n`);
    const fatal = {
      kind: 'fatal',
      reason: 'bad-frame-length',
      detail: `data frame announces ${MAX_CHUNK + 1} bytes; the limit is ${MAX_CHUNK}: the stream cannot be resynchronised from here`,
    };
    expect(decodeAll([bytes])).toEqual([fatal]);
    expect(decodeAll([bytes], { resyncOn: 'sync' })).toEqual([
      fatal,
      { kind: 'message', message: { t: 'sync', nonce: 'n' } },
      { kind: 'message', message: { t: 'cancel', id: 3 } },
    ]);
  });

  it('reset() forgets a partial frame', () => {
    const out: Decoded[] = [];
    const d = new FrameDecoder((e) => out.push(e));
    d.push(Buffer.from('{"t":"data","id":1,"s":"stdin","n":100}\npartial'));
    d.reset();
    d.push(encodeLine({ t: 'sync', nonce: 'x' }));
    expect(out).toEqual([{ kind: 'message', message: { t: 'sync', nonce: 'x' } }]);
  });
});

describe('schemas', () => {
  const ok = (s: v.GenericSchema, x: unknown): boolean => v.safeParse(s, x).success;

  it('accept the messages of the protocol and drop unknown keys', () => {
    expect(v.parse(HostMessageSchema, { t: 'req', id: 1, m: 'exec', p: { argv: ['ls'] }, extra: 1 })).toEqual({ t: 'req', id: 1, m: 'exec', p: { argv: ['ls'] } });
    expect(ok(AgentMessageSchema, { t: 'hello', nonce: 'n', agent: '0.1.0', protocol: 1, hostname: 'h', bootId: 'b' })).toBe(true);
    expect(ok(AgentMessageSchema, { t: 'res', id: 3, e: { code: 'ENOENT', message: 'x' } })).toBe(true);
  });

  it('reject bad messages', () => {
    expect(ok(HostMessageSchema, { t: 'req', id: 0, m: 'ping' })).toBe(false);
    expect(ok(HostMessageSchema, { t: 'req', id: '1', m: 'ping' })).toBe(false);
    expect(ok(HostMessageSchema, { t: 'req', id: 1.5, m: 'ping' })).toBe(false);
    expect(ok(HostMessageSchema, { t: 'req', id: 1, m: 'x'.repeat(65) })).toBe(false);
    expect(ok(HostMessageSchema, { t: 'sync', nonce: '' })).toBe(false);
    expect(ok(HostMessageSchema, { t: 'ack', id: 1, s: 'stdin', n: STREAM_WINDOW + 1 })).toBe(false);
    expect(ok(HostMessageSchema, { t: 'eof', id: 1, s: 'tty' })).toBe(false);
    expect(ok(HostMessageSchema, { t: 'hello', nonce: 'n' })).toBe(false);
    expect(ok(AgentMessageSchema, { t: 'hello', nonce: 'n', agent: 'a', protocol: '1', hostname: 'h', bootId: 'b' })).toBe(false);
    expect(ok(AgentMessageSchema, { t: 'req', id: 1, m: 'ping' })).toBe(false);
    expect(ok(AgentMessageSchema, { t: 'res', id: 1, e: { code: '', message: 'x' } })).toBe(false);
  });

  it('exec takes an argv array, never a shell string', () => {
    expect(ok(ExecParamsSchema, { argv: ['sh', '-c', 'exit 3'], stdin: false })).toBe(true);
    expect(ok(ExecParamsSchema, { argv: 'rm -rf /', stdin: false })).toBe(false);
    expect(ok(ExecParamsSchema, { argv: [], stdin: false })).toBe(false);
    expect(ok(ExecParamsSchema, { argv: ['a\0b'], stdin: false })).toBe(false);
    expect(ok(ExecParamsSchema, { argv: ['env'], env: { 'A=B': 'x' }, stdin: false })).toBe(false);
    expect(ok(ExecParamsSchema, { argv: ['ls'], cwd: 'relative', stdin: false })).toBe(false);
  });

  it('limits in a sync or hello are optional, and bounded when present', () => {
    const sync = { t: 'sync', nonce: 'n' };
    const hello = { t: 'hello', nonce: 'n', agent: 'a', protocol: 1, hostname: 'h', bootId: 'b' };
    expect(v.parse(HostMessageSchema, sync)).toEqual(sync);
    expect(v.parse(HostMessageSchema, { ...sync, lim: OWN_LIMITS })).toEqual({ ...sync, lim: OWN_LIMITS });
    expect(v.parse(AgentMessageSchema, { ...hello, lim: { chunk: 4096, window: 2 ** 40, extra: 1 } })).toEqual({ ...hello, lim: { chunk: 4096, window: 2 ** 40 } });
    for (const lim of [{ chunk: 4095, window: 8192 }, { chunk: 8192 }, { chunk: 2 ** 30 + 1, window: 2 ** 31 }, { chunk: 65536, window: 1.5 }, 'big']) {
      expect(ok(HostMessageSchema, { ...sync, lim })).toBe(false);
      expect(ok(AgentMessageSchema, { ...hello, lim })).toBe(false);
    }
  });

  it('upload wants an absolute path, a size and a lowercase sha256', () => {
    const good = { path: '/root/f', size: 3, sha256: 'a'.repeat(64) };
    expect(ok(UploadParamsSchema, good)).toBe(true);
    expect(ok(UploadParamsSchema, { ...good, path: 'f' })).toBe(false);
    expect(ok(UploadParamsSchema, { ...good, sha256: 'A'.repeat(64) })).toBe(false);
    expect(ok(UploadParamsSchema, { ...good, mode: 0o10000 })).toBe(false);
    expect(ok(UploadParamsSchema, { ...good, size: -1 })).toBe(false);
  });
});

describe('flow control', () => {
  it('sendLimits: what a peer announced, never beyond this side\'s own; protocol 1\'s when it announced none', () => {
    expect(sendLimits(undefined)).toEqual({ chunk: 256 * 1024, window: 1024 * 1024 });
    expect(sendLimits(undefined)).toEqual(UNANNOUNCED_LIMITS);
    expect(sendLimits(OWN_LIMITS)).toEqual({ chunk: MAX_CHUNK, window: STREAM_WINDOW });
    expect(sendLimits({ chunk: 8192, window: 65536 })).toEqual({ chunk: 8192, window: 65536 });
    expect(sendLimits({ chunk: 2 ** 30, window: 2 ** 40 })).toEqual(OWN_LIMITS);
    // A frame larger than the window could never be sent whole.
    expect(sendLimits({ chunk: 65536, window: 16384 })).toEqual({ chunk: 16384, window: 16384 });
    // Never the caller's object: a session may not change another's limits.
    expect(sendLimits(undefined)).not.toBe(UNANNOUNCED_LIMITS);
  });

  it('a ledger acknowledges consumed bytes in batches and detects an overrun', () => {
    const acks: number[] = [];
    const l = new CreditLedger((n) => acks.push(n), { window: 100, ackThreshold: 30 });
    expect(l.received(60)).toBe(true);
    l.consumed(20);
    expect(acks).toEqual([]);
    l.consumed(20);
    expect(acks).toEqual([40]);
    expect(l.outstanding).toBe(20);
    expect(l.received(80)).toBe(true);
    expect(l.received(1)).toBe(false);
  });

  it('a window hands out credit, waits for acks and refuses an ack beyond the window', async () => {
    const w = new CreditWindow(10);
    expect(await w.take(4)).toBe(4);
    expect(await w.take(100)).toBe(6);
    let got = 0;
    const waiting = w.take(5).then((n) => {
      got = n;
    });
    await Promise.resolve();
    expect(got).toBe(0);
    expect(w.grant(3)).toBe(true);
    await waiting;
    expect(got).toBe(3);
    expect(w.grant(11)).toBe(false);
    w.close(new Error('gone'));
    await expect(w.take(1)).rejects.toThrow('gone');
  });

  it('pumpWithCredit never has more than the window in flight and splits at MAX_CHUNK', async () => {
    const w = new CreditWindow(1000);
    const sent: number[] = [];
    let inFlight = 0;
    let maxInFlight = 0;
    const src = [Buffer.alloc(700), Buffer.alloc(900), Buffer.alloc(50)];
    const done = pumpWithCredit(
      src,
      w,
      (c) => {
        sent.push(c.length);
        inFlight += c.length;
        maxInFlight = Math.max(maxInFlight, inFlight);
        // The receiver acknowledges a little later.
        setTimeout(() => {
          inFlight -= c.length;
          w.grant(c.length);
        }, 1);
      },
      { maxChunk: 256 },
    );
    expect(await done).toBe(1650);
    expect(sent.reduce((a, b) => a + b, 0)).toBe(1650);
    expect(Math.max(...sent)).toBeLessThanOrEqual(256);
    expect(maxInFlight).toBeLessThanOrEqual(1000);
  });
});
