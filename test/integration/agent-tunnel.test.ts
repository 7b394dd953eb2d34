/**
 * `tunnel` through the real bundled agent (`--listen` test mode, so "the
 * guest's loopback" is this host's) to real TCP and unix servers: bytes both
 * ways, half closes both ways, a refused target, a cancel, a large stream.
 */
import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { join } from 'node:path';
import { PassThrough, Readable, Writable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AgentClient, AgentRemoteError } from '../../src/serial/index.ts';
import { listenAgent, tempDir, type RunningAgent } from '../helpers/agent-process.ts';

let dir: string;
let cleanup: () => Promise<void>;
let agent: RunningAgent;
let client: AgentClient;
const servers: Server[] = [];

beforeAll(async () => {
  ({ dir, cleanup } = await tempDir());
  const sock = join(dir, 'agent.sock');
  agent = await listenAgent(sock);
  client = await AgentClient.connect(sock, { timeoutMs: 5000 });
});

afterAll(async () => {
  await client?.close();
  for (const s of servers) s.close();
  await agent?.kill();
  await cleanup?.();
});

/** A server that reads until the client's half close, then answers what it read, upper-cased, and closes. */
async function shoutingServer(listen: (s: Server) => void): Promise<Server> {
  const server = createServer({ allowHalfOpen: true }, (s: Socket) => {
    const parts: Buffer[] = [];
    s.on('data', (d: Buffer) => parts.push(d));
    s.on('end', () => s.end(Buffer.concat(parts).toString().toUpperCase()));
  });
  servers.push(server);
  listen(server);
  await once(server, 'listening');
  return server;
}

function collector(): { w: Writable; bytes: () => Buffer; ended: Promise<void> } {
  const parts: Buffer[] = [];
  let end!: () => void;
  const ended = new Promise<void>((r) => (end = r));
  const w = new Writable({
    write(chunk: Buffer, _enc, cb) {
      parts.push(chunk);
      cb();
    },
    final(cb) {
      end();
      cb();
    },
  });
  return { w, bytes: () => Buffer.concat(parts), ended };
}

describe('tunnel', () => {
  it('to a loopback TCP port: the host half-closes, the server answers after it, the host sees its end', async () => {
    const server = await shoutingServer((s) => s.listen(0, '127.0.0.1'));
    const out = collector();
    const r = await client.tunnel({ to: 'tcp', port: (server.address() as AddressInfo).port }, { input: Readable.from([Buffer.from('hello '), Buffer.from('guest')]), output: out.w });
    await out.ended;
    expect(out.bytes().toString()).toBe('HELLO GUEST');
    expect(r).toEqual({ sent: 11, received: 11 });
  });

  it('to a unix socket, 8 MiB each way with the same sha256', async () => {
    const path = join(dir, 'echo.sock');
    const server = createServer({ allowHalfOpen: true }, (s: Socket) => s.pipe(s));
    servers.push(server);
    server.listen(path);
    await once(server, 'listening');
    const blob = randomBytes(8 * 1024 * 1024);
    const out = collector();
    const r = await client.tunnel({ to: 'unix', path }, { input: Readable.from([blob.subarray(0, 3_000_000), blob.subarray(3_000_000)]), output: out.w });
    const sum = (b: Buffer) => createHash('sha256').update(b).digest('hex');
    expect(sum(out.bytes())).toBe(sum(blob));
    expect(r).toEqual({ sent: blob.length, received: blob.length });
  });

  it('the server half-closes first: its end reaches the host, which still writes, then closes', async () => {
    const got: Buffer[] = [];
    let gotAll!: () => void;
    // The agent's result and the server's bytes come on two sockets: either may be read first.
    const gotEnd = new Promise<void>((resolve) => (gotAll = resolve));
    const server = createServer({ allowHalfOpen: true }, (s: Socket) => {
      s.end('banner\n');
      s.on('data', (d: Buffer) => got.push(d));
      s.on('end', () => gotAll());
    });
    servers.push(server);
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const input = new PassThrough();
    const out = collector();
    const done = client.tunnel({ to: 'tcp', port: (server.address() as AddressInfo).port }, { input, output: out.w });
    await out.ended;
    expect(out.bytes().toString()).toBe('banner\n');
    input.end('after the banner');
    expect(await done).toEqual({ sent: 16, received: 7 });
    await gotEnd;
    expect(Buffer.concat(got).toString()).toBe('after the banner');
  });

  it('to a port nobody listens on: the guest\'s ECONNREFUSED, and the session goes on', async () => {
    const probe = createServer();
    probe.listen(0, '127.0.0.1');
    await once(probe, 'listening');
    const port = (probe.address() as AddressInfo).port;
    probe.close();
    const err = await client.tunnel({ to: 'tcp', port }, { input: Readable.from([]), output: collector().w }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(AgentRemoteError);
    expect([(err as AgentRemoteError).remoteCode, (err as AgentRemoteError).remoteMessage]).toEqual(['ECONNREFUSED', `tunnel to 127.0.0.1:${port}: connect ECONNREFUSED 127.0.0.1:${port}`]);
    expect((await client.ping()).agentTime).toBeGreaterThan(0);
  });

  it('cancelled by the host: the guest\'s socket is closed', async () => {
    let closed!: () => void;
    const serverSaw = new Promise<void>((r) => (closed = r));
    const server = createServer((s: Socket) => {
      s.resume();
      s.on('close', () => closed());
    });
    servers.push(server);
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const ctl = new AbortController();
    const done = client.tunnel({ to: 'tcp', port: (server.address() as AddressInfo).port }, { input: new PassThrough(), output: collector().w, signal: ctl.signal }).catch((e: unknown) => e);
    await new Promise((r) => setTimeout(r, 200));
    ctl.abort(new Error('the host is done'));
    await serverSaw;
    expect(await done).toBeInstanceOf(Error);
  });

  it('refuses a relative path or a port out of range before anything is sent', async () => {
    await expect(client.tunnel({ to: 'unix', path: 'run/docker.sock' }, { input: Readable.from([]), output: collector().w })).rejects.toThrow(/invalid tunnel request/);
    await expect(client.tunnel({ to: 'tcp', port: 70000 }, { input: Readable.from([]), output: collector().w })).rejects.toThrow(/invalid tunnel request/);
  });
});
