/**
 * One host-facing protocol endpoint: decodes what the host sends, answers
 * `sync` with `hello`, dispatches requests and runs their streams.
 *
 * Session rules (virtio-serial has no connection semantics):
 * - nothing is processed before the first `sync`: bytes left over from an
 *   earlier host session are dropped;
 * - every `sync` (and every host disconnect, `end()`) ends the current
 *   session: its requests are cancelled (running execs are killed with their
 *   process group, partial uploads removed) and frames still queued for the
 *   old host are dropped;
 * - a framing error (a data header announcing more than MAX_CHUNK) stops
 *   processing until the host's next `sync`;
 * - what the agent sends keeps to the limits the host announced in its sync
 *   (`lim`), or to those of protocol 1 before they were announced when it
 *   announced none; the hello announces the agent's own.
 */
import { Buffer } from 'node:buffer';
import * as v from 'valibot';
import {
  CreditLedger,
  CreditWindow,
  FrameDecoder,
  HostMessageSchema,
  OWN_LIMITS,
  PROTOCOL_VERSION,
  REMOTE_CODES,
  describeIssues,
  encodeData,
  encodeLine,
  pumpWithCredit,
  sendLimits,
  type Decoded,
  type FlowLimits,
  type HostMessage,
  type ReqMsg,
  type StreamName,
} from '../../src/protocol/index.ts';
import type { Link } from './link.ts';
import { AGENT_VERSION } from './version.ts';

const NEWLINE = Buffer.from('\n');

/** An error sent to the host as `{"e":{code,message}}`. */
export class RemoteError extends Error {
  readonly code: string;
  constructor(code: string, message: string) {
    super(message);
    this.code = code;
  }
}

/** Facts about the agent's environment, handed to every method. */
export interface AgentContext {
  hostname: () => string;
  bootId: () => string;
  log: (line: string) => void;
  /** True in `--listen` test mode: `shutdown` answers but powers nothing off. */
  dryRunShutdown: boolean;
}

/** Bytes from the host on one stream, consumed with `for await`; each chunk is acknowledged once the loop asks for the next. */
export class Inbound implements AsyncIterable<Buffer> {
  readonly #ledger: CreditLedger;
  #queue: Buffer[] = [];
  #ended = false;
  #error: unknown;
  #wake: (() => void) | undefined;

  constructor(ledger: CreditLedger) {
    this.#ledger = ledger;
  }

  /** False when the host overran its window. */
  push(payload: Buffer): boolean {
    if (this.#ended) return true;
    if (!this.#ledger.received(payload.length)) return false;
    this.#queue.push(payload);
    this.#notify();
    return true;
  }

  end(): void {
    this.#ended = true;
    this.#notify();
  }

  fail(error: unknown): void {
    if (this.#error === undefined) this.#error = error;
    this.#ended = true;
    this.#queue = [];
    this.#notify();
  }

  #notify(): void {
    const w = this.#wake;
    this.#wake = undefined;
    w?.();
  }

  async *[Symbol.asyncIterator](): AsyncIterator<Buffer> {
    for (;;) {
      if (this.#error !== undefined) throw this.#error;
      const next = this.#queue.shift();
      if (next !== undefined) {
        yield next;
        this.#ledger.consumed(next.length);
        continue;
      }
      if (this.#ended) return;
      await new Promise<void>((resolve) => {
        this.#wake = resolve;
      });
    }
  }
}

/** What a method handler sees of its request. */
export class Call {
  readonly id: number;
  readonly method: string;
  readonly #session: AgentSession;
  /**
   * Made when a handler first asks for `signal`: under TCG an AbortController
   * costs ~0.3 ms to construct, a good part of a ping's whole time in the
   * guest, and most requests never look at it.
   */
  #controller: AbortController | undefined;
  #abortReason: RemoteError | undefined;
  readonly #credit = new Map<StreamName, CreditWindow>();
  readonly #inbound = new Map<StreamName, Inbound>();

  constructor(session: AgentSession, id: number, method: string) {
    this.#session = session;
    this.id = id;
    this.method = method;
  }

  /** Aborted when the host cancels, the session ends, or a stream breaks its rules. */
  get signal(): AbortSignal {
    if (!this.#controller) {
      this.#controller = new AbortController();
      if (this.#abortReason) this.#controller.abort(this.#abortReason);
    }
    return this.#controller.signal;
  }

  /** Why the request was aborted; undefined while it was not. */
  get abortReason(): RemoteError | undefined {
    return this.#abortReason;
  }

  abort(reason: RemoteError): void {
    if (this.#abortReason) return;
    this.#abortReason = reason;
    this.#controller?.abort(reason);
    for (const c of this.#credit.values()) c.close(reason);
    for (const i of this.#inbound.values()) i.fail(reason);
  }

  /** The request is answered: stop its streams without signalling an abort (the child, if any, has exited). */
  release(): void {
    // Most requests (ping, info, stat…) have no stream: no error to build, with its stack, for them.
    if (this.#credit.size === 0 && this.#inbound.size === 0) return;
    const done = new RemoteError(REMOTE_CODES.cancelled, `${this.method} already answered`);
    for (const c of this.#credit.values()) c.close(done);
    for (const i of this.#inbound.values()) i.fail(done);
  }

  #throwIfAborted(): void {
    if (this.#abortReason) throw this.#abortReason;
  }

  /** What this request's streams to the host keep to: the host's announced limits. */
  get limits(): FlowLimits {
    return this.#session.hostLimits;
  }

  creditFor(stream: StreamName): CreditWindow {
    let c = this.#credit.get(stream);
    if (!c) {
      c = new CreditWindow(this.limits.window);
      if (this.#abortReason) c.close(this.#abortReason);
      this.#credit.set(stream, c);
    }
    return c;
  }

  inbound(stream: StreamName): Inbound {
    let i = this.#inbound.get(stream);
    if (!i) {
      i = new Inbound(new CreditLedger((n) => this.#session.sendLine(this, { t: 'ack', id: this.id, s: stream, n })));
      if (this.#abortReason) i.fail(this.#abortReason);
      this.#inbound.set(stream, i);
    }
    return i;
  }

  /** Stream `source` to the host as `stream` data frames under flow control, then send its eof. */
  async sendStream(stream: StreamName, source: AsyncIterable<Buffer | string>, onChunk?: (chunk: Buffer) => void): Promise<number> {
    const credit = this.creditFor(stream);
    const n = await pumpWithCredit(
      source,
      credit,
      async (chunk) => {
        this.#throwIfAborted();
        await this.#session.sendData(this, stream, chunk);
      },
      { maxChunk: this.limits.chunk, ...(onChunk === undefined ? {} : { onChunk }) },
    );
    this.#throwIfAborted();
    this.#session.sendLine(this, { t: 'eof', id: this.id, s: stream });
    return n;
  }
}

export type Handler = (call: Call, params: unknown, ctx: AgentContext) => Promise<unknown>;

export class AgentSession {
  readonly #link: Link;
  readonly #ctx: AgentContext;
  readonly #handlers: Record<string, Handler>;
  readonly #decoder: FrameDecoder;
  readonly #calls = new Map<number, Call>();
  #synced = false;
  #hostLimits: FlowLimits = sendLimits(undefined);
  /** Counts of what was dropped, for the log. */
  readonly dropped = { beforeSync: 0, unknownId: 0, bad: 0 };

  constructor(link: Link, ctx: AgentContext, handlers: Record<string, Handler>) {
    this.#link = link;
    this.#ctx = ctx;
    this.#handlers = handlers;
    this.#decoder = new FrameDecoder((e) => this.#onDecoded(e), { resyncOn: 'sync' });
  }

  /** Tell whoever reads the port that this agent (re)started: a hello with an empty nonce. */
  announce(): void {
    this.#sendHello('');
  }

  /** Bytes read from the channel; nothing of `chunk` is kept after the call. */
  push(chunk: Buffer): void {
    this.#decoder.push(chunk);
  }

  /** The host went away (EOF on the port, socket closed): end the session. */
  end(reason: string): void {
    if (this.#synced || this.#calls.size > 0) this.#ctx.log(`host session ended: ${reason}`);
    this.#endSession(reason);
    this.#decoder.reset();
    this.#synced = false;
  }

  /** What the agent sends within in the current session: the limits of the host's sync. */
  get hostLimits(): FlowLimits {
    return this.#hostLimits;
  }

  get activeCalls(): number {
    return this.#calls.size;
  }

  sendLine(call: Call | undefined, message: object): void {
    if (call !== undefined && this.#calls.get(call.id) !== call) return;
    this.#link.write(encodeLine(message));
  }

  async sendData(call: Call, stream: StreamName, chunk: Buffer): Promise<void> {
    if (this.#calls.get(call.id) !== call) return;
    this.#link.write(encodeData(call.id, stream, chunk));
    await this.#link.whenWritable();
  }

  /** A hello starts with a newline: it ends whatever partial line the host may hold from an earlier session. */
  #sendHello(nonce: string): void {
    this.#link.write(Buffer.concat([NEWLINE, encodeLine(this.#hello(nonce))]));
  }

  #hello(nonce: string): object {
    return {
      t: 'hello',
      nonce,
      agent: AGENT_VERSION,
      protocol: PROTOCOL_VERSION,
      hostname: this.#ctx.hostname(),
      bootId: this.#ctx.bootId(),
      lim: OWN_LIMITS,
    };
  }

  #endSession(reason: string): void {
    const err = new RemoteError(REMOTE_CODES.cancelled, `session ended: ${reason}`);
    const calls = [...this.#calls.values()];
    this.#calls.clear();
    for (const c of calls) c.abort(err);
    this.#link.dropQueued();
  }

  #complain(code: string, message: string): void {
    this.dropped.bad++;
    if (this.#synced) this.#link.write(encodeLine({ t: 'err', code, message }));
  }

  #onDecoded(event: Decoded): void {
    switch (event.kind) {
      case 'bad':
        this.#complain(event.reason === 'line-too-long' ? REMOTE_CODES.lineTooLong : REMOTE_CODES.badLine, event.detail);
        return;
      case 'fatal':
        this.#complain(REMOTE_CODES.badLine, `${event.detail}; waiting for the next sync`);
        this.#ctx.log(`framing lost (${event.detail}); waiting for sync`);
        this.#endSession('framing lost');
        this.#synced = false;
        return;
      case 'data': {
        if (!this.#synced) {
          this.dropped.beforeSync++;
          return;
        }
        const call = this.#calls.get(event.header.id);
        if (!call) {
          this.dropped.unknownId++;
          return;
        }
        if (!call.inbound(event.header.s).push(event.payload)) {
          call.abort(new RemoteError(REMOTE_CODES.flow, `stream ${event.header.s} exceeded its flow-control window`));
        }
        return;
      }
      case 'message':
        this.#onMessage(event.message);
        return;
    }
  }

  #onMessage(raw: Record<string, unknown> & { t: string }): void {
    if (raw.t !== 'sync' && !this.#synced) {
      this.dropped.beforeSync++;
      return;
    }
    const parsed = v.safeParse(HostMessageSchema, raw);
    if (!parsed.success) {
      const id = raw.t === 'req' ? raw.id : undefined;
      const message = `invalid ${JSON.stringify(raw.t).slice(0, 40)} message: ${describeIssues(parsed.issues)}`;
      if (typeof id === 'number' && Number.isSafeInteger(id) && id > 0) {
        this.#link.write(encodeLine({ t: 'res', id, e: { code: REMOTE_CODES.badRequest, message } }));
      } else this.#complain(REMOTE_CODES.badLine, message);
      return;
    }
    const msg: HostMessage = parsed.output;
    switch (msg.t) {
      case 'sync':
        this.#endSession('new sync');
        this.#synced = true;
        this.#hostLimits = sendLimits(msg.lim);
        this.#sendHello(msg.nonce);
        return;
      case 'req':
        this.#request(msg);
        return;
      case 'eof': {
        const call = this.#calls.get(msg.id);
        if (call) call.inbound(msg.s).end();
        else this.dropped.unknownId++;
        return;
      }
      case 'ack': {
        const call = this.#calls.get(msg.id);
        if (!call) {
          this.dropped.unknownId++;
          return;
        }
        if (!call.creditFor(msg.s).grant(msg.n)) {
          call.abort(new RemoteError(REMOTE_CODES.flow, `ack for stream ${msg.s} exceeds what was sent`));
        }
        return;
      }
      case 'cancel': {
        const call = this.#calls.get(msg.id);
        if (call) call.abort(new RemoteError(REMOTE_CODES.cancelled, `${call.method} cancelled by the host`));
        return;
      }
    }
  }

  #request(msg: ReqMsg): void {
    const reply = (body: { r: unknown } | { e: { code: string; message: string } }): void => {
      this.#link.write(encodeLine({ t: 'res', id: msg.id, ...body }));
    };
    if (this.#calls.has(msg.id)) {
      reply({ e: { code: REMOTE_CODES.duplicateId, message: `request id ${msg.id} is already in use` } });
      return;
    }
    const handler = Object.hasOwn(this.#handlers, msg.m) ? this.#handlers[msg.m] : undefined;
    if (!handler) {
      reply({ e: { code: REMOTE_CODES.unknownMethod, message: `unknown method ${JSON.stringify(msg.m)}` } });
      return;
    }
    const call = new Call(this, msg.id, msg.m);
    this.#calls.set(msg.id, call);
    const finish = (body: { r: unknown } | { e: { code: string; message: string } }): void => {
      if (this.#calls.get(msg.id) !== call) return; // the session ended: the old host gets nothing
      this.#calls.delete(msg.id);
      call.release();
      reply(body);
    };
    handler(call, msg.p ?? {}, this.#ctx).then(
      (r) => {
        // A handler that was aborted may still resolve: report the abort, not a result.
        if (call.abortReason) finish({ e: errorBody(call.abortReason) });
        else finish({ r: r ?? null });
      },
      (err: unknown) => finish({ e: errorBody(call.abortReason ?? err) }),
    );
  }
}

/** `{code, message}` for the wire: RemoteError as is, errno errors by their code. */
export function errorBody(err: unknown): { code: string; message: string } {
  if (err instanceof RemoteError) return { code: err.code, message: err.message };
  const e = err as { code?: unknown; message?: unknown };
  const code = typeof e?.code === 'string' && /^[A-Z][A-Z0-9_]{0,63}$/.test(e.code) ? e.code : REMOTE_CODES.internal;
  const message = typeof e?.message === 'string' ? e.message : String(err);
  return { code, message: message.slice(0, 4000) };
}

/** Validate params or throw EBADREQ naming every problem. */
export function parseParams<S extends v.GenericSchema>(schema: S, params: unknown, method: string): v.InferOutput<S> {
  const r = v.safeParse(schema, params);
  if (!r.success) throw new RemoteError(REMOTE_CODES.badRequest, `${method}: ${describeIssues(r.issues)}`);
  return r.output;
}
