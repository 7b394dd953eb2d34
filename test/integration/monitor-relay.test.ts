/**
 * The monitor's socket against the real bundled agent (`--listen` mode, on
 * the host), with real sockets and real concurrent clients: the monitor's one
 * agent session serves many clients at once, each client's streams keep their
 * own flow control, a client that goes away has its requests cancelled in the
 * guest, a client that breaks the window is refused alone, and a lost agent
 * session fails what was in flight and comes back by itself.
 */
import { createHash, randomBytes } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { connect, createServer, type Socket } from 'node:net';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MAX_CHUNK, OWN_LIMITS, STREAM_WINDOW, UNANNOUNCED_LIMITS, encodeData, encodeLine, sendLimits, writeDataFrame } from '../../src/protocol/index.ts';
import { AgentClient, AgentRemoteError } from '../../src/serial/index.ts';
import { AgentLink } from '../../src/monitor/agent-link.ts';
import { MonitorServer, readInto } from '../../src/monitor/server.ts';
import { startHostileGuest } from '../helpers/agent-hostile.ts';
import { listenAgent, tempDir, type RunningAgent } from '../helpers/agent-process.ts';

let dir: string;
let cleanup: () => Promise<void>;
let agent: RunningAgent;
let link: AgentLink;
let server: MonitorServer;
let monitorSock: string;
const logs: string[] = [];

function sink(): { w: Writable; bytes: () => number; text: () => string } {
  const parts: Buffer[] = [];
  let n = 0;
  const w = new Writable({
    write(chunk: Buffer, _e, cb) {
      parts.push(chunk);
      n += chunk.length;
      cb();
    },
  });
  return { w, bytes: () => n, text: () => Buffer.concat(parts).toString('utf8') };
}

/** A client speaking the protocol by hand: connected and synced; `text` is everything it has received. */
async function rawClient(path: string, nonce: string): Promise<{ s: Socket; text: () => string }> {
  const s = connect(path);
  let text = '';
  s.setEncoding('latin1');
  s.on('data', (d: string) => (text += d));
  await new Promise<void>((r) => s.once('connect', () => r()));
  s.write(`\n${JSON.stringify({ t: 'sync', nonce })}\n`);
  return { s, text: () => text };
}

const client = () => AgentClient.connect(monitorSock, { timeoutMs: 10_000, requestTimeoutMs: 30_000 });

beforeAll(async () => {
  ({ dir, cleanup } = await tempDir('gsr-'));
  const agentSock = join(dir, 'agent.sock');
  agent = await listenAgent(agentSock);
  link = new AgentLink({ socket: agentSock, log: (l) => logs.push(l), onReady: () => undefined });
  link.start();
  monitorSock = join(dir, 'monitor.sock');
  server = new MonitorServer(monitorSock, { session: (s) => link.session(s), hello: () => ({ agent: link.lastHello?.agent ?? '', hostname: link.lastHello?.hostname ?? '', bootId: '', ready: link.ready, limits: link.lastHello?.limits ?? sendLimits(undefined) }) }, {});
  await server.listen();
  // The agent's session first: the hello below reports it.
  for (let i = 0; !link.ready; i++) {
    if (i > 500) throw new Error('the agent link did not become ready');
    await new Promise((r) => setTimeout(r, 10));
  }
});

afterAll(async () => {
  await server?.close('test over');
  await link?.stop(new Error('test over'));
  await agent?.kill();
  await cleanup?.();
});

describe('monitor.sock relays the agent protocol', () => {
  it('says hello as the agent, via the monitor; the socket is owner-only', async () => {
    const c = await client();
    expect(c.hello).toMatchObject({ protocol: 1, via: 'monitor', ready: true });
    expect(c.hello.agent).toMatch(/^\d+\.\d+\.\d+/);
    await c.ping();
    await c.close();
    const { stdout } = await execa('stat', ['-c', '%a', monitorSock]);
    expect(stdout).toBe('600');
  });

  it('8 clients at once: long output, pings, an upload, a download, a streaming exec: all right', async () => {
    const blob = join(dir, 'blob.bin');
    const data = randomBytes(8 * 1024 * 1024);
    await writeFile(blob, data);
    const sha = createHash('sha256').update(data).digest('hex');
    const clients = await Promise.all(Array.from({ length: 8 }, () => client()));
    const long = sink();
    const ticks = sink();
    const results = await Promise.all([
      clients[0]!.exec(['sh', '-c', 'i=0; while [ $i -lt 20000 ]; do echo "line $i"; i=$((i+1)); done'], { stdout: long.w }),
      (async () => {
        const rtts: number[] = [];
        for (let i = 0; i < 20; i++) rtts.push((await clients[1]!.ping()).rttMs);
        return rtts.length;
      })(),
      clients[2]!.upload(blob, join(dir, 'up.bin')),
      clients[3]!.download(blob, join(dir, 'down.bin')),
      clients[4]!.exec(['sh', '-c', 'for i in 1 2 3 4 5; do echo tick $i; sleep 0.1; done'], { stdout: ticks.w }),
      clients[5]!.info(),
      clients[6]!.exec(['sh', '-c', 'exit 3']),
      clients[7]!.stat(blob),
    ]);
    expect(results[0]).toEqual({ exitCode: 0, signal: null, timedOut: false });
    expect(long.text().split('\n').filter(Boolean)).toHaveLength(20000);
    expect(long.text().endsWith('line 19999\n')).toBe(true);
    expect(results[1]).toBe(20);
    expect(results[2]).toEqual({ bytes: data.length, sha256: sha });
    expect(createHash('sha256').update(await readFile(join(dir, 'up.bin'))).digest('hex')).toBe(sha);
    expect(results[3]).toMatchObject({ bytes: data.length, sha256: sha });
    expect(ticks.text()).toBe('tick 1\ntick 2\ntick 3\ntick 4\ntick 5\n');
    expect(results[6]).toEqual({ exitCode: 3, signal: null, timedOut: false });
    expect(results[7]).toMatchObject({ type: 'file', size: data.length });
    await Promise.all(clients.map((c) => c.close()));
  }, 60_000);

  it('a slow client slows its own stream only: the agent holds back, others are served', async () => {
    const slow = await client();
    const fast = await client();
    let delivered = 0;
    const stalled: Array<() => void> = [];
    const never = new Writable({
      highWaterMark: 1,
      write(chunk: Buffer, _e, cb) {
        delivered += chunk.length;
        stalled.push(cb); // consumed only when the test says so
      },
    });
    // 64 MiB of output the slow client does not read.
    const flood = slow.exec(['sh', '-c', 'head -c 67108864 /dev/zero'], { stdout: never });
    await new Promise((r) => setTimeout(r, 1500));
    const pings = [];
    for (let i = 0; i < 10; i++) pings.push(await fast.ping());
    expect(pings).toHaveLength(10);
    // What reached the slow client is bounded by its window, not by what the command wrote.
    expect(delivered).toBeLessThanOrEqual(STREAM_WINDOW + MAX_CHUNK);
    // The slow client goes away: its command is cancelled, nobody waits for its bytes.
    await slow.close();
    await expect(flood).rejects.toMatchObject({ code: 'EAGENT_CLOSED' });
    await fast.close();
  }, 60_000);

  it('a client that goes away has its requests cancelled in the guest; the other clients are untouched', async () => {
    const marker = `goship-relay-marker-${randomBytes(4).toString('hex')}`;
    const gone = await client();
    const stays = await client();
    const running = gone.exec(['sh', '-c', `sleep 300; echo ${marker}`]).catch((e: unknown) => e);
    const out = sink();
    const longer = stays.exec(['sh', '-c', 'sleep 1; echo still here'], { stdout: out.w });
    const pgrep = async () => (await execa('pgrep', ['-f', marker], { reject: false })).stdout.trim();
    for (let i = 0; i < 100 && !(await pgrep()); i++) await new Promise((r) => setTimeout(r, 20));
    expect(await pgrep()).not.toBe('');
    // The client "dies": its socket closes.
    await gone.close();
    await running;
    let left = 'x';
    for (let i = 0; i < 100 && left; i++) {
      left = await pgrep();
      if (left) await new Promise((r) => setTimeout(r, 20));
    }
    expect(left).toBe('');
    expect(await longer).toMatchObject({ exitCode: 0 });
    expect(out.text()).toBe('still here\n');
    await stays.close();
  }, 30_000);

  it('a client that overruns its window is refused (EFLOW) on that request alone', async () => {
    const { s, text } = await rawClient(monitorSock, 'n-overrun');
    s.write(encodeLine({ t: 'req', id: 1, m: 'exec', p: { argv: ['sh', '-c', 'sleep 5; cat > /dev/null'], stdin: true } }));
    const chunk = Buffer.alloc(MAX_CHUNK, 0x61);
    for (let sent = 0; sent <= STREAM_WINDOW + MAX_CHUNK; sent += chunk.length) s.write(encodeData(1, 'stdin', chunk));
    s.write(encodeLine({ t: 'req', id: 2, m: 'ping', p: { data: 'after' } }));
    for (let i = 0; i < 200 && !(text().includes('"id":1,"e"') && text().includes('"id":2,"r"')); i++) await new Promise((r) => setTimeout(r, 20));
    s.destroy();
    const lines = text().split('\n').filter((l) => l.startsWith('{"t":"res"')).map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(lines).toContainEqual({ t: 'res', id: 1, e: { code: 'EFLOW', message: 'stream stdin exceeded its flow-control window' } });
    expect(lines).toContainEqual({ t: 'res', id: 2, r: { data: 'after', time: expect.any(Number) } });
  }, 30_000);

  it('the monitor announces its agent\'s limits: a client keeps to them, a frame beyond them is refused (EFLOW)', async () => {
    const c = await client();
    expect(c.hello.limits).toEqual(OWN_LIMITS);
    await c.close();
    // A monitor whose agent announced no limits (an older image's) passes protocol 1's on.
    const path = join(dir, 'older.sock');
    const own = new MonitorServer(path, { session: (sig) => link.session(sig), hello: () => ({ agent: 'older', hostname: '', bootId: '', ready: true, limits: UNANNOUNCED_LIMITS }) }, {});
    await own.listen();
    try {
      const older = await AgentClient.connect(path, { timeoutMs: 10_000, requestTimeoutMs: 30_000 });
      expect(older.hello.limits).toEqual(UNANNOUNCED_LIMITS);
      const data = randomBytes(3 * 1024 * 1024);
      const blob = join(dir, 'older.bin');
      await writeFile(blob, data);
      expect(await older.upload(blob, join(dir, 'older-up.bin'))).toEqual({ bytes: data.length, sha256: createHash('sha256').update(data).digest('hex') });
      await older.close();
      const { s, text } = await rawClient(path, 'n-big');
      s.write(encodeLine({ t: 'req', id: 1, m: 'exec', p: { argv: ['cat'], stdin: true } }));
      s.write(encodeData(1, 'stdin', Buffer.alloc(UNANNOUNCED_LIMITS.chunk + 1, 0x61)));
      for (let i = 0; i < 200 && !text().includes('"id":1,"e"'); i++) await new Promise((r) => setTimeout(r, 20));
      s.destroy();
      expect(text()).toContain(
        JSON.stringify({ t: 'res', id: 1, e: { code: 'EFLOW', message: `a frame of ${UNANNOUNCED_LIMITS.chunk + 1} bytes on stream stdin: the limit announced is ${UNANNOUNCED_LIMITS.chunk}` } }),
      );
    } finally {
      await own.close('test over');
    }
  }, 30_000);

  it('a client granted more than its agent takes (it synced before the agent\'s first hello) is fitted to the agent', async () => {
    const agentLimits = { chunk: 64 * 1024, window: 192 * 1024 };
    const older = await startHostileGuest(dir, { lim: agentLimits });
    const peerP = older.nextPeer();
    const olderLink = new AgentLink({ socket: older.path, log: () => undefined, onReady: () => undefined });
    olderLink.start();
    const path = join(dir, 'fit.sock');
    const own = new MonitorServer(path, { session: (sig) => olderLink.session(sig), hello: () => ({ agent: '', hostname: '', bootId: '', ready: olderLink.ready, limits: OWN_LIMITS }) }, {});
    await own.listen();
    try {
      const c = await AgentClient.connect(path, { timeoutMs: 10_000, requestTimeoutMs: 30_000 });
      expect(c.hello.limits).toEqual(OWN_LIMITS);
      const peer = await peerP;
      const data = randomBytes(2 * MAX_CHUNK + 777);
      const blob = join(dir, 'fit.bin');
      await writeFile(blob, data);
      const up = c.upload(blob, '/tmp/fit.bin');
      const req = await peer.nextRequest('upload');
      let got = 0;
      while (got < data.length) {
        // What reaches the agent before it acknowledges: its window exactly, in its frame size, then nothing.
        const want = Math.min(agentLimits.window, data.length - got);
        const sizes = await peer.frames(want, 5000);
        expect(Math.max(...sizes)).toBeLessThanOrEqual(agentLimits.chunk);
        expect(sizes.reduce((a, b) => a + b, 0)).toBe(want);
        if (got + want < data.length) expect(await peer.frames(1, 300)).toEqual([]);
        got += want;
        peer.sendLine({ t: 'ack', id: req.id, s: 'file', n: want });
      }
      await peer.nextMessage('eof');
      const sha256 = createHash('sha256').update(data).digest('hex');
      peer.sendLine({ t: 'res', id: req.id, r: { bytes: data.length, sha256 } });
      expect(await up).toEqual({ bytes: data.length, sha256 });
      await c.close();
    } finally {
      await own.close('test over');
      await olderLink.stop(new Error('test over'));
      await older.close();
    }
  }, 30_000);

  it('an upload arrives intact while the agent stalls: the client\'s reads wait for what the agent\'s socket still holds of them', async () => {
    const data = randomBytes(32 * 1024 * 1024);
    const blob = join(dir, 'stall.bin');
    await writeFile(blob, data);
    const sha = createHash('sha256').update(data).digest('hex');
    const c = await client();
    const waits = server.stats.readWaits;
    // The agent stops reading (SIGSTOP), so the monitor's writes toward it stay queued on its socket, views of the client's read buffer.
    process.kill(agent.pid, 'SIGSTOP');
    const up = c.upload(blob, join(dir, 'stall-up.bin'));
    try {
      await new Promise((r) => setTimeout(r, 300));
      process.kill(agent.pid, 'SIGCONT');
      for (let i = 0; i < 3; i++) {
        await new Promise((r) => setTimeout(r, 20));
        process.kill(agent.pid, 'SIGSTOP');
        await new Promise((r) => setTimeout(r, 100));
        process.kill(agent.pid, 'SIGCONT');
      }
    } finally {
      process.kill(agent.pid, 'SIGCONT');
    }
    expect(await up).toEqual({ bytes: data.length, sha256: sha });
    expect(createHash('sha256').update(await readFile(join(dir, 'stall-up.bin'))).digest('hex')).toBe(sha);
    expect(server.stats.readWaits).toBeGreaterThan(waits);
    await c.close();
  }, 60_000);

  it('close() ends every session and resolves only once each client\'s socket has closed', async () => {
    const path = join(dir, 'closing.sock');
    const own = new MonitorServer(path, { session: (sig) => link.session(sig), hello: () => ({ agent: '', hostname: '', bootId: '', ready: true, limits: OWN_LIMITS }) }, {});
    await own.listen();
    const order: string[] = [];
    // A client that closes its side a while after the monitor ended the session.
    const s = connect({ path, allowHalfOpen: true });
    await new Promise<void>((r) => s.once('connect', () => r()));
    s.write('\n{"t":"sync","nonce":"n-close"}\n');
    let text = '';
    s.on('data', (d: Buffer) => (text += d.toString()));
    s.on('end', () => {
      order.push('end');
      setTimeout(() => {
        order.push('client ended');
        s.end();
      }, 300);
    });
    for (let i = 0; i < 200 && !text.includes('"t":"hello"'); i++) await new Promise((r) => setTimeout(r, 10));
    expect(text).toContain('"via":"monitor"');
    await own.close('test over');
    order.push('resolved');
    expect(order).toEqual(['end', 'client ended', 'resolved']);
    expect(own.clients).toBe(0);
  }, 30_000);

  it('an agent that goes away fails what was in flight; the link comes back by itself when it returns', async () => {
    const c = await client();
    const pending = c.exec(['sleep', '30']).catch((e: unknown) => e);
    await new Promise((r) => setTimeout(r, 200));
    await agent.kill();
    const err = (await pending) as AgentRemoteError;
    expect(err).toBeInstanceOf(AgentRemoteError);
    expect(err.remoteCode).toBe('EAGENT_CLOSED');
    // The monitor's socket stays up; a request made while the agent is away waits for it.
    const waiting = c.ping();
    agent = await listenAgent(join(dir, 'agent.sock'));
    expect((await waiting).rttMs).toBeGreaterThan(0);
    await c.close();
    expect(link.sessions).toBeGreaterThanOrEqual(2);
  }, 60_000);
});

describe('lending the client\'s read buffer', () => {
  async function pair(options: { pauseOnConnect: boolean }): Promise<{ near: Socket; far: Socket; close: () => Promise<void> }> {
    const path = join(dir, `pair-${randomBytes(4).toString('hex')}.sock`);
    let accept!: (s: Socket) => void;
    const accepted = new Promise<Socket>((r) => (accept = r));
    const srv = createServer(options, (s) => accept(s));
    await new Promise<void>((r) => srv.listen(path, () => r()));
    const near = connect(path);
    await new Promise<void>((r) => near.once('connect', () => r()));
    const far = await accepted;
    return {
      near,
      far,
      close: async () => {
        near.destroy();
        far.destroy();
        await new Promise<void>((r) => srv.close(() => r()));
      },
    };
  }

  it('writeDataFrame says whether the kernel took the payload, and when a queued one is done with', async () => {
    const { near, far, close } = await pair({ pauseOnConnect: true });
    expect(writeDataFrame(near, 1, 'file', Buffer.alloc(1000))).toBeUndefined();
    // The far side does not read: the socket fills and a payload stays queued, the stream still refers to it.
    let held: Promise<void> | undefined;
    for (let i = 0; i < 400 && !held; i++) held = writeDataFrame(near, 1, 'file', Buffer.alloc(MAX_CHUNK));
    expect(held).toBeInstanceOf(Promise);
    let done = false;
    void held!.then(() => (done = true));
    await new Promise((r) => setTimeout(r, 100));
    expect(done).toBe(false);
    far.resume();
    await held;
    // Queued when the stream is destroyed: done with too (the stream will not touch it again).
    far.pause();
    let again: Promise<void> | undefined;
    for (let i = 0; i < 400 && !again; i++) again = writeDataFrame(near, 1, 'file', Buffer.alloc(MAX_CHUNK));
    expect(again).toBeInstanceOf(Promise);
    near.on('error', () => undefined);
    near.destroy();
    await again;
    await close();
  });

  it('takes an accepted socket over to read into one buffer (this Node\'s sockets allow it), and falls back to Node\'s reads', async () => {
    for (const [pauseOnConnect, takeOver] of [
      [true, true],
      [true, false],
      [false, true],
    ] as const) {
      const { near, far, close } = await pair({ pauseOnConnect });
      const got: Buffer[] = [];
      const buffers = new Set<ArrayBufferLike>();
      let pauses = 0;
      const reader = readInto(far, 4096, (chunk) => {
        got.push(Buffer.from(chunk));
        buffers.add(chunk.buffer);
        // Every third read asks for a pause; resumed at once on the next tick.
        if (got.length % 3 !== 0) return true;
        pauses++;
        setImmediate(() => reader.resume());
        return false;
      }, { takeOver });
      const ended = new Promise<void>((r) => reader.once('close', () => r()));
      const data = randomBytes(1024 * 1024);
      near.end(data);
      await ended;
      expect(Buffer.concat(got).equals(data)).toBe(true);
      expect(pauses).toBeGreaterThan(0);
      if (pauseOnConnect && takeOver) {
        // Taken over: a socket of its own, every read in the same 4 KiB buffer.
        expect(reader).not.toBe(far);
        expect(buffers.size).toBe(1);
        expect(got.every((c) => c.length <= 4096)).toBe(true);
      } else expect(reader).toBe(far);
      await close();
    }
  });
});
