/**
 * The host end of the agent channel: connects to QEMU's chardev socket for the
 * VM's virtio-serial port, synchronises a session with the guest agent, and
 * runs requests and their flow-controlled streams over it.
 *
 * Everything that comes from the guest is validated and bounded: lines by
 * MAX_LINE, data frames by MAX_CHUNK, each stream by its credit window. Bad
 * lines and frames nobody asked for are counted (`stats`) and dropped; a
 * broken framing closes the client with EAGENT_PROTOCOL. Nothing the guest
 * sends is used as a host path or command.
 */
import { Buffer } from 'node:buffer';
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { rename, stat, statfs, unlink } from 'node:fs/promises';
import { dirname } from 'node:path';
import type { Socket } from 'node:net';
import { performance } from 'node:perf_hooks';
import type { Duplex, Readable, Writable } from 'node:stream';
import * as v from 'valibot';
import { ValidationError } from '../errors.ts';
import {
  AgentMessageSchema,
  CreditLedger,
  CreditWindow,
  DownloadResultSchema,
  ExecParamsSchema,
  ExecResultSchema,
  HelloSchema,
  NoAgentSchema,
  InfoResultSchema,
  MAX_CHUNK,
  OWN_LIMITS,
  PROTOCOL_VERSION,
  STREAM_NAMES,
  PingResultSchema,
  ShutdownResultSchema,
  StatResultSchema,
  UploadParamsSchema,
  UploadResultSchema,
  describeIssues,
  encodeLine,
  pumpWithCredit,
  sendLimits,
  type Decoded,
  type FlowLimits,
  type ExecResult,
  type InfoResult,
  type ShutdownResult,
  type StatResult,
  type StreamName,
} from '../protocol/index.ts';
import {
  DEFAULT_REQUEST_TIMEOUT_MS,
  DEFAULT_RETRY_DELAY_MS,
  DEFAULT_SYNC_INTERVAL_MS,
  DEFAULT_TRANSFER_IDLE_TIMEOUT_MS,
  EXEC_REPLY_GRACE_MS,
  HASH_READ_BYTES,
} from './defaults.ts';
import { openPartial } from './partial.ts';
import { AgentTransport, checkSocketPath, connectUnix } from './transport.ts';
import { AgentClosedError, AgentError, AgentProtocolError, AgentRemoteError, AgentTimeoutError, AgentUnavailableError, TransferLimitError } from './errors.ts';

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

export interface ExecOptions {
  /** Added to the agent's environment. */
  env?: Record<string, string>;
  /** Absolute working directory in the guest; default `/`. */
  cwd?: string;
  /** Streamed to the command's stdin; without it stdin is /dev/null. */
  stdin?: Readable | Buffer | string;
  /** Receives the command's stdout (never ended by the client). Discarded when absent. */
  stdout?: Writable;
  /** Receives the command's stderr (never ended by the client). Discarded when absent. */
  stderr?: Writable;
  /** The agent kills the command's process group after this long; the result then has `timedOut: true`. */
  timeoutMs?: number;
  /** Run under a pseudo-terminal (util-linux `script` in the guest); stderr then arrives on stdout. */
  tty?: boolean;
  /** With tty: the terminal's window size (both or neither). */
  rows?: number;
  cols?: number;
  /** Aborting it cancels the command in the guest (its process group is killed); the call rejects with EAGENT_CLOSED. */
  signal?: AbortSignal;
}

export interface DownloadOptions {
  /** Refuse a file larger than this, before any byte moves, and stop a stream that passes it. Default: no bound but the announced size. */
  maxBytes?: number;
  /** Aborting it cancels the transfer; the partial file is removed. */
  signal?: AbortSignal;
}

export interface UploadOptions {
  /** Permission bits; default 0644. */
  mode?: number;
  uid?: number;
  gid?: number;
}

export interface TransferResult {
  bytes: number;
  sha256: string;
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

const FINISHED = Symbol('request finished');

interface Sink {
  deliver(payload: Buffer, consumed: () => void): void;
}

interface Pending {
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

interface RequestSetup {
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
class WritableSink implements Sink {
  readonly #writable: Writable | undefined;
  #inflight = 0;
  #waiters: Array<() => void> = [];

  constructor(writable: Writable | undefined) {
    this.#writable = writable;
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

export class AgentClient {
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
  #handshake: { resolve: () => void; reject: (e: Error) => void } | undefined;
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
  static async connect(socketPath: string, options: AgentConnectOptions): Promise<AgentClient> {
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
      const client = new AgentClient(socket, socketPath, options);
      const onAbort = (): void => client.#terminate(abandoned());
      signal?.addEventListener('abort', onAbort, { once: true });
      try {
        options.onProgress?.({ phase: 'syncing', attempt, elapsedMs: performance.now() - start });
        await client.#sync(deadline);
        options.onProgress?.({ phase: 'ready', attempt, elapsedMs: performance.now() - start, hello: client.hello });
        return client;
      } catch (err) {
        client.#transport.destroy();
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
  static async attach(stream: Duplex, options: AgentConnectOptions & { name?: string }): Promise<AgentClient> {
    const client = new AgentClient(stream, options.name ?? 'stream', options);
    try {
      await client.#sync(performance.now() + options.timeoutMs);
    } catch (err) {
      stream.destroy();
      if (err instanceof AgentTimeoutError) {
        throw new AgentTimeoutError(`agent on ${options.name ?? 'stream'}: no hello within ${options.timeoutMs} ms`, { timeoutMs: options.timeoutMs });
      }
      throw err;
    }
    return client;
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

  // ------------------------------------------------------------ session

  /** Send the sync (repeated until answered) and wait for the hello carrying our nonce. */
  #sync(deadline: number): Promise<void> {
    const interval = this.#options.syncIntervalMs ?? DEFAULT_SYNC_INTERVAL_MS;
    const syncLine = encodeLine({ t: 'sync', nonce: this.#nonce, lim: OWN_LIMITS });
    // The leading newline ends any partial line the agent may hold from an earlier session.
    this.#transport.write(Buffer.concat([Buffer.from('\n'), syncLine]));
    let repeats = 0;
    return new Promise<void>((resolve, reject) => {
      const timer = setInterval(() => {
        repeats++;
        // Start parsing afresh: our own input may have begun inside a stale frame.
        this.#transport.resetDecoder();
        if (this.#transport.writableLength > 0) return; // the agent is not reading yet: do not pile up syncs
        // From the second repeat on, pad with MAX_CHUNK newlines: if the agent sits inside a stale
        // data frame from an earlier session, the padding completes it and the sync is seen.
        const pad = repeats >= 2 ? Buffer.alloc(MAX_CHUNK + 1, 0x0a) : Buffer.from('\n');
        this.#transport.write(Buffer.concat([pad, syncLine]));
      }, interval);
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
      this.#handshake = { resolve: () => finish(), reject: (e) => finish(e) };
      if (this.#state === 'closed') finish(this.#closeReason ?? new AgentClosedError('closed', { byClient: false }));
    });
  }

  #onHelloDuringSync(raw: Record<string, unknown>): void {
    if (raw.nonce !== this.#nonce) return; // stale: an earlier session's, or the agent's start-up announcement
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
          this.#fail(p, new AgentProtocolError(`agent ${p.method}: stream ${s} exceeded its flow-control window`));
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
        if (!credit.grant(msg.n)) this.#fail(p, new AgentProtocolError(`agent ${p.method}: ack for ${msg.s} exceeds the bytes sent`));
        return;
      }
      case 'eof': {
        const p = this.#pending.get(msg.id);
        if (p?.relay) p.relay.eof(msg.s);
        else if (!p?.sinks.has(msg.s)) this.stats.unknownIds++;
        return;
      }
    }
  }

  // ------------------------------------------------------------ plumbing

  get #requestTimeoutMs(): number {
    return this.#options.requestTimeoutMs ?? DEFAULT_REQUEST_TIMEOUT_MS;
  }

  get #transferIdleTimeoutMs(): number {
    return this.#options.transferIdleTimeoutMs ?? DEFAULT_TRANSFER_IDLE_TIMEOUT_MS;
  }

  #request(method: string, params: unknown, setup: RequestSetup = {}): { id: number; result: Promise<unknown>; pending: Pending } {
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
      const onAbort = (): void => this.#fail(p, new AgentClosedError(`agent ${method}: cancelled by the caller`, { byClient: true, cause: signal.reason }));
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
    this.#fail(
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
  #fail(p: Pending, err: Error): void {
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

  #sendEof(p: Pending, stream: StreamName): void {
    if (this.#pending.get(p.id) === p) this.#transport.writeLine({ t: 'eof', id: p.id, s: stream });
  }

  #validate<S extends v.GenericSchema>(schema: S, raw: unknown, method: string): v.InferOutput<S> {
    const r = v.safeParse(schema, raw);
    if (!r.success) {
      throw new AgentProtocolError(`agent ${method}: invalid result: ${describeIssues(r.issues)}`, { received: raw });
    }
    return r.output;
  }

  // ------------------------------------------------------------ methods

  /**
   * One request by name, its raw result (validate it: it comes from the other
   * side). For methods without streams: the monitor's own (`monitor.status`),
   * or an agent method this client has no typed wrapper for.
   */
  async call(method: string, params: unknown, options: { timeoutMs?: number; signal?: AbortSignal } = {}): Promise<unknown> {
    const { result } = this.#request(method, params, {
      timeoutMs: options.timeoutMs ?? this.#requestTimeoutMs,
      ...(options.signal === undefined ? {} : { signal: options.signal }),
    });
    return result;
  }

  /**
   * A request whose answer streams: `stdout` (and `stderr`) data frames are
   * written to the given Writables under flow control until the reply.
   * Cancelled (in the guest or the monitor) by `signal`.
   */
  async callStreaming(
    method: string,
    params: unknown,
    options: { stdout?: Writable; stderr?: Writable; stdin?: Readable; ctl?: Readable; signal?: AbortSignal; timeoutMs?: number } = {},
  ): Promise<unknown> {
    const out = new WritableSink(options.stdout);
    const err = new WritableSink(options.stderr);
    const inputs = (['stdin', 'ctl'] as const).filter((s) => options[s] !== undefined);
    const credits = Object.fromEntries(inputs.map((s) => [s, new CreditWindow(this.hello.limits.window)])) as Partial<Record<StreamName, CreditWindow>>;
    const { result, pending } = this.#request(method, params, {
      sinks: { stdout: out, stderr: err },
      credits,
      ...(options.timeoutMs === undefined ? {} : { timeoutMs: options.timeoutMs }),
      ...(options.signal === undefined ? {} : { signal: options.signal }),
    });
    for (const s of inputs) {
      // Each chunk of `ctl` is one message: it must not be split across frames.
      pumpWithCredit(options[s] as AsyncIterable<Buffer>, credits[s]!, (chunk) => this.#sendData(pending, s, chunk), { maxChunk: this.hello.limits.chunk }).then(
        () => this.#sendEof(pending, s),
        (e: unknown) => {
          if (e !== FINISHED) this.#fail(pending, e instanceof Error ? e : new Error(String(e)));
        },
      );
    }
    const raw = await result;
    await Promise.all([out.drained(), err.drained()]);
    return raw;
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
    const { id, result, pending } = this.#request(method, params, { sinks, relay: events });
    return {
      result,
      data: (stream, payload) => (this.#pending.get(id) === pending ? this.#transport.writeData(id, stream, payload) : undefined),
      eof: (stream) => this.#sendEof(pending, stream),
      consumed: (stream, n) => {
        if (this.#pending.get(id) === pending) pending.sinks.get(stream)?.ledger.consumed(n);
      },
      cancel: (reason) => this.#fail(pending, reason),
    };
  }

  /** Round trip time of a ping, and the agent's clock. */
  async ping(): Promise<{ rttMs: number; agentTime: number }> {
    const data = randomBytes(8).toString('hex');
    const t0 = performance.now();
    const { result } = this.#request('ping', { data }, { timeoutMs: this.#requestTimeoutMs });
    const r = this.#validate(PingResultSchema, await result, 'ping');
    const rttMs = performance.now() - t0;
    if (r.data !== data) throw new AgentProtocolError('agent ping: the echo does not match what was sent', { received: r });
    return { rttMs, agentTime: r.time };
  }

  /** Hostname, kernel, uptime, memory, root disk, load, agent version, boot id. */
  async info(): Promise<InfoResult> {
    const { result } = this.#request('info', {}, { timeoutMs: this.#requestTimeoutMs });
    return this.#validate(InfoResultSchema, await result, 'info');
  }

  /**
   * Run `argv` in the guest (no shell involved). Resolves with the exit code,
   * or the signal (with `timedOut` when the agent killed it for `timeoutMs`),
   * once the reply has arrived and stdout/stderr have been flushed.
   */
  async exec(argv: readonly string[], options: ExecOptions = {}): Promise<ExecResult> {
    const params = {
      argv: [...argv],
      ...(options.env === undefined ? {} : { env: options.env }),
      ...(options.cwd === undefined ? {} : { cwd: options.cwd }),
      stdin: options.stdin !== undefined,
      ...(options.timeoutMs === undefined ? {} : { timeoutMs: options.timeoutMs }),
      ...(options.tty === undefined ? {} : { tty: options.tty }),
      ...(options.tty && options.rows && options.cols ? { rows: options.rows, cols: options.cols } : {}),
    };
    const checked = v.safeParse(ExecParamsSchema, params);
    if (!checked.success) {
      throw new ValidationError(
        checked.issues.map((i) => ({ path: v.getDotPath(i) ?? '', message: i.message })),
        { subject: 'invalid exec request' },
      );
    }
    const out = new WritableSink(options.stdout);
    const err = new WritableSink(options.stderr);
    const credit = options.stdin === undefined ? undefined : new CreditWindow(this.hello.limits.window);
    const { result, pending } = this.#request('exec', params, {
      sinks: { stdout: out, stderr: err },
      ...(credit === undefined ? {} : { credits: { stdin: credit } }),
      ...(options.timeoutMs === undefined ? {} : { timeoutMs: options.timeoutMs + EXEC_REPLY_GRACE_MS }),
      ...(options.signal === undefined ? {} : { signal: options.signal }),
    });
    if (credit !== undefined && options.stdin !== undefined) {
      const src = options.stdin;
      const source: AsyncIterable<Buffer> | Buffer[] = typeof src === 'string' || Buffer.isBuffer(src) ? [Buffer.from(src)] : (src as AsyncIterable<Buffer>);
      pumpWithCredit(source, credit, (chunk) => this.#sendData(pending, 'stdin', chunk), { maxChunk: this.hello.limits.chunk }).then(
        () => this.#sendEof(pending, 'stdin'),
        (e: unknown) => {
          if (e !== FINISHED) this.#fail(pending, e instanceof Error ? e : new Error(String(e)));
        },
      );
    }
    const raw = await result;
    await Promise.all([out.drained(), err.drained()]);
    return this.#validate(ExecResultSchema, raw, 'exec');
  }

  /**
   * Copy a local file to `remotePath` in the guest. The agent writes a
   * temporary file next to the target, checks size and sha256, then renames.
   */
  async upload(localPath: string, remotePath: string, options: UploadOptions = {}): Promise<TransferResult> {
    const st = await stat(localPath);
    if (!st.isFile()) throw new ValidationError([{ path: 'localPath', message: `${localPath} is not a regular file` }], { subject: 'invalid upload' });
    const sha256 = await hashFile(localPath);
    const params = { path: remotePath, size: st.size, sha256, ...options };
    const checked = v.safeParse(UploadParamsSchema, params);
    if (!checked.success) {
      throw new ValidationError(
        checked.issues.map((i) => ({ path: v.getDotPath(i) ?? '', message: i.message })),
        { subject: 'invalid upload' },
      );
    }
    const { chunk: maxChunk, window } = this.hello.limits;
    const credit = new CreditWindow(window);
    const { result, pending } = this.#request('upload', checked.output, {
      credits: { file: credit },
      idleMs: this.#transferIdleTimeoutMs,
    });
    const sent = createHash('sha256');
    const pumped = pumpWithCredit(
      createReadStream(localPath, { highWaterMark: maxChunk }),
      credit,
      (chunk) => this.#sendData(pending, 'file', chunk),
      { maxChunk, onChunk: (c) => sent.update(c) },
    ).then(
      () => this.#sendEof(pending, 'file'),
      (e: unknown) => {
        if (e !== FINISHED) this.#fail(pending, e instanceof Error ? e : new Error(String(e)));
      },
    );
    let raw: unknown;
    try {
      raw = await result;
    } finally {
      await pumped;
    }
    const r = this.#validate(UploadResultSchema, raw, 'upload');
    const sentSha = sent.digest('hex');
    if (sentSha !== sha256) {
      throw new AgentProtocolError(`upload ${localPath}: the file changed while it was sent (sha256 ${sha256} before, ${sentSha} sent)`);
    }
    if (r.sha256 !== sha256 || r.bytes !== st.size) {
      throw new AgentProtocolError(`agent upload: reported ${r.bytes} bytes sha256 ${r.sha256}, sent ${st.size} bytes sha256 ${sha256}`, { received: r });
    }
    return { bytes: r.bytes, sha256 };
  }

  /** What `remotePath` is in the guest (following links): type, size, mode, mtime. */
  async stat(remotePath: string): Promise<StatResult> {
    const { result } = this.#request('stat', { path: remotePath }, { timeoutMs: this.#requestTimeoutMs });
    return this.#validate(StatResultSchema, await result, 'stat');
  }

  /**
   * Copy `remotePath` from the guest to `localPath` (chosen by the caller,
   * never by the guest). The agent announces the file's size first (`stat`):
   * a file larger than `maxBytes`, or than the free space where `localPath`
   * goes, is refused before any byte moves, and the stream is cut (the
   * request cancelled) as soon as it passes the announced size. Bytes go to a
   * temporary file next to `localPath`, renamed only when size and sha256
   * match what the agent reports. The guest's mode is returned, not applied.
   */
  async download(remotePath: string, localPath: string, options: DownloadOptions = {}): Promise<TransferResult & { mode: number }> {
    const st = await this.stat(remotePath);
    if (st.type !== 'file') throw new AgentRemoteError('download', 'EISDIR', `download ${remotePath}: not a regular file (${st.type})`);
    const announced = st.size;
    if (options.maxBytes !== undefined && announced > options.maxBytes) {
      throw new TransferLimitError(`download ${remotePath}: the guest announces ${announced} bytes, more than the limit of ${options.maxBytes}`, {
        hint: 'raise the limit (goshipctl vm cp --max-size SIZE) if you expect a file this large',
      });
    }
    const fs = await statfs(dirname(localPath));
    const free = fs.bavail * fs.bsize;
    if (announced > free) {
      throw new TransferLimitError(`download ${remotePath}: ${announced} bytes do not fit in the ${free} bytes free under ${dirname(localPath)}`);
    }
    const { path: tmp, handle: fh } = await openPartial(localPath);
    const hash = createHash('sha256');
    let bytes = 0;
    let chain: Promise<void> = Promise.resolve();
    let writeError: unknown;
    let pendingRef: Pending | undefined;
    const sink: Sink = {
      deliver: (payload, consumed) => {
        if (writeError !== undefined) return consumed();
        bytes += payload.length;
        if (bytes > announced) {
          // The guest said one size and sends more: stop at the bound.
          writeError = new TransferLimitError(`download ${remotePath}: the guest sent more than the ${announced} bytes it announced; stopped`);
          if (pendingRef) this.#fail(pendingRef, writeError as Error);
          return consumed();
        }
        hash.update(payload);
        chain = chain.then(async () => {
          if (writeError !== undefined) return;
          try {
            let off = 0;
            while (off < payload.length) off += (await fh.write(payload, off, payload.length - off)).bytesWritten;
            consumed();
          } catch (e) {
            writeError = e;
            if (pendingRef) this.#fail(pendingRef, e as Error);
          }
        });
      },
    };
    let closed = false;
    try {
      const { result, pending } = this.#request('download', { path: remotePath, maxBytes: announced }, {
        sinks: { file: sink },
        idleMs: this.#transferIdleTimeoutMs,
        ...(options.signal === undefined ? {} : { signal: options.signal }),
      });
      pendingRef = pending;
      let raw: unknown;
      try {
        raw = await result;
      } finally {
        await chain;
      }
      if (writeError !== undefined) throw writeError;
      const r = this.#validate(DownloadResultSchema, raw, 'download');
      const sha256 = hash.digest('hex');
      if (r.size !== bytes || r.sha256 !== sha256) {
        throw new AgentProtocolError(
          `agent download ${remotePath}: reported ${r.size} bytes sha256 ${r.sha256}, received ${bytes} bytes sha256 ${sha256}`,
          { received: r },
        );
      }
      await fh.sync();
      await fh.close();
      closed = true;
      await rename(tmp, localPath);
      return { bytes, sha256, mode: r.mode };
    } catch (err) {
      if (!closed) await fh.close().catch(() => undefined);
      await unlink(tmp).catch(() => undefined);
      throw writeError instanceof TransferLimitError ? writeError : err;
    }
  }

  /** Ask the agent to power the guest off (`systemctl poweroff`); it answers first. */
  async shutdown(): Promise<ShutdownResult> {
    const { result } = this.#request('shutdown', {}, { timeoutMs: this.#requestTimeoutMs });
    return this.#validate(ShutdownResultSchema, await result, 'shutdown');
  }

  /** Close the channel; pending requests fail with EAGENT_CLOSED (saying `reason`, when given). */
  async close(reason?: string): Promise<void> {
    this.#terminate(new AgentClosedError(reason ?? `agent channel ${this.#where}: closed by the client`, { byClient: true }));
    await this.#transport.closed();
  }
}

async function hashFile(path: string): Promise<string> {
  const h = createHash('sha256');
  for await (const chunk of createReadStream(path, { highWaterMark: HASH_READ_BYTES })) h.update(chunk as Buffer);
  return h.digest('hex');
}
