/**
 * The real bundled agent (`node dist/goship-agent.mjs --listen SOCK`) against
 * the real host client, over a real unix socket.
 */
import { Buffer } from 'node:buffer';
import { createHash, randomBytes } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { readFile, stat, writeFile } from 'node:fs/promises';
import { connect } from 'node:net';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { Writable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FrameDecoder, MAX_CHUNK, OWN_LIMITS, STREAM_WINDOW, UNANNOUNCED_LIMITS, encodeLine, type Decoded, type FlowLimits } from '../../src/protocol/index.ts';
import { AgentClient, AgentClosedError, AgentRemoteError, type ConnectProgress } from '../../src/serial/index.ts';
import { listenAgent, tempDir, type RunningAgent } from '../helpers/agent-process.ts';

let dir: string;
let cleanup: () => Promise<void>;
let sock: string;
let agent: RunningAgent;

beforeAll(async () => {
  ({ dir, cleanup } = await tempDir());
  sock = join(dir, 'agent.sock');
  // Started like the agent's unit starts it: with its OpenSSL tuning set.
  agent = await listenAgent(sock, { ...process.env, OPENSSL_ia32cap: '~0x1000020000000000:~0x128' });
});

afterAll(async () => {
  await agent?.kill();
  await cleanup?.();
});

/** A Writable that collects text. */
function collector(): { w: Writable; text: () => string } {
  const parts: Buffer[] = [];
  const w = new Writable({
    write(chunk: Buffer, _enc, cb) {
      parts.push(chunk);
      cb();
    },
  });
  return { w, text: () => Buffer.concat(parts).toString('utf8') };
}

async function withClient<T>(fn: (c: AgentClient) => Promise<T>): Promise<T> {
  const c = await AgentClient.connect(sock, { timeoutMs: 5000 });
  try {
    return await fn(c);
  } finally {
    await c.close();
  }
}

describe('agent over a unix socket (--listen test mode)', () => {
  it('maxAttempts: a socket nobody serves is given up after that many connections, not retried until the timeout', async () => {
    const phases: ConnectProgress['phase'][] = [];
    const err = await AgentClient.connect(join(dir, 'nobody.sock'), { timeoutMs: 60_000, retryDelayMs: 10, maxAttempts: 1, onProgress: (p) => phases.push(p.phase) }).catch((e: Error) => e);
    expect((err as Error).message).toMatch(/no hello within 60000 ms \(last: ENOENT on connect\)/);
    expect(phases).toEqual(['connecting']);
    const twice: ConnectProgress['phase'][] = [];
    await AgentClient.connect(join(dir, 'nobody.sock'), { timeoutMs: 60_000, retryDelayMs: 10, maxAttempts: 2, onProgress: (p) => twice.push(p.phase) }).catch(() => undefined);
    expect(twice).toEqual(['connecting', 'connecting']);
  });

  it('connects, says hello, pings and reports info', async () => {
    const progress: ConnectProgress['phase'][] = [];
    const c = await AgentClient.connect(sock, { timeoutMs: 5000, onProgress: (p) => progress.push(p.phase) });
    try {
      expect(c.hello).toEqual({ agent: '0.1.0', protocol: 1, hostname: hostname(), bootId: expect.stringMatching(/^[0-9a-f-]{36}$/), limits: OWN_LIMITS });
      expect(progress).toEqual(['connecting', 'syncing', 'ready']);
      const { rttMs, agentTime } = await c.ping();
      expect(rttMs).toBeGreaterThan(0);
      expect(Math.abs(agentTime - Date.now())).toBeLessThan(5000);
      const info = await c.info();
      expect(info.hostname).toBe(hostname());
      expect(info.agent).toBe('0.1.0');
      expect(info.bootId).toBe(c.hello.bootId);
      expect(info.kernel).toMatch(/^\d+\.\d+/);
      expect(info.memTotal).toBeGreaterThan(info.memFree);
      expect(info.diskTotal).toBeGreaterThan(0);
      expect(info.diskFree).toBeLessThanOrEqual(info.diskTotal);
      expect(info.loadavg).toHaveLength(3);
      expect(info.uptimeSec).toBeGreaterThan(0);
    } finally {
      await c.close();
    }
  });

  it('exec: echo, exit code 3, stdin to cat, stderr kept apart', async () => {
    await withClient(async (c) => {
      const out = collector();
      expect(await c.exec(['echo', 'hello', 'world'], { stdout: out.w })).toEqual({ exitCode: 0, signal: null, timedOut: false });
      expect(out.text()).toBe('hello world\n');

      expect(await c.exec(['sh', '-c', 'exit 3'])).toEqual({ exitCode: 3, signal: null, timedOut: false });

      const cat = collector();
      expect((await c.exec(['cat'], { stdin: 'piped through cat\n', stdout: cat.w })).exitCode).toBe(0);
      expect(cat.text()).toBe('piped through cat\n');

      const o = collector();
      const e = collector();
      await c.exec(['sh', '-c', 'echo to-out; echo to-err >&2'], { stdout: o.w, stderr: e.w });
      expect(o.text()).toBe('to-out\n');
      expect(e.text()).toBe('to-err\n');

      // argv is never a shell string: metacharacters arrive verbatim.
      const lit = collector();
      await c.exec(['echo', '$HOME; rm -rf / `id`'], { stdout: lit.w });
      expect(lit.text()).toBe('$HOME; rm -rf / `id`\n');

      const env = collector();
      await c.exec(['sh', '-c', 'echo "$GREETING" && pwd'], { env: { GREETING: 'hi there' }, cwd: dir, stdout: env.w });
      expect(env.text()).toBe(`hi there\n${dir}\n`);

      // The agent's own tuning stays with the agent; a caller may still set it.
      const inherited = collector();
      await c.exec(['sh', '-c', 'echo "[${OPENSSL_ia32cap-unset}] [${UV_THREADPOOL_SIZE-unset}] [$PATH]"'], { stdout: inherited.w });
      expect(inherited.text()).toBe(`[unset] [unset] [${process.env.PATH}]\n`);
      const explicit = collector();
      await c.exec(['sh', '-c', 'echo "[$OPENSSL_ia32cap]"'], { env: { OPENSSL_ia32cap: ':~0x20' }, stdout: explicit.w });
      expect(explicit.text()).toBe('[:~0x20]\n');
    });
  });

  it('exec: a timeout kills `sleep 30`', async () => {
    await withClient(async (c) => {
      const r = await c.exec(['sleep', '30'], { timeoutMs: 300 });
      expect(r).toEqual({ exitCode: null, signal: 'SIGTERM', timedOut: true });
    });
  });

  it('exec: a missing program is a remote ENOENT; the client keeps working', async () => {
    await withClient(async (c) => {
      const err = await c.exec(['/nonexistent/program']).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(AgentRemoteError);
      expect((err as AgentRemoteError).code).toBe('EAGENT_REMOTE');
      expect((err as AgentRemoteError).remoteCode).toBe('ENOENT');
      await c.ping();
    });
  });

  it('exec with tty runs under a pseudo-terminal (util-linux script)', async () => {
    await withClient(async (c) => {
      const out = collector();
      const r = await c.exec(['sh', '-c', 'tty; exit 4'], { tty: true, stdout: out.w });
      expect(r.exitCode).toBe(4);
      expect(out.text()).toMatch(/^\/dev\/pts\/\d+\r?\n/);
    });
  });

  it('exec with tty takes the caller\'s window size before the program runs', async () => {
    await withClient(async (c) => {
      const out = collector();
      const r = await c.exec(['stty', 'size'], { tty: true, rows: 31, cols: 97, stdout: out.w });
      expect([r.exitCode, out.text().trim()]).toEqual([0, '31 97']);
    });
  });

  it('exec: 20 MiB of output streams with bounded buffering on the host', async () => {
    await withClient(async (c) => {
      const total = 20 * 1024 * 1024;
      let received = 0;
      let maxBuffered = 0;
      // A slow consumer: the agent must wait for credit instead of piling bytes up in this process.
      const slow = new Writable({
        highWaterMark: 16 * 1024,
        write(chunk: Buffer, _enc, cb) {
          received += chunk.length;
          maxBuffered = Math.max(maxBuffered, slow.writableLength);
          if (received % (1024 * 1024) < chunk.length) setTimeout(cb, 5);
          else cb();
        },
      });
      const t0 = performance.now();
      const r = await c.exec(['head', '-c', String(total), '/dev/zero'], { stdout: slow });
      const ms = performance.now() - t0;
      expect(r.exitCode).toBe(0);
      expect(received).toBe(total);
      expect(maxBuffered).toBeLessThanOrEqual(STREAM_WINDOW + MAX_CHUNK);
      console.log(`exec output: 20 MiB in ${ms.toFixed(0)} ms (${(total / 1048576 / (ms / 1000)).toFixed(0)} MiB/s), max buffered ${maxBuffered} bytes`);
    });
  });

  it('upload and download 50 MiB with equal sha256', async () => {
    const src = join(dir, 'big.bin');
    const size = 50 * 1024 * 1024;
    const ws = createWriteStream(src);
    for (let i = 0; i < 50; i++) ws.write(randomBytes(1024 * 1024));
    await new Promise<void>((r) => ws.end(r));
    const sha = createHash('sha256').update(await readFile(src)).digest('hex');

    await withClient(async (c) => {
      const remote = join(dir, 'remote.bin');
      const t0 = performance.now();
      const up = await c.upload(src, remote, { mode: 0o640 });
      const upMs = performance.now() - t0;
      expect(up).toEqual({ bytes: size, sha256: sha });
      const st = await stat(remote);
      expect(st.size).toBe(size);
      expect(st.mode & 0o7777).toBe(0o640);

      const back = join(dir, 'back.bin');
      const t1 = performance.now();
      const down = await c.download(remote, back);
      const downMs = performance.now() - t1;
      expect(down).toEqual({ bytes: size, sha256: sha, mode: 0o640 });
      expect(createHash('sha256').update(await readFile(back)).digest('hex')).toBe(sha);

      const raw = await rawSocketThroughput(join(dir, 'raw.sock'), size);
      const mibs = (ms: number): string => (size / 1048576 / (ms / 1000)).toFixed(0);
      console.log(
        `50 MiB upload ${upMs.toFixed(0)} ms (${mibs(upMs)} MiB/s), download ${downMs.toFixed(0)} ms (${mibs(downMs)} MiB/s); ` +
          `bare unix-socket copy, no hashing or disk: ${raw.toFixed(0)} ms (${mibs(raw)} MiB/s)`,
      );
    });
  }, 60_000);

  it('stat describes a path; download refuses a file over maxBytes and a directory, leaving no file', async () => {
    await withClient(async (c) => {
      const src = join(dir, 'eight.txt');
      await writeFile(src, '12345678');
      expect(await c.stat(src)).toMatchObject({ type: 'file', size: 8 });
      expect(await c.stat(dir)).toMatchObject({ type: 'directory' });
      const tooBig = await c.download(src, join(dir, 'eight.copy'), { maxBytes: 7 }).catch((e: unknown) => e);
      expect((tooBig as { code: string }).code).toBe('ELIMIT');
      const notFile = await c.download(dir, join(dir, 'dir.copy')).catch((e: unknown) => e);
      expect((notFile as AgentRemoteError).remoteCode).toBe('EISDIR');
      const ok = await c.download(src, join(dir, 'eight.copy'), { maxBytes: 8 });
      expect(ok.bytes).toBe(8);
    });
    // The agent itself refuses a file over the bound the host gives it, before sending a byte.
    const s = connect(sock);
    let text = '';
    s.setEncoding('utf8');
    s.on('data', (d: string) => (text += d));
    await new Promise<void>((r) => s.once('connect', () => r()));
    s.write('\n{"t":"sync","nonce":"n2"}\n');
    s.write(encodeLine({ t: 'req', id: 1, m: 'download', p: { path: join(dir, 'eight.txt'), maxBytes: 3 } }));
    for (let i = 0; i < 100 && !text.includes('"id":1'); i++) await new Promise((r) => setTimeout(r, 20));
    s.destroy();
    const lines = text.split('\n').filter(Boolean).map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(lines.filter((l) => l.t === 'data')).toEqual([]);
    expect(lines).toContainEqual({ t: 'res', id: 1, e: { code: 'ESIZE', message: `download ${join(dir, 'eight.txt')}: 8 bytes, more than the 3 the host takes` } });
  });

  it('upload refuses a missing directory and leaves no temporary file', async () => {
    await withClient(async (c) => {
      const src = join(dir, 'small.txt');
      await writeFile(src, 'x');
      const err = await c.upload(src, join(dir, 'no-such-dir', 'f')).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(AgentRemoteError);
      expect((err as AgentRemoteError).remoteCode).toBe('ENOENT');
      await c.ping();
    });
  });

  it('shutdown answers (dry run in test mode)', async () => {
    await withClient(async (c) => {
      expect(await c.shutdown()).toEqual({ accepted: true, dryRun: true });
      await c.ping();
    });
  });

  it('survives 20 connect / disconnect / reconnect cycles, and two clients in sequence', async () => {
    for (let i = 0; i < 20; i++) {
      const c = await AgentClient.connect(sock, { timeoutMs: 5000 });
      await c.ping();
      await c.close();
    }
    const a = await AgentClient.connect(sock, { timeoutMs: 5000 });
    const outA = collector();
    await a.exec(['echo', 'A'], { stdout: outA.w });
    await a.close();
    const b = await AgentClient.connect(sock, { timeoutMs: 5000 });
    const outB = collector();
    await b.exec(['echo', 'B'], { stdout: outB.w });
    await b.close();
    expect(outA.text() + outB.text()).toBe('A\nB\n');
  }, 60_000);

  it('a client disconnecting mid-exec kills the command; the next session works', async () => {
    const marker = join(dir, 'left-running');
    const a = await AgentClient.connect(sock, { timeoutMs: 5000 });
    const running = a.exec(['sh', '-c', `sleep 1.5; touch ${marker}`]).catch((e: unknown) => e);
    await new Promise((r) => setTimeout(r, 200));
    await a.close();
    expect(await running).toBeInstanceOf(AgentClosedError);
    await new Promise((r) => setTimeout(r, 2000));
    await expect(stat(marker)).rejects.toThrow(/ENOENT/);
    await withClient((c) => c.ping());
  });

  it('answers garbage and unknown methods with errors, never crashing', async () => {
    const s = connect(sock);
    let text = '';
    s.setEncoding('utf8');
    s.on('data', (d: string) => {
      text += d;
    });
    await new Promise<void>((r) => s.once('connect', () => r()));
    s.write('{"t":"req","id":1,"m":"ping","p":{}}\n'); // before sync: dropped
    s.write('\n{"t":"sync","nonce":"n1"}\n');
    s.write('{oops\n');
    s.write('{"t":"req","id":2,"m":"no-such-method"}\n');
    s.write('{"t":"req","id":3,"m":"exec","p":{"argv":"rm -rf /","stdin":false}}\n');
    s.write(`${'x'.repeat(2 * 1024 * 1024)}\n`);
    s.write(encodeLine({ t: 'req', id: 4, m: 'ping', p: { data: 'still here' } }));
    await new Promise((r) => setTimeout(r, 500));
    s.destroy();
    const lines = text.split('\n').filter(Boolean).map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(lines[0]).toMatchObject({ t: 'hello', nonce: 'n1', protocol: 1 });
    expect(lines.filter((l) => l.id === 1)).toEqual([]);
    expect(lines).toContainEqual({ t: 'err', code: 'EBADLINE', message: expect.stringMatching(/^not JSON/) });
    expect(lines).toContainEqual({ t: 'res', id: 2, e: { code: 'EUNKNOWN_METHOD', message: 'unknown method "no-such-method"' } });
    expect(lines).toContainEqual({ t: 'res', id: 3, e: { code: 'EBADREQ', message: expect.stringMatching(/^exec: argv/) } });
    expect(lines).toContainEqual({ t: 'err', code: 'ELINE_TOO_LONG', message: expect.stringMatching(/discarded/) });
    expect(lines).toContainEqual({ t: 'res', id: 4, r: { data: 'still here', time: expect.any(Number) } });
    await withClient((c) => c.ping());
  });

  // A host older than the announced limits says nothing of them in its sync: it must get protocol 1's.
  it.each([
    { host: 'announces none', lim: undefined, expected: UNANNOUNCED_LIMITS },
    { host: 'announces its own', lim: OWN_LIMITS, expected: OWN_LIMITS },
    { host: 'announces small ones', lim: { chunk: 32 * 1024, window: 100_000 }, expected: { chunk: 32 * 1024, window: 100_000 } },
  ])('a download to a host that $host keeps to its frame size and window', async ({ lim, expected }: { lim: FlowLimits | undefined; expected: FlowLimits }) => {
    const size = 2 * expected.window + 4321;
    const file = join(dir, 'limits.bin');
    await writeFile(file, randomBytes(size));
    const s = connect(sock);
    const events: Decoded[] = [];
    let wake = (): void => undefined;
    const decoder = new FrameDecoder((e) => {
      events.push(e);
      wake();
    });
    s.on('data', (d: Buffer) => decoder.push(d));
    await new Promise<void>((r) => s.once('connect', () => r()));
    /** The next decoded event matching `pred`, or undefined after `quietMs` without one. */
    const next = async (pred: (e: Decoded) => boolean, quietMs: number): Promise<Decoded | undefined> => {
      const deadline = Date.now() + quietMs;
      for (;;) {
        const i = events.findIndex(pred);
        if (i !== -1) return events.splice(i, 1)[0];
        if (Date.now() >= deadline) return undefined;
        await new Promise<void>((r) => {
          const t = setTimeout(r, deadline - Date.now());
          wake = () => {
            clearTimeout(t);
            r();
          };
        });
      }
    };
    try {
      s.write(`\n${JSON.stringify({ t: 'sync', nonce: 'lim', ...(lim ? { lim } : {}) })}\n`);
      const hello = await next((e) => e.kind === 'message' && e.message.t === 'hello' && e.message.nonce === 'lim', 5000);
      expect(hello?.kind === 'message' && hello.message.lim).toEqual(OWN_LIMITS);
      s.write(encodeLine({ t: 'req', id: 1, m: 'download', p: { path: file } }));
      let got = 0;
      while (got < size) {
        // Before the host acknowledges, the agent sends exactly the window, and then nothing more.
        let batch = 0;
        const want = Math.min(expected.window, size - got);
        while (batch < want) {
          const e = await next((d) => d.kind === 'data', 5000);
          if (e?.kind !== 'data') throw new Error(`the agent stopped after ${got + batch} of ${size} bytes`);
          expect(e.header.n).toBeLessThanOrEqual(expected.chunk);
          batch += e.header.n;
        }
        expect(batch).toBe(want);
        if (got + batch < size) expect(await next((d) => d.kind === 'data', 300)).toBeUndefined();
        got += batch;
        s.write(encodeLine({ t: 'ack', id: 1, s: 'file', n: batch }));
      }
      const res = await next((e) => e.kind === 'message' && e.message.t === 'res', 5000);
      expect(res?.kind === 'message' && res.message).toMatchObject({ t: 'res', id: 1, r: { size } });
    } finally {
      s.destroy();
    }
  });

  it('the agent killed and restarted while the host retries', async () => {
    const c = await AgentClient.connect(sock, { timeoutMs: 5000 });
    const pending = c.exec(['sleep', '5']).catch((e: unknown) => e);
    await agent.kill();
    const err = await pending;
    expect(err).toBeInstanceOf(AgentClosedError);
    expect((err as AgentClosedError).code).toBe('EAGENT_CLOSED');
    expect(c.closed).toBe(true);

    const phases: string[] = [];
    const connecting = AgentClient.connect(sock, { timeoutMs: 10_000, onProgress: (p) => phases.push(p.phase) });
    await new Promise((r) => setTimeout(r, 700));
    agent = await listenAgent(sock);
    const c2 = await connecting;
    expect(phases.filter((p) => p === 'connecting').length).toBeGreaterThan(1);
    await c2.ping();
    await c2.close();
  });
});

/** Baseline: how long plain unix-socket copying of `size` bytes takes between two processes' worth of code here. */
async function rawSocketThroughput(path: string, size: number): Promise<number> {
  const { createServer } = await import('node:net');
  let got = 0;
  const done = new Promise<void>((resolve) => {
    const server = createServer((s) => {
      s.on('data', (d: Buffer) => {
        got += d.length;
        if (got >= size) {
          s.destroy();
          server.close();
          resolve();
        }
      });
    });
    server.listen(path, () => {
      const c = connect(path, async () => {
        const chunk = Buffer.alloc(MAX_CHUNK);
        for (let sent = 0; sent < size; sent += chunk.length) {
          if (!c.write(chunk)) await new Promise<void>((r) => c.once('drain', () => r()));
        }
      });
      c.on('error', () => undefined);
    });
  });
  const t0 = performance.now();
  await done;
  return performance.now() - t0;
}
