/**
 * The monitor's socket (`RUN/ID/monitor.sock`, owner-only): any number of
 * local clients, each speaking the agent protocol. Requests for agent methods
 * are relayed on the monitor's one agent session, with their request ids
 * remapped (the agent client of the session picks its own) and their streams
 * passed through frame by frame: credit returns to the agent only when the
 * far client has consumed, so a slow client slows its own stream and nothing
 * else. Requests for `monitor.*` methods the monitor answers itself. A client
 * that goes away has its requests cancelled, in the guest too.
 *
 * Clients are processes of the same user, but they are still checked: every
 * message is validated, windows are enforced, and the number of clients and
 * of requests per client is bounded.
 */
import { Buffer } from 'node:buffer';
import { performance } from 'node:perf_hooks';
import { Socket as NetSocket, type Server, type Socket, type SocketConstructorOpts } from 'node:net';
import * as v from 'valibot';
import { ERROR_CODES, GoshipError, type ErrorCode } from '../errors.ts';
import {
  CreditWindow,
  FrameDecoder,
  HostMessageSchema,
  PROTOCOL_VERSION,
  REMOTE_CODES,
  describeIssues,
  encodeData,
  encodeLine,
  pumpWithCredit,
  sendLimits,
  whenWritable,
  writeDataFrame,
  type Decoded,
  type FlowLimits,
  type HostMessage,
  type StreamName,
} from '../protocol/index.ts';
import { AgentRemoteError, type AgentClient, type Relay } from '../serial/index.ts';
import { listenUnix, type Listener } from './sockets.ts';
import { StreamPacer } from './pacer.ts';
import { MONITOR_PREFIX } from './protocol.ts';

/** More clients than this at once are refused (each may hold a window per stream). */
export const MAX_CLIENTS = 64;
/** Requests one client may have open at once. */
export const MAX_REQUESTS_PER_CLIENT = 64;

/** What the server needs of the agent side. */
export interface AgentSide {
  /** Resolves with a ready session, waiting while the guest boots or the agent restarts; rejects once the VM ends. */
  session(signal: AbortSignal): Promise<AgentClient>;
  /**
   * The fields of the monitor's hello: the agent's, as its last hello said
   * them (empty before), and the limits a client is to send within: the
   * agent's (before its first hello, the host's own: the pacer fits what a
   * client sends to the agent's limits when they turn out smaller).
   */
  hello(): { agent: string; hostname: string; bootId: string; ready: boolean; limits: FlowLimits };
}

/** An error a handler throws to answer `{code, message}`. */
/**
 * A monitor call that failed: GoShip's code from the registry (a protocol code
 * such as ECANCELLED or EBADREQ is EAGENT_REMOTE there, as a client sees it),
 * and `wireCode`, the exact code it is answered with.
 */
export class MonitorCallError extends GoshipError {
  readonly wireCode: string;

  constructor(code: string, message: string) {
    super(Object.hasOwn(ERROR_CODES, code) ? (code as ErrorCode) : 'EAGENT_REMOTE', message);
    this.wireCode = code;
  }
}

export type LocalHandler = (call: LocalCall, params: unknown) => Promise<unknown>;

/** A `monitor.*` request being answered. */
export class LocalCall {
  readonly #controller = new AbortController();
  readonly #credit = new Map<StreamName, CreditWindow>();

  constructor(
    readonly id: number,
    readonly method: string,
    private readonly session: ClientSession,
  ) {}

  /** Aborted when the client cancels or goes away. */
  get signal(): AbortSignal {
    return this.#controller.signal;
  }

  abort(reason: Error): void {
    this.#controller.abort(reason);
    for (const c of this.#credit.values()) c.close(reason);
  }

  credit(stream: StreamName): CreditWindow {
    let c = this.#credit.get(stream);
    if (!c) {
      c = new CreditWindow(this.session.clientLimits.window);
      this.#credit.set(stream, c);
    }
    return c;
  }

  /**
   * Sends a copy of `chunk` on `stream` if the client's window has room for all of it
   * right now; returns false (and sends nothing) when it has not: the caller
   * decides whether to drop (the console does) or wait (`send`).
   */
  offer(stream: StreamName, chunk: Buffer): boolean {
    if (this.signal.aborted) return false;
    const c = this.credit(stream);
    if (c.available < chunk.length) return false;
    void c.take(chunk.length);
    // One buffer, a copy: what is offered may be a view its owner reuses (the console's stage).
    this.session.write(encodeData(this.id, stream, chunk));
    return true;
  }

  /** Sends `chunk` on `stream`, waiting for the client's credit. The chunk is handed over: not to be changed after. */
  async sendChunk(stream: StreamName, chunk: Buffer): Promise<void> {
    await this.#pump(stream, [chunk]);
  }

  /** Ends `stream`. */
  eof(stream: StreamName): void {
    if (!this.signal.aborted) this.session.write(encodeLine({ t: 'eof', id: this.id, s: stream }));
  }

  /** Sends `source` on `stream` under the client's flow control, then its eof. Its chunks are handed over, not copied. */
  async send(stream: StreamName, source: AsyncIterable<Buffer> | Iterable<Buffer>): Promise<number> {
    const n = await this.#pump(stream, source);
    this.session.write(encodeLine({ t: 'eof', id: this.id, s: stream }));
    return n;
  }

  /** `source` as frames within the client's limits and credit, each handed over, not copied. */
  #pump(stream: StreamName, source: AsyncIterable<Buffer> | Iterable<Buffer>): Promise<number> {
    return pumpWithCredit(
      source,
      this.credit(stream),
      (piece) => {
        if (this.signal.aborted) throw this.signal.reason;
        this.session.writeData(this.id, stream, piece);
        return this.session.whenWritable();
      },
      { maxChunk: this.session.clientLimits.chunk },
    );
  }

  /** The client's ack for `stream`. False when it acknowledges more than was sent. */
  ack(stream: StreamName, n: number): boolean {
    return this.credit(stream).grant(n);
  }
}

interface RelayEntry {
  kind: 'relay';
  method: string;
  relay: Relay | undefined;
  /** Frames the client sent before the agent session was ready. */
  early: Array<{ stream: StreamName; payload?: Buffer }>;
  /** Client → agent bytes not yet acknowledged by the agent, per stream. */
  toAgent: Map<StreamName, number>;
  /** Agent → client bytes not yet acknowledged by the client, per stream. */
  toClient: Map<StreamName, number>;
  /** Client → agent frames, paced while other requests are busy (pacer.ts). */
  pacers: Map<StreamName, StreamPacer>;
  /** The limits of the agent session the request is relayed on (what the client was granted until that session is known). */
  agentLimits: FlowLimits;
  abort: AbortController;
}

interface LocalEntry {
  kind: 'local';
  call: LocalCall;
}

type Entry = RelayEntry | LocalEntry;

const add = (m: Map<StreamName, number>, s: StreamName, n: number): number => {
  const next = (m.get(s) ?? 0) + n;
  m.set(s, next);
  return next;
};

/** Each client's reads land in one buffer of this size, its own, reused for every read. */
export const CLIENT_READ_BYTES = 256 * 1024;

/**
 * Reads an accepted socket into one buffer of `size` bytes, reused for every
 * read, so relaying an upload allocates nothing per read (Node's own reads
 * allocate 64 KiB each, which glibc either keeps or maps and unmaps: see
 * docs/decisions.md). Node offers `onread` only for connections a process
 * makes, so the accepted socket's handle moves to a new socket made with
 * `onread`; the server accepts paused, so nothing has been read yet. A Node
 * whose sockets have no such handle (or `takeOver: false`) is served by its
 * own reads instead. `onChunk` gets a view valid during the call alone and
 * returns false to pause reading; `resume()` on the socket returned reads
 * again.
 */
export function readInto(socket: Socket, size: number, onChunk: (chunk: Buffer) => boolean, options: { takeOver?: boolean } = {}): Socket {
  const held = socket as unknown as { _handle?: { readStart?: unknown } | null };
  const handle = held._handle;
  if ((options.takeOver ?? true) && handle && typeof handle.readStart === 'function' && socket.isPaused()) {
    held._handle = null;
    socket.destroy();
    const buffer = Buffer.allocUnsafe(size);
    const made = { handle, onread: { buffer, callback: (n: number, buf: Uint8Array) => onChunk(Buffer.from(buf.buffer, buf.byteOffset, n)) } };
    return new NetSocket(made as unknown as SocketConstructorOpts);
  }
  socket.on('data', (chunk: Buffer) => {
    if (!onChunk(chunk)) socket.pause();
  });
  // Accepted paused: a 'data' listener alone does not start a paused stream.
  socket.resume();
  return socket;
}

/** One client connection: one session of the protocol. */
export class ClientSession {
  readonly #socket: Socket;
  readonly #server: MonitorServer;
  readonly #decoder: FrameDecoder;
  readonly #entries = new Map<number, Entry>();
  #synced = false;
  #closed = false;
  /** True while a chunk of the client's is being decoded: payloads sent now are views of its read buffer. */
  #reading = false;
  /** Writes toward the agent that still refer to the read buffer: reading waits for them. */
  #lent = 0;
  #paused = false;
  /** What the client accepts (its sync's limits): the monitor's own streams keep to them. */
  #clientLimits: FlowLimits = sendLimits(undefined);
  /** What this monitor's hello told the client to send within: the agent's limits at the client's sync. */
  #granted: FlowLimits = sendLimits(undefined);

  constructor(socket: Socket, server: MonitorServer) {
    this.#server = server;
    // Payloads are lent, not copied: passed on to the agent at once, or copied by the pacer if they must wait.
    this.#decoder = new FrameDecoder((e) => this.#onDecoded(e), { borrow: true });
    this.#socket = readInto(socket, CLIENT_READ_BYTES, (chunk) => this.#read(chunk));
    this.#socket.on('error', () => undefined);
    this.ended = new Promise((resolve) =>
      this.#socket.once('close', () => {
        this.close('the client went away');
        resolve();
      }),
    );
  }

  /** Resolves once the client's socket has closed. */
  readonly ended: Promise<void>;

  /** A chunk from the client. False pauses reading until the agent's socket has taken what still refers to it. */
  #read(chunk: Buffer): boolean {
    this.#reading = true;
    try {
      this.#decoder.push(chunk);
    } finally {
      this.#reading = false;
    }
    if (this.#lent === 0) return true;
    this.#paused = true;
    this.#server.stats.readWaits++;
    return false;
  }

  /** A payload sent toward the agent during a read is still queued on its socket: the read buffer is not reused until it is written. */
  #lend(written: Promise<void>): void {
    this.#lent++;
    void written.then(() => {
      if (--this.#lent > 0 || !this.#paused) return;
      this.#paused = false;
      if (!this.#closed) this.#socket.resume();
    });
  }

  get clientLimits(): FlowLimits {
    return this.#clientLimits;
  }

  get openRequests(): number {
    return this.#entries.size;
  }

  write(bytes: Buffer): void {
    if (this.#closed || this.#socket.destroyed) return;
    this.#socket.write(bytes);
  }

  /** A data frame, its header and payload in one `writev` (the payload is not copied: the caller hands it over). */
  writeData(id: number, stream: StreamName, payload: Buffer): void {
    if (this.#closed || this.#socket.destroyed) return;
    writeDataFrame(this.#socket, id, stream, payload);
  }

  whenWritable(): Promise<void> {
    return whenWritable(this.#socket);
  }

  /** The request is over: it no longer counts as busy (pacer.ts). */
  #drop(id: number): void {
    const e = this.#entries.get(id);
    if (!e) return;
    this.#entries.delete(id);
    this.#server.idle(e);
  }

  #reply(id: number, body: { r: unknown } | { e: { code: string; message: string } }): void {
    this.write(encodeLine({ t: 'res', id, ...body }));
  }

  /** Every request of this client is cancelled: relays in the guest, local calls here. */
  #cancelAll(reason: string): void {
    const err = new MonitorCallError(REMOTE_CODES.cancelled, reason);
    const entries = [...this.#entries.values()];
    this.#entries.clear();
    for (const e of entries) this.#server.idle(e);
    for (const e of entries) {
      if (e.kind === 'relay') {
        e.abort.abort(err);
        e.relay?.cancel(err);
      } else e.call.abort(err);
    }
  }

  /** Ends the session: its requests are cancelled; `graceful` lets what was written reach the client first. */
  close(reason: string, graceful = false): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#cancelAll(reason);
    if (graceful) {
      this.#socket.end();
      setTimeout(() => this.#socket.destroy(), 1000).unref();
    } else this.#socket.destroy();
    this.#server.forget(this);
  }

  #onDecoded(event: Decoded): void {
    if (this.#closed) return;
    switch (event.kind) {
      case 'fatal':
        // The client lost its framing: nothing it sends can be trusted any more.
        this.close(`framing lost: ${event.detail}`);
        return;
      case 'bad':
        if (this.#synced) this.write(encodeLine({ t: 'err', code: event.reason === 'line-too-long' ? REMOTE_CODES.lineTooLong : REMOTE_CODES.badLine, message: event.detail }));
        return;
      case 'data':
        if (this.#synced) this.#onData(event.header.id, event.header.s, event.payload);
        return;
      case 'message':
        this.#onMessage(event.message);
        return;
    }
  }

  #onMessage(raw: Record<string, unknown> & { t: string }): void {
    if (raw.t !== 'sync' && !this.#synced) return;
    const parsed = v.safeParse(HostMessageSchema, raw);
    if (!parsed.success) {
      const message = `invalid ${JSON.stringify(raw.t).slice(0, 40)} message: ${describeIssues(parsed.issues)}`;
      const id = raw.t === 'req' ? raw.id : undefined;
      if (typeof id === 'number' && Number.isSafeInteger(id) && id > 0) this.#reply(id, { e: { code: REMOTE_CODES.badRequest, message } });
      else this.write(encodeLine({ t: 'err', code: REMOTE_CODES.badLine, message }));
      return;
    }
    const msg: HostMessage = parsed.output;
    switch (msg.t) {
      case 'sync': {
        this.#cancelAll('new sync');
        this.#synced = true;
        this.#clientLimits = sendLimits(msg.lim);
        const h = this.#server.agent.hello();
        this.#granted = h.limits;
        const hello = { t: 'hello', nonce: msg.nonce, agent: h.agent, protocol: PROTOCOL_VERSION, hostname: h.hostname, bootId: h.bootId, via: 'monitor', ready: h.ready, lim: h.limits };
        this.write(Buffer.concat([Buffer.from('\n'), encodeLine(hello)]));
        return;
      }
      case 'req':
        this.#onRequest(msg.id, msg.m, msg.p ?? {});
        return;
      case 'cancel': {
        const e = this.#entries.get(msg.id);
        if (!e) return;
        this.#drop(msg.id);
        const err = new MonitorCallError(REMOTE_CODES.cancelled, 'cancelled by the client');
        if (e.kind === 'relay') {
          e.abort.abort(err);
          e.relay?.cancel(err);
        } else e.call.abort(err);
        this.#reply(msg.id, { e: { code: REMOTE_CODES.cancelled, message: 'cancelled by the client' } });
        return;
      }
      case 'ack': {
        const e = this.#entries.get(msg.id);
        if (!e) return;
        if (e.kind === 'local') {
          if (!e.call.ack(msg.s, msg.n)) this.#failEntry(msg.id, REMOTE_CODES.flow, `ack for stream ${msg.s} exceeds what was sent`);
          return;
        }
        if (add(e.toClient, msg.s, -msg.n) < 0) {
          this.#failEntry(msg.id, REMOTE_CODES.flow, `ack for stream ${msg.s} exceeds what was sent`);
          return;
        }
        this.#server.busy(e);
        e.relay?.consumed(msg.s, msg.n);
        return;
      }
      case 'eof': {
        const e = this.#entries.get(msg.id);
        if (e?.kind !== 'relay') return;
        if (e.relay) {
          const relay = e.relay;
          this.#pacer(e, msg.s).eof(() => relay.eof(msg.s));
        } else e.early.push({ stream: msg.s });
        return;
      }
    }
  }

  #onData(id: number, stream: StreamName, payload: Buffer): void {
    const e = this.#entries.get(id);
    if (e?.kind !== 'relay') return;
    if (payload.length > this.#granted.chunk) {
      this.#failEntry(id, REMOTE_CODES.flow, `a frame of ${payload.length} bytes on stream ${stream}: the limit announced is ${this.#granted.chunk}`);
      return;
    }
    if (add(e.toAgent, stream, payload.length) > this.#granted.window) {
      this.#failEntry(id, REMOTE_CODES.flow, `stream ${stream} exceeded its flow-control window`);
      return;
    }
    this.#server.busy(e);
    if (e.relay) this.#pacer(e, stream).data(payload, true);
    else e.early.push({ stream, payload: Buffer.from(payload) });
  }

  #pacer(e: RelayEntry, stream: StreamName): StreamPacer {
    let p = e.pacers.get(stream);
    if (!p) {
      p = new StreamPacer(
        (piece) => {
          const written = e.relay?.data(stream, piece);
          if (written && this.#reading) this.#lend(written);
        },
        () => this.#server.contended(e),
        e.agentLimits,
      );
      e.pacers.set(stream, p);
    }
    return p;
  }

  #failEntry(id: number, code: string, message: string): void {
    const e = this.#entries.get(id);
    if (!e) return;
    this.#drop(id);
    const err = new MonitorCallError(code, message);
    if (e.kind === 'relay') {
      e.abort.abort(err);
      e.relay?.cancel(err);
    } else e.call.abort(err);
    this.#reply(id, { e: { code, message } });
  }

  #onRequest(id: number, method: string, params: unknown): void {
    if (this.#entries.has(id)) {
      this.#reply(id, { e: { code: REMOTE_CODES.duplicateId, message: `request id ${id} is already in use` } });
      return;
    }
    if (this.#entries.size >= MAX_REQUESTS_PER_CLIENT) {
      this.#reply(id, { e: { code: 'EBUSY', message: `more than ${MAX_REQUESTS_PER_CLIENT} requests open on one connection` } });
      return;
    }
    if (method.startsWith(MONITOR_PREFIX)) this.#local(id, method, params);
    else this.#relay(id, method, params);
  }

  #local(id: number, method: string, params: unknown): void {
    const handler = Object.hasOwn(this.#server.handlers, method) ? this.#server.handlers[method] : undefined;
    if (!handler) {
      this.#reply(id, { e: { code: REMOTE_CODES.unknownMethod, message: `unknown method ${JSON.stringify(method)}` } });
      return;
    }
    const call = new LocalCall(id, method, this);
    const entry: LocalEntry = { kind: 'local', call };
    this.#entries.set(id, entry);
    handler(call, params).then(
      (r) => {
        if (this.#entries.get(id) !== entry) return;
        this.#drop(id);
        this.#reply(id, { r: r ?? null });
      },
      (err: unknown) => {
        if (this.#entries.get(id) !== entry) return;
        this.#drop(id);
        this.#reply(id, { e: errorBody(err) });
      },
    );
  }

  #relay(id: number, method: string, params: unknown): void {
    const entry: RelayEntry = {
      kind: 'relay',
      method,
      relay: undefined,
      early: [],
      toAgent: new Map(),
      toClient: new Map(),
      pacers: new Map(),
      agentLimits: this.#granted,
      abort: new AbortController(),
    };
    this.#entries.set(id, entry);
    this.#server.busy(entry);
    const live = (): boolean => this.#entries.get(id) === entry;
    this.#server.agent.session(entry.abort.signal).then(
      (agent) => {
        if (!live()) return;
        let relay: Relay;
        try {
          relay = agent.relay(method, params, {
            data: (s, payload) => {
              if (!live()) return;
              add(entry.toClient, s, payload.length);
              this.writeData(id, s, payload);
            },
            eof: (s) => {
              if (live()) this.write(encodeLine({ t: 'eof', id, s }));
            },
            ack: (s, n) => {
              if (!live()) return;
              add(entry.toAgent, s, -n);
              this.write(encodeLine({ t: 'ack', id, s, n }));
              entry.pacers.get(s)?.acked(n);
            },
          });
        } catch (err) {
          this.#drop(id);
          this.#reply(id, { e: errorBody(err) });
          return;
        }
        entry.relay = relay;
        entry.agentLimits = agent.hello.limits;
        for (const f of entry.early) {
          const pacer = this.#pacer(entry, f.stream);
          if (f.payload) pacer.data(f.payload);
          else pacer.eof(() => relay.eof(f.stream));
        }
        entry.early = [];
        relay.result.then(
          (r) => {
            if (!live()) return;
            this.#drop(id);
            this.#reply(id, { r: r ?? null });
          },
          (err: unknown) => {
            if (!live()) return;
            this.#drop(id);
            this.#reply(id, { e: errorBody(err) });
          },
        );
      },
      (err: unknown) => {
        if (!live()) return;
        this.#drop(id);
        this.#reply(id, { e: errorBody(err) });
      },
    );
  }
}

/** `{code, message}` for the wire: the agent's own code for its errors, GoShip's code for the rest. */
export function errorBody(err: unknown): { code: string; message: string } {
  if (err instanceof AgentRemoteError) return { code: err.remoteCode, message: err.remoteMessage };
  if (err instanceof MonitorCallError) return { code: err.wireCode, message: err.message.slice(0, 4000) };
  const e = err as { code?: unknown; message?: unknown };
  const code = typeof e?.code === 'string' && /^[A-Z][A-Z0-9_]{0,63}$/.test(e.code) ? e.code : REMOTE_CODES.internal;
  const message = typeof e?.message === 'string' ? e.message : String(err);
  return { code, message: message.slice(0, 4000) };
}

/** A request that sent something toward the guest this recently keeps bulk streams to their share (pacer.ts). */
export const BUSY_MS = 500;

export class MonitorServer {
  readonly #sessions = new Set<ClientSession>();
  /** `readWaits`: how often a client's reading waited for the agent's socket to take what it had lent. */
  readonly stats = { readWaits: 0 };
  #server: Server | undefined;
  /** Open requests by when they last sent something toward the agent. */
  readonly #busy = new Map<object, number>();

  constructor(
    readonly path: string,
    readonly agent: AgentSide,
    readonly handlers: Record<string, LocalHandler>,
  ) {}

  get clients(): number {
    return this.#sessions.size;
  }

  forget(session: ClientSession): void {
    this.#sessions.delete(session);
  }

  /** Request `who` sent something toward the agent (a request, data, an ack). */
  busy(who: object): void {
    this.#busy.set(who, performance.now());
  }

  /** Request `who` is over: however recently it was busy, it no longer holds others back. */
  idle(who: object): void {
    this.#busy.delete(who);
  }

  /** Whether a request other than `who`, still open, was busy in the last BUSY_MS. */
  contended(who: object): boolean {
    const since = performance.now() - BUSY_MS;
    for (const [w, at] of this.#busy) {
      if (at < since) this.#busy.delete(w);
      else if (w !== who) return true;
    }
    return false;
  }


  /**
   * Listens on `path` (owner-only). A stale socket file (nobody answering) is
   * replaced; a live one means another monitor serves this VM: refused.
   */
  async listen(): Promise<void> {
    const listener = await listenUnix(this.path);
    if (!listener) throw new MonitorCallError('ESTATE', `another monitor already serves ${this.path}`);
    this.adopt(listener);
  }

  /** Serves on a socket listening already (the monitor's entry made it), the clients waiting on it first. */
  adopt(listener: Listener): void {
    const { server, queued } = listener;
    server.removeAllListeners('connection');
    server.on('connection', (socket: Socket) => this.#connected(socket));
    for (const socket of queued.splice(0)) this.#connected(socket);
    this.#server = server;
  }

  /** A client's socket, paused until its session listens. */
  #connected(socket: Socket): void {
    if (this.#sessions.size >= MAX_CLIENTS) {
      socket.destroy();
      return;
    }
    this.#sessions.add(new ClientSession(socket, this));
  }

  #closed: Promise<void> | undefined;

  /**
   * Takes no more clients; those connected keep their sessions. The socket's
   * path goes at once (libuv unlinks a listening unix socket as it closes it),
   * so this must come before another monitor of the VM listens there, never
   * after.
   */
  stopAccepting(): void {
    const server = this.#server;
    this.#server = undefined;
    if (server) this.#closed = new Promise<void>((r) => server.close(() => r()));
  }

  /**
   * Stops listening and ends every client's session: resolves once every
   * client's socket has closed (what was written has reached it, or the
   * session's grace is over). The listening server does not count the
   * sockets `readInto` took over, so they are waited for here.
   */
  async close(reason: string): Promise<void> {
    this.stopAccepting();
    const sessions = [...this.#sessions];
    for (const s of sessions) s.close(reason, true);
    await Promise.all([this.#closed, ...sessions.map((s) => s.ended)]);
  }
}

