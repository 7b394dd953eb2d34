/**
 * Agent client session: one synchronised conversation with the guest agent
 * (or a VM's monitor speaking for it) over a transport.
 *
 * - connect: socket attempts and the sync/hello handshake, retried until
 *   `timeoutMs` (AgentSession.connect); the sync itself is repeated every
 *   `syncIntervalMs` until the hello carrying our nonce arrives (#sync).
 * - routing: request ids, replies, acks, eofs and data frames to the request
 *   they belong to; anything else is counted in `stats` and dropped.
 * - credit: each stream's flow-control window in both directions.
 * - close: every pending request fails with the reason the session ended.
 *
 * Everything that comes from the guest is validated and bounded: lines by
 * MAX_LINE, data frames by MAX_CHUNK, each stream by its credit window. Bad
 * lines and frames nobody asked for are counted (`stats`) and dropped; a
 * broken framing closes the session with EAGENT_PROTOCOL. Nothing the guest
 * sends is used as a host path or command.
 */
import { Buffer } from 'node:buffer';
import { randomBytes } from 'node:crypto';
import type { Socket } from 'node:net';
import { performance } from 'node:perf_hooks';
import type { Duplex, Writable } from 'node:stream';
import * as v from 'valibot';
import {
  AgentMessageSchema,
  CreditLedger,
  CreditWindow,
  HelloSchema,
  NoAgentSchema,
  MAX_CHUNK,
  OWN_LIMITS,
  PROTOCOL_VERSION,
  STREAM_NAMES,
  describeIssues,
  encodeLine,
  pumpWithCredit,
  sendLimits,
  type Decoded,
  type FlowLimits,
  type StreamName,
} from '../protocol/index.ts';
import { DEFAULT_REQUEST_TIMEOUT_MS, DEFAULT_RETRY_DELAY_MS, DEFAULT_SYNC_INTERVAL_MS, DEFAULT_TRANSFER_IDLE_TIMEOUT_MS } from './defaults.ts';
import { AgentTransport, checkSocketPath, connectUnix } from './transport.ts';
import { AgentClosedError, AgentError, AgentProtocolError, AgentRemoteError, AgentTimeoutError, AgentUnavailableError } from './errors.ts';

/** What the agent said about itself in its hello. */
export interface AgentHello {
  agent: string;
  protocol: number;
  hostname: string;
  bootId: string;
  /** `monitor` when a VM's monitor answered for the agent (its fields are the agent's last hello). */
  via?: 'monitor';
  /** From a monitor: whether the agent's session is up now. */
  ready?: boolean;
  /** What this client sends within: the limits the agent (or the monitor for it) announced, UNANNOUNCED_LIMITS when it announced none. */
  limits: FlowLimits;
}

export type ConnectProgress =
  | { phase: 'connecting'; attempt: number; elapsedMs: number; lastError?: string }
  | { phase: 'syncing'; attempt: number; elapsedMs: number }
  | { phase: 'ready'; attempt: number; elapsedMs: number; hello: AgentHello };

export interface AgentConnectOptions {
  /** Give up when no agent has said hello within this time. */
  timeoutMs: number;
  onProgress?: (progress: ConnectProgress) => void;
  /** Reply timeout of ping, info, stat, shutdown and `call`. Default 15 s (DEFAULT_REQUEST_TIMEOUT_MS). */
  requestTimeoutMs?: number;
  /** upload/download fail when nothing moves for this long. Default 60 s (DEFAULT_TRANSFER_IDLE_TIMEOUT_MS). */
  transferIdleTimeoutMs?: number;
  /** The sync is repeated at this interval until the agent answers. Default 1 s (DEFAULT_SYNC_INTERVAL_MS). */
  syncIntervalMs?: number;
  /** Wait between connection attempts to the socket. Default 200 ms (DEFAULT_RETRY_DELAY_MS). */
  retryDelayMs?: number;
  /** Give up after this many connection attempts, before the timeout (a socket that either answers now or not at all). Default: until the timeout. */
  maxAttempts?: number;
  /** Abandons the attempt (EAGENT_CLOSED); it only bounds connect, not the session it returns. */
  signal?: AbortSignal;
}

/** Counters of what the guest sent that was dropped. */
export interface AgentClientStats {
  /** Lines that were not JSON messages. */
  badLines: number;
  /** Lines over MAX_LINE, discarded up to their newline. */
  longLines: number;
  /** Messages (or data headers) that failed schema validation. */
  invalidMessages: number;
  /** Replies, acks and eofs for ids with no pending request. */
  unknownIds: number;
  /** Data frames nobody asked for, and their bytes. */
  unexpectedData: number;
  droppedDataBytes: number;
  /** Hellos answering a repeated sync after the session started. */
  extraHellos: number;
  /** Id-less error lines from the agent (it could not parse something we sent). */
  agentComplaints: number;
  lastAgentComplaint: string | undefined;
}

/** Thrown into a pump whose request is over: it stops without failing anything. */
const FINISHED = Symbol('request finished');

/** Where the data frames of one received stream go; `consumed` returns their credit to the agent. */
export interface Sink {
  deliver(payload: Buffer, consumed: () => void): void;
  /** The stream's eof arrived. */
  end?(): void;
}

/** One open request: how to settle it, the streams it receives and sends, its timer. */
export interface Pending {
  id: number;
  method: string;
  resolve: (r: unknown) => void;
  reject: (e: Error) => void;
  sinks: Map<StreamName, { sink: Sink; ledger: CreditLedger }>;
  credits: Map<StreamName, CreditWindow>;
  timer: NodeJS.Timeout | undefined;
  idleMs: number | undefined;
  /** Detaches the caller's abort signal. */
  unbind: (() => void) | undefined;
  /** A relayed request: acks and eofs from the agent go to the relay, not to credits. */
  relay: RelayEvents | undefined;
}

/** What a relayed request hears from the agent (the monitor passes it on to its own client). */
export interface RelayEvents {
  /** A data frame of `stream`: hand it on; report consumption with `Relay.consumed`. */
  data(stream: StreamName, payload: Buffer): void;
  /** The agent ended `stream`. */
  eof(stream: StreamName): void;
  /** The agent consumed `n` bytes the relay sent on `stream`. */
  ack(stream: StreamName, n: number): void;
}

/** One request relayed on this session on behalf of someone else (the monitor's clients). */
export interface Relay {
  /** The agent's reply: its result, or an AgentRemoteError / AgentClosedError. */
  readonly result: Promise<unknown>;
  /**
   * Send a data frame of `stream` (the relay's sender keeps to its window).
   * The payload is not copied: `undefined` when the channel has written it
   * already, else a promise that settles once the channel no longer refers to
   * it (written, or the session ended). See `writeDataFrame`.
   */
  data(stream: StreamName, payload: Buffer): Promise<void> | undefined;
  /** End `stream`. */
  eof(stream: StreamName): void;
  /** The relay's receiver consumed `n` bytes of `stream`: credit flows back to the agent. */
  consumed(stream: StreamName, n: number): void;
  /** Stop the request here and in the guest. */
  cancel(reason: Error): void;
}

/** What a request receives, sends and waits for, besides its reply. */
export interface RequestSetup {
  sinks?: Partial<Record<StreamName, Sink>>;
  credits?: Partial<Record<StreamName, CreditWindow>>;
  /** Total reply timeout. */
  timeoutMs?: number;
  /** Timeout re-armed by any data or ack of this request. */
  idleMs?: number;
  /** The caller's abort: the request fails on this side and is cancelled in the guest. */
  signal?: AbortSignal;
  /** Relay mode: every stream's frames, acks and eofs go to these handlers. */
  relay?: RelayEvents;
}

type State = 'syncing' | 'ready' | 'closed';

const sleep = (ms: number, signal?: AbortSignal): Promise<void> =>
  new Promise((r) => {
    const t = setTimeout(done, ms);
    function done(): void {
      clearTimeout(t);
      signal?.removeEventListener('abort', done);
      r();
    }
    signal?.addEventListener('abort', done, { once: true });
  });

/** A writable sink that acknowledges a chunk once the Writable has flushed it. */
export class WritableSink implements Sink {
  readonly #writable: Writable | undefined;
  readonly #endOnEof: boolean;
  #inflight = 0;
  #waiters: Array<() => void> = [];

  /** `endOnEof`: the stream's eof ends `writable` (a tunnel's half close); otherwise the caller ends it. */
  constructor(writable: Writable | undefined, o: { endOnEof?: boolean } = {}) {
    this.#writable = writable;
    this.#endOnEof = o.endOnEof === true;
  }

  end(): void {
    const w = this.#writable;
    if (!this.#endOnEof || !w || w.destroyed || w.writableEnded) return;
    void this.drained().then(() => w.end());
  }

  deliver(payload: Buffer, consumed: () => void): void {
    const w = this.#writable;
    if (!w || w.destroyed || w.writableEnded) {
      consumed();
      return;
    }
    this.#inflight++;
    w.write(payload, () => {
      this.#inflight--;
      consumed();
      if (this.#inflight === 0) {
        const ws = this.#waiters;
        this.#waiters = [];
        for (const f of ws) f();
      }
    });
  }

  drained(): Promise<void> {
    if (this.#inflight === 0) return Promise.resolve();
    return new Promise((r) => this.#waiters.push(r));
  }
}

/** One session with the agent: created by `connect` or `attach`, over once closed (then connect again). */
export class AgentSession {
  /** The hello of the current session: agent version, protocol, hostname, boot id. */
  hello: AgentHello = { agent: '', protocol: 0, hostname: '', bootId: '', limits: sendLimits(undefined) };
  readonly stats: AgentClientStats = {
    badLines: 0,
    longLines: 0,
    invalidMessages: 0,
    unknownIds: 0,
    unexpectedData: 0,
    droppedDataBytes: 0,
    extraHellos: 0,
    agentComplaints: 0,
    lastAgentComplaint: undefined,
  };

  readonly #transport: AgentTransport;
  readonly #where: string;
  readonly #options: AgentConnectOptions;
  readonly #nonce = randomBytes(12).toString('hex');
  readonly #pending = new Map<number, Pending>();
  #state: State = 'syncing';
  #closeReason: AgentError | undefined;
  #nextId = 1;
  #handshake: { resolve: () => void; reject: (e: Error) => void; resend: () => void } | undefined;
  readonly #closeWaiters: Array<() => void> = [];

  private constructor(stream: Duplex, where: string, options: AgentConnectOptions) {
    this.#where = where;
    this.#options = options;
    this.#transport = new AgentTransport(stream, {
      decoded: (e) => this.#onDecoded(e),
      error: (err) => this.#terminate(new AgentClosedError(`agent channel ${where}: ${err.message}`, { byClient: false, cause: err })),
      close: () =>
        this.#terminate(
          this.hello.via === 'monitor'
            ? new AgentClosedError(`the VM's monitor went away (${where}): what was running through it was cut off`, {
                byClient: false,
                hint: 'run the command again: a new monitor takes over the running VM',
              })
            : new AgentClosedError(`agent channel ${where}: closed by the other side`, { byClient: false }),
        ),
    });
  }

  /**
   * Connect to the unix socket QEMU serves for the agent's virtio-serial port
   * (`-chardev socket,server=on,wait=off`) and wait for the agent's hello.
   * Retries (the socket is missing, QEMU has not started, the guest is still
   * booting, the agent restarts) until `timeoutMs`.
   */
  static async connect(socketPath: string, options: AgentConnectOptions): Promise<AgentSession> {
    checkSocketPath(socketPath);
    const start = performance.now();
    const deadline = start + options.timeoutMs;
    const retryDelay = options.retryDelayMs ?? DEFAULT_RETRY_DELAY_MS;
    const { signal } = options;
    const abandoned = (): AgentClosedError => new AgentClosedError(`connect to the guest agent on ${socketPath}: abandoned by the caller`, { byClient: true });
    let attempt = 0;
    let lastError: string | undefined;
    for (;;) {
      if (signal?.aborted) throw abandoned();
      const remaining = deadline - performance.now();
      if (remaining <= 0) break;
      attempt++;
      options.onProgress?.({ phase: 'connecting', attempt, elapsedMs: performance.now() - start, ...(lastError === undefined ? {} : { lastError }) });
      let socket: Socket;
      try {
        socket = await connectUnix(socketPath, remaining);
      } catch (err) {
        const e = err as NodeJS.ErrnoException;
        lastError = e.code ? `${e.code} on connect` : e.message;
        if (options.maxAttempts !== undefined && attempt >= options.maxAttempts) break;
        await sleep(Math.max(0, Math.min(retryDelay, deadline - performance.now())), signal);
        continue;
      }
      const session = new AgentSession(socket, socketPath, options);
      const onAbort = (): void => session.#terminate(abandoned());
      signal?.addEventListener('abort', onAbort, { once: true });
      try {
        options.onProgress?.({ phase: 'syncing', attempt, elapsedMs: performance.now() - start });
        await session.#sync(deadline);
        options.onProgress?.({ phase: 'ready', attempt, elapsedMs: performance.now() - start, hello: session.hello });
        return session;
      } catch (err) {
        session.#transport.destroy();
        if (err instanceof AgentProtocolError || err instanceof AgentUnavailableError) throw err;
        if (signal?.aborted) throw abandoned();
        lastError = (err as Error).message;
        if (err instanceof AgentTimeoutError) break;
        if (options.maxAttempts !== undefined && attempt >= options.maxAttempts) break;
        await sleep(Math.max(0, Math.min(retryDelay, deadline - performance.now())), signal);
      } finally {
        signal?.removeEventListener('abort', onAbort);
      }
    }
    throw new AgentTimeoutError(
      `connect to the guest agent on ${socketPath}: no hello within ${options.timeoutMs} ms (last: ${lastError ?? 'no answer'})`,
      {
        timeoutMs: options.timeoutMs,
        hint: "is the VM running and goship-agent started in the guest? Read the VM's console.log (guest boot) and qemu.log; in the guest: journalctl -u goship-agent",
      },
    );
  }

  /** Run a session over an already connected byte stream (one attempt, no reconnect). */
  static async attach(stream: Duplex, options: AgentConnectOptions & { name?: string }): Promise<AgentSession> {
    const session = new AgentSession(stream, options.name ?? 'stream', options);
    try {
      await session.#sync(performance.now() + options.timeoutMs);
    } catch (err) {
      stream.destroy();
      if (err instanceof AgentTimeoutError) {
        throw new AgentTimeoutError(`agent on ${options.name ?? 'stream'}: no hello within ${options.timeoutMs} ms`, { timeoutMs: options.timeoutMs });
      }
      throw err;
    }
    return session;
  }

  /** Resolves once the session is over: closed by `close()`, by the other side, or broken (`closeReason` says which). */
  closedPromise(): Promise<void> {
    if (this.#state === 'closed') return Promise.resolve();
    return new Promise((r) => this.#closeWaiters.push(r));
  }

  /** True once closed, by `close()` or because the channel broke (`closeReason`). */
  get closed(): boolean {
    return this.#state === 'closed';
  }

  get closeReason(): AgentError | undefined {
    return this.#closeReason;
  }

  /** Reply timeout of a request without one of its own. */
  get requestTimeoutMs(): number {
    return this.#options.requestTimeoutMs ?? DEFAULT_REQUEST_TIMEOUT_MS;
  }

  /** How long a transfer may go without progress. */
  get transferIdleTimeoutMs(): number {
    return this.#options.transferIdleTimeoutMs ?? DEFAULT_TRANSFER_IDLE_TIMEOUT_MS;
  }

  // ------------------------------------------------------------ sync and routing

  /** Send the sync (repeated until answered) and wait for the hello carrying our nonce. */
  #sync(deadline: number): Promise<void> {
    const interval = this.#options.syncIntervalMs ?? DEFAULT_SYNC_INTERVAL_MS;
    const syncLine = encodeLine({ t: 'sync', nonce: this.#nonce, lim: OWN_LIMITS });
    // The leading newline ends any partial line the agent may hold from an earlier session.
    this.#transport.write(Buffer.concat([Buffer.from('\n'), syncLine]));
    let repeats = 0;
    return new Promise<void>((resolve, reject) => {
      const resend = (): void => {
        repeats++;
        // Start parsing afresh: our own input may have begun inside a stale frame.
        this.#transport.resetDecoder();
        if (this.#transport.writableLength > 0) return; // the agent is not reading yet: do not pile up syncs
        // From the second repeat on, pad with MAX_CHUNK newlines: if the agent sits inside a stale
        // data frame from an earlier session, the padding completes it and the sync is seen.
        const pad = repeats >= 2 ? Buffer.alloc(MAX_CHUNK + 1, 0x0a) : Buffer.from('\n');
        this.#transport.write(Buffer.concat([pad, syncLine]));
      };
      const timer = setInterval(resend, interval);
      const deadlineTimer = setTimeout(
        () => finish(new AgentTimeoutError(`agent on ${this.#where}: no hello`, { timeoutMs: this.#options.timeoutMs })),
        Math.max(0, deadline - performance.now()),
      );
      const finish = (err?: Error): void => {
        clearInterval(timer);
        clearTimeout(deadlineTimer);
        this.#handshake = undefined;
        if (err) reject(err);
        else resolve();
      };
      this.#handshake = { resolve: () => finish(), reject: (e) => finish(e), resend };
      if (this.#state === 'closed') finish(this.#closeReason ?? new AgentClosedError('closed', { byClient: false }));
    });
  }

  #onHelloDuringSync(raw: Record<string, unknown>): void {
    // The agent's start-up announcement (an empty nonce): it is reading now, and our
    // earlier syncs may have been lost with the port's closed state. Sync again at once
    // rather than at the next tick of the interval.
    if (raw.nonce === '') {
      this.#handshake?.resend();
      return;
    }
    if (raw.nonce !== this.#nonce) return; // stale: an earlier session's
    const parsed = v.safeParse(HelloSchema, raw);
    if (!parsed.success) {
      this.#handshake?.reject(
        new AgentProtocolError(`agent on ${this.#where}: invalid hello: ${describeIssues(parsed.issues)}`, { received: raw }),
      );
      return;
    }
    const h = parsed.output;
    if (h.protocol !== PROTOCOL_VERSION) {
      this.#handshake?.reject(
        new AgentProtocolError(
          `agent on ${this.#where}: incompatible protocol version ${h.protocol} (agent ${JSON.stringify(h.agent)}); this host speaks version ${PROTOCOL_VERSION}`,
          { received: raw, hint: 'install the goship-agent that matches this GoShip (dist/goship-agent.mjs) in the guest and restart it' },
        ),
      );
      return;
    }
    this.hello = {
      agent: h.agent,
      protocol: h.protocol,
      hostname: h.hostname,
      bootId: h.bootId,
      ...(h.via ? { via: h.via } : {}),
      ...(h.ready !== undefined ? { ready: h.ready } : {}),
      limits: sendLimits(h.lim),
    };
    this.#state = 'ready';
    this.#transport.resetDecoder();
    this.#handshake?.resolve();
  }

  /** The guest says no agent can run there: the handshake fails at once with its reason. */
  #onNoAgent(raw: Record<string, unknown>): void {
    const parsed = v.safeParse(NoAgentSchema, raw);
    if (!parsed.success) return;
    this.#handshake?.reject(new AgentUnavailableError(this.#where, parsed.output.code, parsed.output.message));
  }

  #onDecoded(event: Decoded): void {
    if (this.#state === 'closed') return;
    if (this.#state === 'syncing') {
      // Before our hello, everything is leftover from an earlier session.
      if (event.kind === 'fatal') this.#transport.resetDecoder();
      else if (event.kind === 'message' && event.message.t === 'hello') this.#onHelloDuringSync(event.message);
      else if (event.kind === 'message' && event.message.t === 'no-agent') this.#onNoAgent(event.message);
      return;
    }
    switch (event.kind) {
      case 'bad':
        if (event.reason === 'line-too-long') this.stats.longLines++;
        else if (event.reason === 'bad-data-header') this.stats.invalidMessages++;
        else this.stats.badLines++;
        return;
      case 'fatal':
        this.#terminate(
          new AgentProtocolError(`agent channel ${this.#where}: ${event.detail}; connection closed`, {
            received: event.detail,
            hint: 'connect again; if it repeats, the program answering in the guest is not a compatible goship-agent',
          }),
        );
        return;
      case 'data': {
        const { id, s, n } = event.header;
        const p = this.#pending.get(id);
        const entry = p?.sinks.get(s);
        if (!p || !entry) {
          this.stats.unexpectedData++;
          this.stats.droppedDataBytes += n;
          return;
        }
        if (!entry.ledger.received(n)) {
          this.fail(p, new AgentProtocolError(`agent ${p.method}: stream ${s} exceeded its flow-control window`));
          return;
        }
        this.#touch(p);
        entry.sink.deliver(event.payload, () => entry.ledger.consumed(n));
        return;
      }
      case 'message':
        this.#onMessage(event.message);
        return;
    }
  }

  #onMessage(raw: Record<string, unknown>): void {
    const parsed = v.safeParse(AgentMessageSchema, raw);
    if (!parsed.success) {
      this.stats.invalidMessages++;
      return;
    }
    const msg = parsed.output;
    switch (msg.t) {
      case 'hello':
        if (msg.nonce === this.#nonce) {
          this.stats.extraHellos++;
          return;
        }
        this.#terminate(
          new AgentClosedError(`agent channel ${this.#where}: the guest agent restarted (hello without our nonce); pending requests are lost`, {
            byClient: false,
            hint: 'connect again',
          }),
        );
        return;
      case 'no-agent':
        // Only meaningful before a hello; a live session ignores it.
        this.stats.invalidMessages++;
        return;
      case 'err':
        this.stats.agentComplaints++;
        this.stats.lastAgentComplaint = `${msg.code}: ${msg.message}`;
        return;
      case 'res': {
        const p = this.#pending.get(msg.id);
        if (!p) {
          this.stats.unknownIds++;
          return;
        }
        this.#finish(p);
        if (msg.e) p.reject(new AgentRemoteError(p.method, msg.e.code, msg.e.message));
        else p.resolve(msg.r);
        return;
      }
      case 'ack': {
        const p = this.#pending.get(msg.id);
        if (p?.relay) {
          this.#touch(p);
          p.relay.ack(msg.s, msg.n);
          return;
        }
        const credit = p?.credits.get(msg.s);
        if (!p || !credit) {
          this.stats.unknownIds++;
          return;
        }
        this.#touch(p);
        if (!credit.grant(msg.n)) this.fail(p, new AgentProtocolError(`agent ${p.method}: ack for ${msg.s} exceeds the bytes sent`));
        return;
      }
      case 'eof': {
        const p = this.#pending.get(msg.id);
        if (p?.relay) p.relay.eof(msg.s);
        else if (p?.sinks.has(msg.s)) p.sinks.get(msg.s)!.sink.end?.();
        else this.stats.unknownIds++;
        return;
      }
    }
  }

  // ------------------------------------------------------------ requests

  /**
   * Send a request: its reply settles `result`; its streams are routed to
   * `setup`'s sinks and credits until then. Throws the close reason when the
   * session is not ready.
   */
  request(method: string, params: unknown, setup: RequestSetup = {}): { id: number; result: Promise<unknown>; pending: Pending } {
    if (this.#state !== 'ready') {
      throw this.#closeReason ?? new AgentClosedError(`agent ${method}: the client is not connected`, { byClient: true });
    }
    const id = this.#nextId++;
    let resolve!: (r: unknown) => void;
    let reject!: (e: Error) => void;
    const result = new Promise<unknown>((res, rej) => {
      resolve = res;
      reject = rej;
    });
    const p: Pending = { id, method, resolve, reject, sinks: new Map(), credits: new Map(), timer: undefined, idleMs: setup.idleMs, unbind: undefined, relay: setup.relay };
    for (const [s, sink] of Object.entries(setup.sinks ?? {}) as Array<[StreamName, Sink]>) {
      const ledger = new CreditLedger((n) => {
        if (this.#pending.get(id) === p) this.#transport.writeLine({ t: 'ack', id, s, n });
      });
      p.sinks.set(s, { sink, ledger });
    }
    for (const [s, credit] of Object.entries(setup.credits ?? {}) as Array<[StreamName, CreditWindow]>) p.credits.set(s, credit);
    const timeoutMs = setup.timeoutMs ?? setup.idleMs;
    if (timeoutMs !== undefined) {
      p.timer = setTimeout(() => this.#timeout(p, timeoutMs), timeoutMs);
    }
    this.#pending.set(id, p);
    const signal = setup.signal;
    if (signal !== undefined) {
      const onAbort = (): void => this.fail(p, new AgentClosedError(`agent ${method}: cancelled by the caller`, { byClient: true, cause: signal.reason }));
      if (signal.aborted) {
        queueMicrotask(onAbort);
      } else {
        signal.addEventListener('abort', onAbort, { once: true });
        p.unbind = () => signal.removeEventListener('abort', onAbort);
      }
    }
    this.#transport.writeLine({ t: 'req', id, m: method, p: params });
    return { id, result, pending: p };
  }

  #timeout(p: Pending, ms: number): void {
    this.fail(
      p,
      new AgentTimeoutError(`agent ${p.method}: no ${p.idleMs !== undefined ? 'progress' : 'reply'} within ${ms} ms`, { timeoutMs: ms, method: p.method }),
    );
  }

  #touch(p: Pending): void {
    if (p.idleMs === undefined || p.timer === undefined) return;
    p.timer.refresh();
  }

  /** The request is over: no more data, acks or credit for it. */
  #finish(p: Pending): void {
    this.#pending.delete(p.id);
    if (p.timer !== undefined) clearTimeout(p.timer);
    p.unbind?.();
    for (const c of p.credits.values()) c.close(FINISHED);
  }

  /** Fail a request on this side and tell the agent to stop it. */
  fail(p: Pending, err: Error): void {
    if (this.#pending.get(p.id) !== p) return;
    this.#finish(p);
    this.#transport.writeLine({ t: 'cancel', id: p.id });
    p.reject(err);
  }

  #terminate(reason: AgentError): void {
    if (this.#state === 'closed') return;
    this.#state = 'closed';
    this.#closeReason = reason;
    for (const w of this.#closeWaiters.splice(0)) w();
    this.#handshake?.reject(reason);
    const pending = [...this.#pending.values()];
    this.#pending.clear();
    for (const p of pending) {
      if (p.timer !== undefined) clearTimeout(p.timer);
      p.unbind?.();
      for (const c of p.credits.values()) c.close(FINISHED);
      p.reject(reason);
    }
    this.#transport.destroy();
  }

  async #sendData(p: Pending, stream: StreamName, chunk: Buffer): Promise<void> {
    if (this.#pending.get(p.id) !== p) throw FINISHED;
    this.#transport.writeData(p.id, stream, chunk);
    await this.#transport.whenWritable();
  }

  /**
   * Send `source` on `stream` of request `p` within `credit`, then its eof.
   * The request failing ends the pump quietly; the pump failing (the source
   * broke) fails the request. Never rejects.
   */
  pump(
    p: Pending,
    stream: StreamName,
    source: Parameters<typeof pumpWithCredit>[0],
    credit: CreditWindow,
    options: Parameters<typeof pumpWithCredit>[3],
  ): Promise<void> {
    return pumpWithCredit(source, credit, (chunk) => this.#sendData(p, stream, chunk), options).then(
      () => this.#sendEof(p, stream),
      (e: unknown) => {
        if (e !== FINISHED) this.fail(p, e instanceof Error ? e : new Error(String(e)));
      },
    );
  }

  #sendEof(p: Pending, stream: StreamName): void {
    if (this.#pending.get(p.id) === p) this.#transport.writeLine({ t: 'eof', id: p.id, s: stream });
  }

  /**
   * Relay one request for someone else: frames, acks and eofs pass through
   * `events` and the returned handle, so flow control stays end to end (the
   * agent's credit returns only when the far receiver has consumed). The
   * agent's window is still enforced here. No timeout: the far side cancels.
   */
  relay(method: string, params: unknown, events: RelayEvents): Relay {
    const sinks: Partial<Record<StreamName, Sink>> = {};
    for (const s of STREAM_NAMES) sinks[s] = { deliver: (payload) => events.data(s, payload) };
    const { id, result, pending } = this.request(method, params, { sinks, relay: events });
    return {
      result,
      data: (stream, payload) => (this.#pending.get(id) === pending ? this.#transport.writeData(id, stream, payload) : undefined),
      eof: (stream) => this.#sendEof(pending, stream),
      consumed: (stream, n) => {
        if (this.#pending.get(id) === pending) pending.sinks.get(stream)?.ledger.consumed(n);
      },
      cancel: (reason) => this.fail(pending, reason),
    };
  }

  /** Close the channel; pending requests fail with EAGENT_CLOSED (saying `reason`, when given). */
  async close(reason?: string): Promise<void> {
    this.#terminate(new AgentClosedError(reason ?? `agent channel ${this.#where}: closed by the client`, { byClient: true }));
    await this.#transport.closed();
  }
}

/** A result from the other side, checked against its schema (EAGENT_PROTOCOL when it does not match). */
export function validateResult<S extends v.GenericSchema>(schema: S, raw: unknown, method: string): v.InferOutput<S> {
  const r = v.safeParse(schema, raw);
  if (!r.success) {
    throw new AgentProtocolError(`agent ${method}: invalid result: ${describeIssues(r.issues)}`, { received: raw });
  }
  return r.output;
}

