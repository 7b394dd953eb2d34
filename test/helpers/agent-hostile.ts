/**
 * A scripted hostile "guest" on a real unix socket: it answers the host's
 * sync with a hello (or not), then does whatever the test tells it.
 *
 *     const guest = await startHostileGuest(dir);
 *     const peerP = guest.nextPeer();
 *     const client = await AgentClient.connect(guest.path, { timeoutMs: 2000 });
 *     const peer = await peerP;
 *     const req = await peer.nextRequest();
 *     peer.sendLine({ t: 'res', id: req.id, r: { data: req.p.data, time: 1 } });
 */
import { Buffer } from 'node:buffer';
import { createServer, type Server, type Socket } from 'node:net';
import { join } from 'node:path';
import { FrameDecoder, encodeLine, type Decoded } from '../../src/protocol/index.ts';

export type Json = Record<string, unknown>;

export interface HostileOptions {
  /** The hello's protocol version (default 1); `null` never answers the sync. */
  protocol?: number | null;
  /** Bytes written before the hello (stale garbage). */
  before?: Buffer;
  /** Answer every sync with this `no-agent` message instead of a hello (what the agent unit's start script says without Node). */
  noAgent?: Json;
  /** The hello's `lim` (the limits the agent accepts); absent by default, as from an agent older than them. */
  lim?: object;
  /**
   * Lose the first sync, as a guest port that was closed when the host wrote it, then
   * announce this agent's start (a hello with an empty nonce), as the real agent does
   * when it opens its port.
   */
  loseFirstSync?: boolean;
}

export class HostilePeer {
  readonly socket: Socket;
  readonly received: Decoded[] = [];
  #waiters: Array<() => void> = [];
  nonce: string | undefined;
  /** The `lim` of the host's last sync. */
  syncLim: unknown;
  /** Syncs received, the lost one included. */
  syncs = 0;

  constructor(socket: Socket, options: HostileOptions) {
    this.socket = socket;
    const decoder = new FrameDecoder((e) => {
      if (e.kind === 'message' && e.message.t === 'sync') {
        if (this.syncs++ === 0 && options.loseFirstSync) {
          socket.write('\n');
          this.sendLine({ t: 'hello', nonce: '', agent: 'hostile', protocol: options.protocol ?? 1, hostname: 'evil', bootId: 'b' });
          return;
        }
        // Like the real agent: answer every sync, the hello starting with a newline.
        const first = this.nonce === undefined;
        this.nonce = String(e.message.nonce);
        this.syncLim = e.message.lim;
        if (first && options.before) socket.write(options.before);
        if (options.noAgent) {
          socket.write('\n');
          this.sendLine({ t: 'no-agent', ...options.noAgent });
        } else if (options.protocol !== null) {
          socket.write('\n');
          this.sendLine({ t: 'hello', nonce: this.nonce, agent: 'hostile', protocol: options.protocol ?? 1, hostname: 'evil', bootId: 'b', ...(options.lim ? { lim: options.lim } : {}) });
        }
        return;
      }
      this.received.push(e);
      const w = this.#waiters;
      this.#waiters = [];
      for (const f of w) f();
    });
    socket.on('data', (c: Buffer) => decoder.push(c));
    socket.on('error', () => undefined);
  }

  sendLine(message: Json): void {
    this.socket.write(encodeLine(message));
  }

  /** Write and wait until the socket drains (a flood must not fill this process's memory). */
  async send(bytes: Buffer | string): Promise<void> {
    if (!this.socket.write(bytes)) await new Promise<void>((r) => this.socket.once('drain', () => r()));
  }

  /** The next message the host sent matching `pred` (default: a request). */
  async next(pred: (e: Decoded) => boolean = (e) => e.kind === 'message' && e.message.t === 'req', timeoutMs = 5000): Promise<Decoded> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const i = this.received.findIndex(pred);
      if (i !== -1) return this.received.splice(i, 1)[0] as Decoded;
      const left = deadline - Date.now();
      if (left <= 0) throw new Error('hostile guest: nothing matching from the host in time');
      await new Promise<void>((r) => {
        const t = setTimeout(r, left);
        this.#waiters.push(() => {
          clearTimeout(t);
          r();
        });
      });
    }
  }

  async nextRequest(method?: string): Promise<{ id: number; m: string; p: Json }> {
    const e = await this.next((d) => d.kind === 'message' && d.message.t === 'req' && (method === undefined || d.message.m === method));
    const m = (e as { message: Json }).message;
    return { id: m.id as number, m: m.m as string, p: (m.p ?? {}) as Json };
  }

  /** The next control message of type `t` the host sent (`cancel`, `ack`, `eof`…). */
  async nextMessage(t: string): Promise<Json> {
    const e = await this.next((d) => d.kind === 'message' && d.message.t === t);
    return (e as { message: Json }).message;
  }

  /**
   * The sizes of the data frames the host sends until they add up to
   * `total` bytes or it sends none for `quietMs`.
   */
  async frames(total: number, quietMs: number): Promise<number[]> {
    const sizes: number[] = [];
    let sum = 0;
    while (sum < total) {
      const e = await this.next((d) => d.kind === 'data', quietMs).catch(() => undefined);
      if (e?.kind !== 'data') break;
      sizes.push(e.header.n);
      sum += e.header.n;
    }
    return sizes;
  }

  /** Answer the host's `stat` of a download with a regular file of `size` bytes. */
  async answerStat(size: number): Promise<void> {
    const req = await this.nextRequest('stat');
    this.sendLine({ t: 'res', id: req.id, r: { type: 'file', size, mode: 0o644, mtimeMs: 0 } });
  }

  /** Answer pings correctly (echo), so the test can check the client still works. */
  async answerPing(): Promise<void> {
    const req = await this.nextRequest('ping');
    this.sendLine({ t: 'res', id: req.id, r: { data: req.p.data, time: Date.now() } });
  }
}

export interface HostileGuest {
  readonly path: string;
  nextPeer(): Promise<HostilePeer>;
  close(): Promise<void>;
}

export async function startHostileGuest(dir: string, options: HostileOptions = {}): Promise<HostileGuest> {
  const path = join(dir, 'hostile.sock');
  const peers: HostilePeer[] = [];
  const waiters: Array<(p: HostilePeer) => void> = [];
  const sockets = new Set<Socket>();
  const server: Server = createServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    const peer = new HostilePeer(socket, options);
    const w = waiters.shift();
    if (w) w(peer);
    else peers.push(peer);
  });
  await new Promise<void>((r) => server.listen(path, () => r()));
  return {
    path,
    nextPeer: () => {
      const p = peers.shift();
      return p ? Promise.resolve(p) : new Promise((r) => waiters.push(r));
    },
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}
