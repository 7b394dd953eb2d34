/**
 * A scripted QMP server on a real unix socket, for protocol tests.
 *
 *     const server = await startQmpServer();
 *     const peerP = server.nextConnection();
 *     const clientP = QmpClient.connect(server.path);
 *     const peer = await peerP;
 *     await peer.handshake();
 *     const client = await clientP;
 *     const req = await peer.next();        // what the client sent
 *     peer.reply(req, { status: 'running', running: true });
 *
 * Nothing is automatic: a test decides when to greet, reply, send events or
 * hang up, which is how interleavings and failures are reproduced exactly.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export type Json = Record<string, unknown>;

export const TEST_QEMU_VERSION = { qemu: { major: 7, minor: 2, micro: 22 }, package: 'scripted-test-server' };

/** A FIFO whose `shift()` waits for the next item. */
class AsyncQueue<T> {
  readonly #items: T[] = [];
  readonly #waiters: Array<(item: T) => void> = [];

  push(item: T): void {
    const waiter = this.#waiters.shift();
    if (waiter) waiter(item);
    else this.#items.push(item);
  }

  shift(timeoutMs: number, what: string): Promise<T> {
    const item = this.#items.shift();
    if (item !== undefined) return Promise.resolve(item);
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        const i = this.#waiters.indexOf(waiter);
        if (i !== -1) this.#waiters.splice(i, 1);
        reject(new Error(`scripted QMP server: no ${what} within ${timeoutMs}ms`));
      }, timeoutMs);
      const waiter = (value: T): void => {
        clearTimeout(timer);
        resolve(value);
      };
      this.#waiters.push(waiter);
    });
  }

  get length(): number {
    return this.#items.length;
  }
}

/** The server's side of one client connection. */
export class QmpPeer {
  readonly socket: Socket;
  /** Every message received from the client, in order. */
  readonly received: Json[] = [];
  readonly #incoming = new AsyncQueue<Json>();
  #buffer = '';
  readonly closed: Promise<void>;

  constructor(socket: Socket) {
    this.socket = socket;
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => {
      this.#buffer += chunk;
      let nl: number;
      while ((nl = this.#buffer.indexOf('\n')) !== -1) {
        const line = this.#buffer.slice(0, nl);
        this.#buffer = this.#buffer.slice(nl + 1);
        if (line.trim() === '') continue;
        const message = JSON.parse(line) as Json;
        this.received.push(message);
        this.#incoming.push(message);
      }
    });
    socket.on('error', () => {});
    this.closed = new Promise((resolve) => socket.once('close', () => resolve()));
  }

  /** Next message from the client (rejects after `timeoutMs`). */
  next(timeoutMs = 5000): Promise<Json> {
    return this.#incoming.shift(timeoutMs, 'message from the client');
  }

  /** Messages received but not yet taken with `next()`. */
  get unread(): number {
    return this.#incoming.length;
  }

  /** Send a JSON message (one line, `\r\n`-terminated like QEMU). */
  send(message: unknown): void {
    this.socket.write(`${JSON.stringify(message)}\r\n`);
  }

  /** Send raw text as is. */
  sendRaw(text: string | Buffer): void {
    this.socket.write(text);
  }

  greet(capabilities: string[] = ['oob']): void {
    this.send({ QMP: { version: TEST_QEMU_VERSION, capabilities } });
  }

  reply(request: Json, value: unknown = {}): void {
    this.send({ return: value, id: request.id });
  }

  replyError(request: Json, errorClass: string, desc: string): void {
    this.send({ error: { class: errorClass, desc }, id: request.id });
  }

  event(name: string, data?: Json): void {
    const now = Date.now();
    const timestamp = { seconds: Math.floor(now / 1000), microseconds: (now % 1000) * 1000 };
    this.send(data === undefined ? { event: name, timestamp } : { event: name, data, timestamp });
  }

  /** Greet, take `qmp_capabilities` and accept it. Returns the negotiation request. */
  async handshake(capabilities: string[] = ['oob']): Promise<Json> {
    this.greet(capabilities);
    const request = await this.next();
    if (request.execute !== 'qmp_capabilities') {
      throw new Error(`scripted QMP server: expected qmp_capabilities, got ${JSON.stringify(request)}`);
    }
    this.reply(request);
    return request;
  }

  /** Take the next message and check it is `command`. */
  async expect(command: string, timeoutMs = 5000): Promise<Json> {
    const request = await this.next(timeoutMs);
    if (request.execute !== command) {
      throw new Error(`scripted QMP server: expected ${command}, got ${JSON.stringify(request)}`);
    }
    return request;
  }

  /** Close gracefully (FIN), like QEMU exiting. */
  end(): void {
    this.socket.end();
  }

  /** Reset the connection. */
  destroy(): void {
    this.socket.destroy();
  }
}

export interface ScriptedQmpServer {
  /** The socket path (short: under the system temp dir). */
  readonly path: string;
  readonly server: Server;
  /** The next client connection accepted. */
  nextConnection(timeoutMs?: number): Promise<QmpPeer>;
  /** Close the server, every connection, and remove the temp dir. */
  close(): Promise<void>;
}

export async function startQmpServer(): Promise<ScriptedQmpServer> {
  const dir = await mkdtemp(join(tmpdir(), 'qmp-'));
  const path = join(dir, 'qmp.sock');
  const connections = new AsyncQueue<QmpPeer>();
  const peers: QmpPeer[] = [];
  const server = createServer((socket) => {
    const peer = new QmpPeer(socket);
    peers.push(peer);
    connections.push(peer);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(path, () => resolve());
  });
  return {
    path,
    server,
    nextConnection: (timeoutMs = 5000) => connections.shift(timeoutMs, 'connection'),
    async close() {
      for (const peer of peers) peer.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await rm(dir, { recursive: true, force: true });
    },
  };
}
