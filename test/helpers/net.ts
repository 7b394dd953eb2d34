/** Small waiting and networking helpers shared by the tests that talk to real guests. */
import { connect, createServer } from 'node:net';

/** Polls `fn` until it returns a value (not undefined); fails with `what` after the timeout. */
export async function until<T>(what: string, fn: () => Promise<T | undefined>, timeoutMs = 60_000, everyMs = 100): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

/** A TCP port on 127.0.0.1 nothing listens on right now. */
export async function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = createServer();
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

/** Connects to 127.0.0.1:port and returns everything the peer sends until it closes. */
export function tcpGet(port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = connect(port, '127.0.0.1');
    let text = '';
    s.setEncoding('utf8');
    s.on('data', (d: string) => (text += d));
    s.on('end', () => resolve(text));
    s.on('error', reject);
    s.setTimeout(10_000, () => s.destroy(new Error('timeout')));
  });
}

/** GET http://127.0.0.1:port/path: status and body, or undefined when nothing answers (yet). */
export async function httpGet(port: number, path = '/'): Promise<{ status: number; body: string } | undefined> {
  try {
    const res = await fetch(`http://127.0.0.1:${port}${path}`, { signal: AbortSignal.timeout(10_000) });
    return { status: res.status, body: await res.text() };
  } catch {
    return undefined;
  }
}

/** The first line a TCP server sends (an sshd's banner), or the error: one try, no retry. */
export function banner(port: number): Promise<string> {
  return new Promise((resolve) => {
    const s = connect(port, '127.0.0.1');
    let got = '';
    const done = (v: string) => {
      s.destroy();
      resolve(v);
    };
    s.setTimeout(20_000, () => done(`timeout (got ${JSON.stringify(got)})`));
    s.on('data', (d) => {
      got += d.toString('latin1');
      if (got.includes('\n')) done(got.split('\r\n')[0]!.split('-').slice(0, 2).join('-'));
    });
    s.on('error', (e) => done(`error: ${e.message}`));
    s.on('close', () => done(`closed (got ${JSON.stringify(got)})`));
  });
}
