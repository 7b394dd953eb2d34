/**
 * QMP protocol: greeting, capabilities negotiation, request ids, reply
 * routing, events, timeouts and the connection state machine.
 *
 *   idle ──connect()──▶ connecting ──greeting + qmp_capabilities──▶ running
 *     │                     │                                          │
 *     └──close()──▶ closed ◀┴──── EOF / error / close() ── disconnecting ◀┘
 *
 * A client connects once; after `closed` create a new one. Every line from
 * QEMU is parsed generically, so an event is delivered whenever it arrives
 * (during negotiation, between a request and its reply). On EOF every pending
 * call rejects at once.
 */
import { LineTransport, MAX_LINE_BYTES } from './transport.ts';
import {
  QmpClosedError,
  QmpCommandError,
  QmpConnectError,
  QmpError,
  QmpFrameError,
  QmpProtocolError,
  QmpStateError,
  QmpTimeoutError,
} from './errors.ts';
import type { QmpEvent, QmpGreeting } from './types.ts';

export type QmpState = 'idle' | 'connecting' | 'running' | 'disconnecting' | 'closed';

/** Whole budget of `connect()`: socket connect + greeting + negotiation. */
export const DEFAULT_CONNECT_TIMEOUT_MS = 5_000;
/** Reply timeout of a command without its own entry in `COMMAND_TIMEOUTS_MS`. */
export const DEFAULT_COMMAND_TIMEOUT_MS = 5_000;
/** Default wait of `waitForEvent()`/`expectEvent()`. */
export const DEFAULT_EVENT_TIMEOUT_MS = 30_000;
/** Events an unread `events()` stream may hold before it fails with EQMP_EVENTS_OVERFLOW. */
export const DEFAULT_MAX_QUEUED_EVENTS = 10_000;

/**
 * Commands that may legitimately take longer than the general default
 * (Incus uses 30 s for these: they wait for vCPUs or devices).
 */
export const COMMAND_TIMEOUTS_MS: Readonly<Record<string, number>> = {
  cont: 30_000,
  stop: 30_000,
  system_reset: 30_000,
  device_add: 30_000,
  device_del: 30_000,
  'blockdev-add': 30_000,
  'blockdev-del': 30_000,
};

/** setTimeout's ceiling. */
const MAX_TIMER_MS = 2 ** 31 - 1;

export interface QmpProtocolOptions {
  /** Reply timeout for commands not listed in `commandTimeoutsMs`; default 5000. */
  defaultTimeoutMs?: number;
  /** Per-command reply timeouts, merged over `COMMAND_TIMEOUTS_MS`. */
  commandTimeoutsMs?: Record<string, number>;
  /** Longest line accepted from QEMU; default 16 MiB. */
  maxLineBytes?: number;
  /**
   * Enable out-of-band execution when the greeting offers it. Default false:
   * GoShip does not use `exec-oob`, and capabilities are requested only if offered.
   */
  oob?: boolean;
  /** Per-stream cap on unread events; default 10000. */
  maxQueuedEvents?: number;
}

export interface ConnectOptions {
  /** Budget for socket connect + greeting + negotiation; default 5000. */
  timeoutMs?: number;
}

export interface CallOptions {
  /** Reply timeout for this call, overriding the per-command default. */
  timeoutMs?: number;
}

export interface WaitForEventOptions {
  /** How long to wait, counted from the subscription; default 30000. */
  timeoutMs?: number;
  /** Only accept events this predicate approves (e.g. a given `data.id`). */
  match?: (event: QmpEvent) => boolean;
}

/** Callback events of a client: `client.on('event', e => …)`. */
export interface QmpListenerMap {
  /** Every QMP event, in arrival order. */
  event: (event: QmpEvent) => void;
  /** The connection closed; `reason` is undefined for a clean EOF or `close()`. */
  close: (reason: Error | undefined) => void;
  /** QEMU sent something unexpected that did not end the connection (e.g. an error without id). */
  'protocol-error': (error: QmpProtocolError) => void;
}

interface Pending {
  command: string;
  args: Record<string, unknown> | undefined;
  resolve: (value: unknown) => void;
  reject: (error: Error) => void;
  timer: ReturnType<typeof setTimeout>;
}

/** A receiver of events: an `events()` stream or a `waitForEvent()` waiter. */
interface Tap {
  names: ReadonlySet<string> | undefined;
  deliver(event: QmpEvent): void;
  end(reason: Error | undefined, byClient: boolean): void;
}

type Json = Record<string, unknown>;

function isObject(value: unknown): value is Json {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function checkTimeout(name: string, value: number): number {
  if (typeof value !== 'number' || !Number.isFinite(value) || value <= 0 || value > MAX_TIMER_MS) {
    throw new TypeError(`${name}: expected a number of milliseconds in (0, ${MAX_TIMER_MS}], got ${String(value)}`);
  }
  return value;
}

function normalizeNames(names: string | readonly string[] | undefined): ReadonlySet<string> | undefined {
  if (names === undefined) return undefined;
  return new Set(typeof names === 'string' ? [names] : names);
}

function describeNames(names: ReadonlySet<string> | undefined): string {
  if (names === undefined) return 'any event';
  return `${[...names].join(' or ')} event`;
}

function preview(text: string, max = 200): string {
  return text.length <= max ? text : `${text.slice(0, max)}… (${text.length} chars)`;
}

/**
 * Async iterator over events, filtered by name. The subscription starts when
 * `events()` is called, not at the first `next()`, so no event is missed
 * between subscribing and sending the command that causes it. It ends when
 * the connection closes (after the queued events are read) or on `close()`.
 */
export class QmpEventStream implements AsyncIterableIterator<QmpEvent> {
  readonly #queue: QmpEvent[] = [];
  readonly #waiters: Array<{ resolve: (r: IteratorResult<QmpEvent>) => void; reject: (e: Error) => void }> = [];
  readonly #maxQueued: number;
  readonly #dispose: () => void;
  #done = false;
  #error: Error | undefined;

  /** @internal Created by `QmpProtocol.events()`. */
  constructor(maxQueued: number, dispose: () => void) {
    this.#maxQueued = maxQueued;
    this.#dispose = dispose;
  }

  /** @internal */
  push(event: QmpEvent): void {
    if (this.#done) return;
    const waiter = this.#waiters.shift();
    if (waiter !== undefined) {
      waiter.resolve({ value: event, done: false });
      return;
    }
    if (this.#queue.length >= this.#maxQueued) {
      this.#finish(
        new QmpError(
          'EQMP_EVENTS_OVERFLOW',
          `QMP event stream overflow: more than ${this.#maxQueued} unread events`,
          { hint: 'read the stream faster, filter it by name, or close it when done' },
        ),
      );
      return;
    }
    this.#queue.push(event);
  }

  /** @internal The connection closed: end after the queued events. */
  finish(): void {
    this.#finish(undefined);
  }

  #finish(error: Error | undefined): void {
    if (this.#done) return;
    this.#done = true;
    this.#error = error;
    this.#dispose();
    while (this.#waiters.length > 0) {
      const waiter = this.#waiters.shift()!;
      if (this.#error !== undefined) {
        waiter.reject(this.#error);
        this.#error = undefined;
      } else waiter.resolve({ value: undefined, done: true });
    }
  }

  next(): Promise<IteratorResult<QmpEvent>> {
    const event = this.#queue.shift();
    if (event !== undefined) return Promise.resolve({ value: event, done: false });
    if (this.#done) {
      const error = this.#error;
      this.#error = undefined;
      return error === undefined ? Promise.resolve({ value: undefined, done: true }) : Promise.reject(error);
    }
    return new Promise((resolve, reject) => this.#waiters.push({ resolve, reject }));
  }

  /** Stop the subscription; queued events are dropped. */
  return(): Promise<IteratorResult<QmpEvent>> {
    this.#queue.length = 0;
    this.#error = undefined;
    this.#finish(undefined);
    return Promise.resolve({ value: undefined, done: true });
  }

  /** Same as `return()`, for use outside `for await`. */
  async close(): Promise<void> {
    await this.return();
  }

  [Symbol.asyncIterator](): QmpEventStream {
    return this;
  }
}

/** The QMP protocol engine. `QmpClient` (commands.ts) adds typed commands on top. */
export class QmpProtocol {
  readonly #options: Required<Omit<QmpProtocolOptions, 'commandTimeoutsMs'>> & {
    commandTimeoutsMs: Readonly<Record<string, number>>;
  };
  #state: QmpState = 'idle';
  #socketPath: string | undefined;
  #transport: LineTransport | undefined;
  #greeting: QmpGreeting | undefined;
  #capabilities: string[] = [];
  #greetingWaiter: { resolve: (g: QmpGreeting) => void; reject: (e: Error) => void } | undefined;
  readonly #pending = new Map<number, Pending>();
  #nextId = 1;
  #droppedReplies = 0;
  readonly #taps = new Set<Tap>();
  readonly #listeners: { [K in keyof QmpListenerMap]: Set<QmpListenerMap[K]> } = {
    event: new Set(),
    close: new Set(),
    'protocol-error': new Set(),
  };
  #closeReason: Error | undefined;
  #resolveClosed!: () => void;
  readonly #closed = new Promise<void>((resolve) => (this.#resolveClosed = resolve));

  constructor(options: QmpProtocolOptions = {}) {
    const defaultTimeoutMs = checkTimeout(
      'defaultTimeoutMs',
      options.defaultTimeoutMs ?? DEFAULT_COMMAND_TIMEOUT_MS,
    );
    const commandTimeoutsMs = { ...COMMAND_TIMEOUTS_MS, ...(options.commandTimeoutsMs ?? {}) };
    for (const [name, ms] of Object.entries(commandTimeoutsMs)) checkTimeout(`commandTimeoutsMs.${name}`, ms);
    const maxLineBytes = options.maxLineBytes ?? MAX_LINE_BYTES;
    if (!Number.isInteger(maxLineBytes) || maxLineBytes <= 0) {
      throw new TypeError(`maxLineBytes: expected a positive integer, got ${String(maxLineBytes)}`);
    }
    this.#options = {
      defaultTimeoutMs,
      commandTimeoutsMs,
      maxLineBytes,
      oob: options.oob ?? false,
      maxQueuedEvents: options.maxQueuedEvents ?? DEFAULT_MAX_QUEUED_EVENTS,
    };
  }

  /** `idle | connecting | running | disconnecting | closed`. */
  get state(): QmpState {
    return this.#state;
  }

  /** QEMU's greeting (version, offered capabilities); undefined before it arrived. */
  get greeting(): QmpGreeting | undefined {
    return this.#greeting;
  }

  /** Capabilities enabled by negotiation (`[]`, or `['oob']`). */
  get capabilities(): readonly string[] {
    return this.#capabilities;
  }

  /** Why the connection closed (socket error, frame error); undefined for a clean EOF or `close()`. */
  get closeReason(): Error | undefined {
    return this.#closeReason;
  }

  /** Replies dropped because their id matched no pending call (e.g. answers to timed-out calls). */
  get droppedReplies(): number {
    return this.#droppedReplies;
  }

  /** Resolves once the connection is closed, whoever closed it. */
  get closed(): Promise<void> {
    return this.#closed;
  }

  on<K extends keyof QmpListenerMap>(name: K, listener: QmpListenerMap[K]): this {
    this.#listeners[name].add(listener);
    return this;
  }

  off<K extends keyof QmpListenerMap>(name: K, listener: QmpListenerMap[K]): this {
    this.#listeners[name].delete(listener);
    return this;
  }

  /**
   * Connect, read the greeting and negotiate capabilities, all within
   * `timeoutMs`. Resolves with the greeting once the client is `running`.
   * Rejects with `QmpConnectError` (EQMP_CONNECT); the client is then `closed`.
   */
  async connect(socketPath: string, options: ConnectOptions = {}): Promise<QmpGreeting> {
    if (this.#state !== 'idle') {
      throw new QmpStateError(
        `cannot connect to ${socketPath}: the QMP client is ${this.#state}`,
        this.#state,
        'create a new QmpClient: a client connects once',
      );
    }
    const timeoutMs = checkTimeout('timeoutMs', options.timeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS);
    const deadline = Date.now() + timeoutMs;
    const remaining = (): number => Math.max(1, deadline - Date.now());
    this.#socketPath = socketPath;
    this.#setState('connecting');

    try {
      const transport = await LineTransport.connect({
        socketPath,
        timeoutMs,
        maxLineBytes: this.#options.maxLineBytes,
        onLine: (line) => this.#onLine(line),
        onClose: (reason) => this.#finish(reason),
      });
      if (this.state !== 'connecting') {
        transport.destroy();
        throw new QmpConnectError(socketPath, 'closed by the client while connecting');
      }
      this.#transport = transport;
      const greeting = this.#greeting ?? (await this.#awaitGreeting(socketPath, timeoutMs, remaining()));

      const enable = this.#options.oob && greeting.capabilities.includes('oob') ? ['oob'] : [];
      try {
        await this.#send('qmp_capabilities', enable.length > 0 ? { enable } : undefined, remaining());
      } catch (err) {
        if (err instanceof QmpCommandError) {
          throw new QmpConnectError(socketPath, `capabilities negotiation failed: ${err.errorClass}: ${err.desc}`, {
            cause: err,
          });
        }
        if (err instanceof QmpTimeoutError) {
          throw new QmpConnectError(socketPath, `no reply to qmp_capabilities within ${timeoutMs}ms`, {
            cause: err,
          });
        }
        if (err instanceof QmpClosedError) {
          throw new QmpConnectError(socketPath, 'connection closed during capabilities negotiation', {
            hint: 'QEMU may have exited: read its log (qemu.log)',
            cause: err,
          });
        }
        throw err;
      }
      if (this.state !== 'connecting') {
        throw new QmpConnectError(socketPath, 'closed by the client while connecting');
      }
      this.#capabilities = enable;
      this.#setState('running');
      return greeting;
    } catch (err) {
      const error =
        err instanceof QmpConnectError
          ? err
          : new QmpConnectError(socketPath, err instanceof Error ? err.message : String(err), { cause: err });
      this.#finish(error);
      this.#transport?.destroy();
      throw error;
    }
  }

  #awaitGreeting(socketPath: string, timeoutMs: number, waitMs: number): Promise<QmpGreeting> {
    return new Promise<QmpGreeting>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#greetingWaiter = undefined;
        reject(
          new QmpConnectError(
            socketPath,
            `no QMP greeting within ${timeoutMs}ms (another client may hold the socket)`,
            {
              hint: 'a QMP socket serves one client at a time: close the other client, or retry when it is done',
            },
          ),
        );
      }, waitMs);
      this.#greetingWaiter = {
        resolve: (greeting) => {
          clearTimeout(timer);
          this.#greetingWaiter = undefined;
          resolve(greeting);
        },
        reject: (error) => {
          clearTimeout(timer);
          this.#greetingWaiter = undefined;
          reject(error);
        },
      };
    });
  }

  /**
   * Send a command and resolve with its `return` value. Rejects with
   * `QmpCommandError` (QEMU's class and desc), `QmpTimeoutError`,
   * `QmpClosedError`, or `QmpStateError` before negotiation has finished
   * (nothing is sent then).
   */
  execute<T = unknown>(command: string, args?: Record<string, unknown>, options: CallOptions = {}): Promise<T> {
    try {
      if (typeof command !== 'string' || command === '') {
        throw new TypeError(`command: expected a QMP command name, got ${JSON.stringify(command)}`);
      }
      if (args !== undefined && !isObject(args)) {
        throw new TypeError(`arguments of '${command}': expected an object, got ${JSON.stringify(args)}`);
      }
      this.#assertRunning(command);
      const timeoutMs = checkTimeout(
        'timeoutMs',
        options.timeoutMs ?? this.#options.commandTimeoutsMs[command] ?? this.#options.defaultTimeoutMs,
      );
      return this.#send(command, args, timeoutMs) as Promise<T>;
    } catch (err) {
      return Promise.reject(err);
    }
  }

  #assertRunning(command: string): void {
    switch (this.#state) {
      case 'running':
        return;
      case 'idle':
        throw new QmpStateError(
          `cannot send '${command}': the QMP client is not connected`,
          this.#state,
          'call connect() first',
        );
      case 'connecting':
        throw new QmpStateError(
          `cannot send '${command}': QMP capabilities negotiation has not finished`,
          this.#state,
          'await connect() before sending commands',
        );
      case 'disconnecting':
      case 'closed':
        throw new QmpClosedError(`cannot send '${command}': the QMP connection is closed`, {
          command,
          byClient: this.#state === 'disconnecting' || this.#closeReason === undefined,
          ...(this.#closeReason === undefined ? {} : { cause: this.#closeReason }),
        });
    }
  }

  #send(command: string, args: Record<string, unknown> | undefined, timeoutMs: number): Promise<unknown> {
    const id = this.#nextId++;
    const message: Json = args === undefined ? { execute: command, id } : { execute: command, arguments: args, id };
    const line = JSON.stringify(message);
    return new Promise<unknown>((resolve, reject) => {
      const timer = setTimeout(() => {
        if (this.#pending.delete(id)) {
          reject(
            new QmpTimeoutError(`QMP command '${command}' got no reply within ${timeoutMs}ms`, {
              command,
              timeoutMs,
            }),
          );
        }
      }, timeoutMs);
      this.#pending.set(id, { command, args, resolve, reject, timer });
      if (this.#transport === undefined || !this.#transport.writeLine(line)) {
        this.#pending.delete(id);
        clearTimeout(timer);
        reject(new QmpClosedError(`cannot send '${command}': the QMP connection is closed`, { command, byClient: false }));
      }
    });
  }

  /**
   * Subscribe to events, optionally only those named. Subscribed at once:
   * call this before sending the command that triggers the event.
   *
   *     for await (const e of client.events(['SHUTDOWN', 'POWERDOWN'])) { … }
   */
  events(names?: string | readonly string[]): QmpEventStream {
    const filter = normalizeNames(names);
    const tap: Tap = {
      names: filter,
      deliver: (event) => stream.push(event),
      end: () => stream.finish(),
    };
    const stream = new QmpEventStream(this.#options.maxQueuedEvents, () => this.#taps.delete(tap));
    if (this.#state === 'closed') stream.finish();
    else this.#taps.add(tap);
    return stream;
  }

  /**
   * Resolve with the next event named `names` (one name or several). The
   * subscription starts now; the timeout counts from now. Rejects with
   * `QmpTimeoutError` or, if the connection closes first, `QmpClosedError`.
   * To wait for an event caused by a command, prefer `expectEvent()`.
   */
  waitForEvent(names: string | readonly string[], options: WaitForEventOptions = {}): Promise<QmpEvent> {
    try {
      return this.#subscribeOnce(names, options).promise;
    } catch (err) {
      return Promise.reject(err);
    }
  }

  /**
   * Subscribe to `names`, run `action` (typically a command), then wait for
   * the event: the subscription exists before anything is sent, so a fast
   * event cannot be missed. If `action` throws, the subscription is dropped
   * and the error propagates.
   *
   *     const { event } = await client.expectEvent('SHUTDOWN', () => client.quit());
   */
  async expectEvent<T>(
    names: string | readonly string[],
    action: () => Promise<T> | T,
    options: WaitForEventOptions = {},
  ): Promise<{ result: T; event: QmpEvent }> {
    const waiter = this.#subscribeOnce(names, options);
    // Handled below; avoid an unhandled rejection while `action` runs.
    waiter.promise.catch(() => {});
    let result: T;
    try {
      result = await action();
    } catch (err) {
      waiter.cancel();
      throw err;
    }
    const event = await waiter.promise;
    return { result, event };
  }

  #subscribeOnce(
    names: string | readonly string[],
    options: WaitForEventOptions,
  ): { promise: Promise<QmpEvent>; cancel: () => void } {
    const filter = normalizeNames(names)!;
    if (filter.size === 0) throw new TypeError('names: expected at least one event name');
    const timeoutMs = checkTimeout('timeoutMs', options.timeoutMs ?? DEFAULT_EVENT_TIMEOUT_MS);
    const what = describeNames(filter);
    let cancel = (): void => {};
    const promise = new Promise<QmpEvent>((resolve, reject) => {
      if (this.#state === 'closed') {
        reject(
          new QmpClosedError(`cannot wait for the ${what}: the QMP connection is closed`, {
            byClient: this.#closeReason === undefined,
            ...(this.#closeReason === undefined ? {} : { cause: this.#closeReason }),
          }),
        );
        return;
      }
      const timer = setTimeout(() => {
        this.#taps.delete(tap);
        reject(
          new QmpTimeoutError(`no ${what} within ${timeoutMs}ms`, { events: [...filter], timeoutMs }),
        );
      }, timeoutMs);
      const tap: Tap = {
        names: filter,
        deliver: (event) => {
          if (options.match !== undefined) {
            let matched: boolean;
            try {
              matched = options.match(event);
            } catch (err) {
              clearTimeout(timer);
              this.#taps.delete(tap);
              reject(err instanceof Error ? err : new Error(String(err)));
              return;
            }
            if (!matched) return;
          }
          clearTimeout(timer);
          this.#taps.delete(tap);
          resolve(event);
        },
        end: (reason, byClient) => {
          clearTimeout(timer);
          this.#taps.delete(tap);
          reject(
            new QmpClosedError(`QMP connection ${byClient ? 'closed by the client' : 'closed'} while waiting for the ${what}`, {
              byClient,
              ...(reason === undefined ? {} : { cause: reason }),
            }),
          );
        },
      };
      this.#taps.add(tap);
      cancel = () => {
        clearTimeout(timer);
        this.#taps.delete(tap);
      };
    });
    return { promise, cancel };
  }

  /**
   * Close the connection. Pending calls reject at once with EQMP_CLOSED
   * (`byClient: true`); event streams end. Resolves once the socket is closed.
   */
  async close(): Promise<void> {
    switch (this.#state) {
      case 'closed':
        return;
      case 'disconnecting':
        return this.#closed;
      case 'idle':
        this.#finish(undefined);
        return;
      case 'connecting':
      case 'running':
        break;
    }
    this.#setState('disconnecting');
    this.#rejectPending(undefined, true);
    this.#greetingWaiter?.reject(
      new QmpConnectError(this.#socketPath ?? '(unknown)', 'closed by the client while connecting'),
    );
    if (this.#transport !== undefined) await this.#transport.close();
    await this.#closed;
  }

  #setState(state: QmpState): void {
    this.#state = state;
  }

  #onLine(line: string): void {
    if (line.trim() === '') return;
    let message: unknown;
    try {
      message = JSON.parse(line);
    } catch (err) {
      this.#fatal(new QmpProtocolError(`QMP sent a line that is not JSON: ${preview(line)}`, line, { cause: err }));
      return;
    }
    if (!isObject(message)) {
      this.#fatal(new QmpProtocolError(`QMP sent a JSON value that is not an object: ${preview(line)}`, message));
      return;
    }
    if ('QMP' in message) this.#onGreeting(message);
    else if ('event' in message) this.#onEvent(message);
    else if ('return' in message || 'error' in message) this.#onReply(message);
    else this.#report(new QmpProtocolError(`QMP sent an unknown message: ${preview(line)}`, message));
  }

  #onGreeting(message: Json): void {
    const body = message.QMP;
    if (this.#greeting !== undefined || this.#state !== 'connecting') {
      this.#report(new QmpProtocolError('QMP sent a second greeting', message));
      return;
    }
    const version = isObject(body) ? body.version : undefined;
    const qemu = isObject(version) ? version.qemu : undefined;
    const capabilities = isObject(body) ? body.capabilities : undefined;
    if (
      !isObject(version) ||
      !isObject(qemu) ||
      typeof qemu.major !== 'number' ||
      typeof qemu.minor !== 'number' ||
      typeof qemu.micro !== 'number' ||
      !Array.isArray(capabilities) ||
      !capabilities.every((c): c is string => typeof c === 'string')
    ) {
      this.#fatal(new QmpProtocolError(`QMP greeting is malformed: ${preview(JSON.stringify(message))}`, message));
      return;
    }
    this.#greeting = {
      version: {
        qemu: { major: qemu.major, minor: qemu.minor, micro: qemu.micro },
        package: typeof version.package === 'string' ? version.package : '',
      },
      capabilities: [...capabilities],
    };
    this.#greetingWaiter?.resolve(this.#greeting);
  }

  #onEvent(message: Json): void {
    const name = message.event;
    if (typeof name !== 'string') {
      this.#report(new QmpProtocolError('QMP sent an event without a name', message));
      return;
    }
    const ts = isObject(message.timestamp) ? message.timestamp : {};
    const event: QmpEvent = {
      event: name,
      data: isObject(message.data) ? message.data : {},
      timestamp: {
        seconds: typeof ts.seconds === 'number' ? ts.seconds : 0,
        microseconds: typeof ts.microseconds === 'number' ? ts.microseconds : 0,
      },
    };
    for (const tap of [...this.#taps]) {
      if (tap.names === undefined || tap.names.has(name)) tap.deliver(event);
    }
    this.#emit('event', event);
  }

  #onReply(message: Json): void {
    if (!('id' in message)) {
      if ('error' in message) {
        // We always send an id: an error without one means QEMU could not
        // parse what it received. Which call it belonged to is unknowable, so
        // every pending call fails rather than waiting for its timeout.
        const error = isObject(message.error) ? message.error : {};
        const err = new QmpProtocolError(
          `QEMU could not parse a command: ${String(error.class)}: ${String(error.desc)}`,
          message,
        );
        this.#report(err);
        this.#rejectAll(() => err);
        return;
      }
      this.#droppedReplies++;
      return;
    }
    const id = message.id;
    const pending = typeof id === 'number' ? this.#pending.get(id) : undefined;
    if (pending === undefined) {
      this.#droppedReplies++;
      return;
    }
    this.#pending.delete(id as number);
    clearTimeout(pending.timer);
    if ('error' in message) {
      const error = isObject(message.error) ? message.error : {};
      pending.reject(
        new QmpCommandError(
          pending.command,
          typeof error.class === 'string' ? error.class : 'GenericError',
          typeof error.desc === 'string' ? error.desc : JSON.stringify(message.error),
          pending.args,
        ),
      );
    } else {
      pending.resolve(message.return);
    }
  }

  /** Report a non-fatal protocol problem to 'protocol-error' listeners. */
  #report(error: QmpProtocolError): void {
    this.#emit('protocol-error', error);
  }

  /** A protocol violation that makes the stream untrustworthy: close with it. */
  #fatal(error: QmpProtocolError): void {
    this.#report(error);
    this.#finish(error);
    this.#transport?.destroy();
  }

  #rejectAll(makeError: (pending: Pending) => Error): void {
    const pendings = [...this.#pending.values()];
    this.#pending.clear();
    for (const pending of pendings) {
      clearTimeout(pending.timer);
      pending.reject(makeError(pending));
    }
  }

  #rejectPending(reason: Error | undefined, byClient: boolean): void {
    this.#rejectAll((pending) =>
      reason instanceof QmpFrameError || reason instanceof QmpProtocolError
        ? reason
        : new QmpClosedError(
            `QMP connection ${byClient ? 'closed by the client' : 'closed'} while '${pending.command}' was pending`,
            { command: pending.command, byClient, ...(reason === undefined ? {} : { cause: reason }) },
          ),
    );
  }

  /** The one way into `closed`. Idempotent. */
  #finish(reason: Error | undefined): void {
    if (this.#state === 'closed') return;
    const byClient = this.#state === 'disconnecting';
    this.#closeReason = reason;
    this.#setState('closed');
    this.#rejectPending(reason, byClient);
    this.#greetingWaiter?.reject(
      reason instanceof QmpConnectError
        ? reason
        : new QmpConnectError(this.#socketPath ?? '(unknown)', 'connection closed before the QMP greeting', {
            hint: 'QEMU may have exited: read its log (qemu.log)',
            ...(reason === undefined ? {} : { cause: reason }),
          }),
    );
    for (const tap of [...this.#taps]) tap.end(reason, byClient);
    this.#taps.clear();
    this.#resolveClosed();
    this.#emit('close', reason);
  }

  #emit<K extends keyof QmpListenerMap>(name: K, arg: Parameters<QmpListenerMap[K]>[0]): void {
    for (const listener of [...this.#listeners[name]]) {
      try {
        (listener as (a: typeof arg) => void)(arg);
      } catch (err) {
        // A listener's bug must not break the protocol; surface it like EventEmitter would.
        queueMicrotask(() => {
          throw err;
        });
      }
    }
  }
}
