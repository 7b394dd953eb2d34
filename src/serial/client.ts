/**
 * The agent client: the only public class of `src/serial/` (see index.ts).
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
 * that validate what the agent replies).
 * Defaults: defaults.ts. Wire format: docs/agent-protocol.md.
 */
import { Buffer } from 'node:buffer';
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { rename, stat, statfs, unlink } from 'node:fs/promises';
import { dirname } from 'node:path';
import { performance } from 'node:perf_hooks';
import type { Duplex, Readable, Writable } from 'node:stream';
import * as v from 'valibot';
import { ValidationError } from '../errors.ts';
import {
  CreditWindow,
  DownloadResultSchema,
  ExecParamsSchema,
  ExecResultSchema,
  InfoResultSchema,
  PingResultSchema,
  ShutdownResultSchema,
  StatResultSchema,
  UploadParamsSchema,
  UploadResultSchema,
  type ExecResult,
  type InfoResult,
  type ShutdownResult,
  type StatResult,
  type StreamName,
} from '../protocol/index.ts';
import { EXEC_REPLY_GRACE_MS, HASH_READ_BYTES } from './defaults.ts';
import { AgentProtocolError, AgentRemoteError, TransferLimitError, type AgentError } from './errors.ts';
import { openPartial } from './partial.ts';
import {
  AgentSession,
  WritableSink,
  validateResult,
  type AgentClientStats,
  type AgentConnectOptions,
  type AgentHello,
  type Pending,
  type Relay,
  type RelayEvents,
  type Sink,
} from './session.ts';

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
    const { chunk: maxChunk, window } = this.#session.hello.limits;
    const credit = new CreditWindow(window);
    const { result, pending } = this.#session.request('upload', checked.output, {
      credits: { file: credit },
      idleMs: this.#session.transferIdleTimeoutMs,
    });
    const sent = createHash('sha256');
    const pumped = this.#session.pump(pending, 'file', createReadStream(localPath, { highWaterMark: maxChunk }), credit, {
      maxChunk,
      onChunk: (c) => sent.update(c),
    });
    let raw: unknown;
    try {
      raw = await result;
    } finally {
      await pumped;
    }
    const r = validateResult(UploadResultSchema, raw, 'upload');
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
    const { result } = this.#session.request('stat', { path: remotePath }, { timeoutMs: this.#session.requestTimeoutMs });
    return validateResult(StatResultSchema, await result, 'stat');
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
          if (pendingRef) this.#session.fail(pendingRef, writeError as Error);
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
            if (pendingRef) this.#session.fail(pendingRef, e as Error);
          }
        });
      },
    };
    let closed = false;
    try {
      const { result, pending } = this.#session.request('download', { path: remotePath, maxBytes: announced }, {
        sinks: { file: sink },
        idleMs: this.#session.transferIdleTimeoutMs,
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
      const r = validateResult(DownloadResultSchema, raw, 'download');
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
    const { result } = this.#session.request('shutdown', {}, { timeoutMs: this.#session.requestTimeoutMs });
    return validateResult(ShutdownResultSchema, await result, 'shutdown');
  }

  /** Close the channel; pending requests fail with EAGENT_CLOSED (saying `reason`, when given). */
  async close(reason?: string): Promise<void> {
    await this.#session.close(reason);
  }
}

async function hashFile(path: string): Promise<string> {
  const h = createHash('sha256');
  for await (const chunk of createReadStream(path, { highWaterMark: HASH_READ_BYTES })) h.update(chunk as Buffer);
  return h.digest('hex');
}
