/**
 * The agent client, `AgentClient`: what callers of `src/serial/` use (through
 * index.ts) to talk to the guest agent or to a VM's monitor.
 *
 *     const client = await AgentClient.connect(layout.agentSocket(id), { timeoutMs: 60_000 });
 *     try {
 *       await client.exec(['uname', '-r'], { stdout: process.stdout });
 *     } finally {
 *       await client.close();
 *     }
 *
 * Layers: transport.ts (socket, frames) → session.ts (connect and sync
 * retries, request ids, routing, credit, close) → this file (typed methods
 * that validate what the agent replies), with upload and download in
 * transfer.ts. Default timeouts: defaults.ts. Wire format:
 * docs/agent-protocol.md.
 */
import { Buffer } from 'node:buffer';
import { randomBytes } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import type { Duplex, Readable, Writable } from 'node:stream';
import * as v from 'valibot';
import { ValidationError } from '../errors.ts';
import {
  CreditWindow,
  ExecParamsSchema,
  ExecResultSchema,
  InfoResultSchema,
  PingResultSchema,
  ShutdownResultSchema,
  StatResultSchema,
  TunnelParamsSchema,
  TunnelResultSchema,
  type ExecResult,
  type InfoResult,
  type ShutdownResult,
  type StatResult,
  type StreamName,
  type TunnelParams,
  type TunnelResult,
} from '../protocol/index.ts';
import { EXEC_REPLY_GRACE_MS } from './defaults.ts';
import { AgentProtocolError, type AgentError } from './errors.ts';
import {
  AgentSession,
  WritableSink,
  validateResult,
  type AgentClientStats,
  type AgentConnectOptions,
  type AgentHello,
  type Relay,
  type RelayEvents,
} from './session.ts';
import { download, upload, type DownloadOptions, type TransferResult, type UploadOptions } from './transfer.ts';

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

/** A client of the guest agent (or of a VM's monitor, which speaks the same protocol for it). */
export class AgentClient {
  readonly #session: AgentSession;

  private constructor(session: AgentSession) {
    this.#session = session;
  }

  /**
   * Connect to the unix socket QEMU serves for the agent's virtio-serial port
   * (`-chardev socket,server=on,wait=off`) and wait for the agent's hello.
   * Retries (the socket is missing, QEMU has not started, the guest is still
   * booting, the agent restarts) until `timeoutMs`.
   */
  static async connect(socketPath: string, options: AgentConnectOptions): Promise<AgentClient> {
    return new AgentClient(await AgentSession.connect(socketPath, options));
  }

  /** Run a session over an already connected byte stream (one attempt, no reconnect). */
  static async attach(stream: Duplex, options: AgentConnectOptions & { name?: string }): Promise<AgentClient> {
    return new AgentClient(await AgentSession.attach(stream, options));
  }

  /** The hello of the current session: agent version, protocol, hostname, boot id. */
  get hello(): AgentHello {
    return this.#session.hello;
  }

  /** Counters of what the guest sent that was dropped. */
  get stats(): AgentClientStats {
    return this.#session.stats;
  }

  /** Resolves once the session is over: closed by `close()`, by the other side, or broken (`closeReason` says which). */
  closedPromise(): Promise<void> {
    return this.#session.closedPromise();
  }

  /** True once closed, by `close()` or because the channel broke (`closeReason`). */
  get closed(): boolean {
    return this.#session.closed;
  }

  get closeReason(): AgentError | undefined {
    return this.#session.closeReason;
  }

  // ------------------------------------------------------------ methods

  /**
   * One request by name, its raw result (validate it: it comes from the other
   * side). For methods without streams: the monitor's own (`monitor.status`),
   * or an agent method this client has no typed wrapper for.
   */
  async call(method: string, params: unknown, options: { timeoutMs?: number; signal?: AbortSignal } = {}): Promise<unknown> {
    const { result } = this.#session.request(method, params, {
      timeoutMs: options.timeoutMs ?? this.#session.requestTimeoutMs,
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
    const credits = Object.fromEntries(inputs.map((s) => [s, new CreditWindow(this.#session.hello.limits.window)])) as Partial<Record<StreamName, CreditWindow>>;
    const { result, pending } = this.#session.request(method, params, {
      sinks: { stdout: out, stderr: err },
      credits,
      ...(options.timeoutMs === undefined ? {} : { timeoutMs: options.timeoutMs }),
      ...(options.signal === undefined ? {} : { signal: options.signal }),
    });
    for (const s of inputs) {
      // Each chunk of `ctl` is one message: it must not be split across frames.
      void this.#session.pump(pending, s, options[s] as AsyncIterable<Buffer>, credits[s]!, { maxChunk: this.#session.hello.limits.chunk });
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
    return this.#session.relay(method, params, events);
  }

  /** Round trip time of a ping, and the agent's clock. */
  async ping(): Promise<{ rttMs: number; agentTime: number }> {
    const data = randomBytes(8).toString('hex');
    const t0 = performance.now();
    const { result } = this.#session.request('ping', { data }, { timeoutMs: this.#session.requestTimeoutMs });
    const r = validateResult(PingResultSchema, await result, 'ping');
    const rttMs = performance.now() - t0;
    if (r.data !== data) throw new AgentProtocolError('agent ping: the echo does not match what was sent', { received: r });
    return { rttMs, agentTime: r.time };
  }

  /** Hostname, kernel, uptime, memory, root disk, load, agent version, boot id. */
  async info(): Promise<InfoResult> {
    const { result } = this.#session.request('info', {}, { timeoutMs: this.#session.requestTimeoutMs });
    return validateResult(InfoResultSchema, await result, 'info');
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
    const credit = options.stdin === undefined ? undefined : new CreditWindow(this.#session.hello.limits.window);
    const { result, pending } = this.#session.request('exec', params, {
      sinks: { stdout: out, stderr: err },
      ...(credit === undefined ? {} : { credits: { stdin: credit } }),
      ...(options.timeoutMs === undefined ? {} : { timeoutMs: options.timeoutMs + EXEC_REPLY_GRACE_MS }),
      ...(options.signal === undefined ? {} : { signal: options.signal }),
    });
    if (credit !== undefined && options.stdin !== undefined) {
      const src = options.stdin;
      const source: AsyncIterable<Buffer> | Buffer[] = typeof src === 'string' || Buffer.isBuffer(src) ? [Buffer.from(src)] : (src as AsyncIterable<Buffer>);
      void this.#session.pump(pending, 'stdin', source, credit, { maxChunk: this.#session.hello.limits.chunk });
    }
    const raw = await result;
    await Promise.all([out.drained(), err.drained()]);
    return validateResult(ExecResultSchema, raw, 'exec');
  }

  /**
   * Copy a local file to `remotePath` in the guest. The agent writes a
   * temporary file next to the target, checks size and sha256, then renames.
   */
  async upload(localPath: string, remotePath: string, options: UploadOptions = {}): Promise<TransferResult> {
    return upload(this.#session, localPath, remotePath, options);
  }

  /** What `remotePath` is in the guest (following links): type, size, mode, mtime. */
  async stat(remotePath: string): Promise<StatResult> {
    const { result } = this.#session.request('stat', { path: remotePath }, { timeoutMs: this.#session.requestTimeoutMs });
    return validateResult(StatResultSchema, await result, 'stat');
  }

  /**
   * Copy `remotePath` from the guest to `localPath` (chosen by the caller,
   * never by the guest), within the size the guest announces, through a
   * temporary file renamed once size and sha256 match (see transfer.ts). The
   * guest's mode is returned, not applied.
   */
  async download(remotePath: string, localPath: string, options: DownloadOptions = {}): Promise<TransferResult & { mode: number }> {
    return download(this.#session, (path) => this.stat(path), remotePath, localPath, options);
  }

  /**
   * One connection to a socket inside the guest (`tunnel`): `input` is
   * written to it, what it sends goes to `output`; the end of `input` is a
   * half close there, the guest's is `output.end()`. Resolves when the
   * guest's socket has closed both ways; `signal` ends it at once.
   */
  async tunnel(to: TunnelParams, o: { input: AsyncIterable<Buffer>; output: Writable; signal?: AbortSignal }): Promise<TunnelResult> {
    const checked = v.safeParse(TunnelParamsSchema, to);
    if (!checked.success) {
      throw new ValidationError(
        checked.issues.map((i) => ({ path: v.getDotPath(i) ?? '', message: i.message })),
        { subject: 'invalid tunnel request' },
      );
    }
    const out = new WritableSink(o.output, { endOnEof: true });
    const credit = new CreditWindow(this.#session.hello.limits.window);
    const { result, pending } = this.#session.request('tunnel', checked.output, {
      sinks: { stdout: out },
      credits: { stdin: credit },
      ...(o.signal === undefined ? {} : { signal: o.signal }),
    });
    void this.#session.pump(pending, 'stdin', o.input, credit, { maxChunk: this.#session.hello.limits.chunk });
    const raw = await result;
    await out.drained();
    return validateResult(TunnelResultSchema, raw, 'tunnel');
  }

  /** Ask the agent to power the guest off (`systemctl poweroff`); it answers first. */
  async shutdown(): Promise<ShutdownResult> {
    const { result } = this.#session.request('shutdown', {}, { timeoutMs: this.#session.requestTimeoutMs });
    return validateResult(ShutdownResultSchema, await result, 'shutdown');
  }

  /** Close the channel; pending requests fail with EAGENT_CLOSED (saying `reason`, when given). */
  async close(reason?: string): Promise<void> {
    await this.#session.close(reason);
  }
}
