/**
 * Every error the QMP client raises. Each has a stable `code`; messages read
 * "<what failed>: <why>" and `hint`, when present, is the fix.
 */
import { GoshipError } from '../errors.ts';

export type QmpErrorCode =
  | 'EQMP_CONNECT'
  | 'EQMP_COMMAND'
  | 'EQMP_CLOSED'
  | 'EQMP_TIMEOUT'
  | 'EQMP_FRAME'
  | 'EQMP_PROTOCOL'
  | 'EQMP_STATE'
  | 'EQMP_HMP'
  | 'EQMP_EVENTS_OVERFLOW';

/** Base of every QMP error. */
export class QmpError extends GoshipError {
  declare readonly code: QmpErrorCode;

  constructor(code: QmpErrorCode, message: string, options: { hint?: string; cause?: unknown } = {}) {
    super(code, message, options);
  }
}

/** The socket could not be reached, or QEMU never greeted or negotiated. */
export class QmpConnectError extends QmpError {
  readonly socketPath: string;

  constructor(socketPath: string, why: string, options: { hint?: string; cause?: unknown } = {}) {
    super('EQMP_CONNECT', `connect to QMP socket ${socketPath}: ${why}`, options);
    this.socketPath = socketPath;
  }
}

/** QEMU answered a command with `{"error": {"class", "desc"}}`: both kept verbatim. */
export class QmpCommandError extends QmpError {
  /** QEMU's error class (`GenericError`, `CommandNotFound`, `DeviceNotFound`, …). */
  readonly errorClass: string;
  /** QEMU's human-readable description, verbatim. */
  readonly desc: string;
  /** The QMP command that failed (`query-status`). */
  readonly command: string;
  /** The arguments that were sent, if any. */
  readonly args: Record<string, unknown> | undefined;

  constructor(command: string, errorClass: string, desc: string, args?: Record<string, unknown>) {
    super('EQMP_COMMAND', `QMP command '${command}' failed: ${errorClass}: ${desc}`);
    this.command = command;
    this.errorClass = errorClass;
    this.desc = desc;
    this.args = args;
  }
}

/** The connection closed (EOF, QEMU died, or `close()`) while something was pending, or before it was sent. */
export class QmpClosedError extends QmpError {
  /** The command that was pending or refused, if any. */
  readonly command: string | undefined;
  /** True when this client called `close()`; false when QEMU's side went away. */
  readonly byClient: boolean;

  constructor(message: string, options: { command?: string; byClient: boolean; cause?: unknown }) {
    super('EQMP_CLOSED', message, {
      ...(options.byClient ? {} : { hint: 'QEMU may have exited or crashed: read its log (qemu.log)' }),
      ...(options.cause === undefined ? {} : { cause: options.cause }),
    });
    this.command = options.command;
    this.byClient = options.byClient;
  }
}

/** No reply (or no awaited event) within the allowed time. */
export class QmpTimeoutError extends QmpError {
  /** The command that got no reply, when a command timed out. */
  readonly command: string | undefined;
  /** The event names waited for, when an event wait timed out. */
  readonly events: readonly string[] | undefined;
  readonly timeoutMs: number;

  constructor(message: string, options: { command?: string; events?: readonly string[]; timeoutMs: number }) {
    super('EQMP_TIMEOUT', message, {
      hint: 'QEMU may be busy or hung: retry with a longer timeoutMs, or read its log (qemu.log)',
    });
    this.command = options.command;
    this.events = options.events;
    this.timeoutMs = options.timeoutMs;
  }
}

/** A line from QEMU exceeded the size limit: the stream cannot be trusted, the connection is closed. */
export class QmpFrameError extends QmpError {
  readonly limitBytes: number;

  constructor(limitBytes: number) {
    super(
      'EQMP_FRAME',
      `QMP line too long: more than ${limitBytes} bytes without a newline; connection closed`,
      { hint: 'raise maxLineBytes if QEMU legitimately sends replies this large' },
    );
    this.limitBytes = limitBytes;
  }
}

/** QEMU sent something that is not valid QMP (not JSON, no greeting, an id-less error). */
export class QmpProtocolError extends QmpError {
  /** What was received (parsed JSON, or the raw line when it was not JSON). */
  readonly received: unknown;

  constructor(message: string, received: unknown, options: { hint?: string; cause?: unknown } = {}) {
    super('EQMP_PROTOCOL', message, options);
    this.received = received;
  }
}

/** The client was used in a state that does not allow it (a command before negotiation finished). */
export class QmpStateError extends QmpError {
  readonly state: string;

  constructor(message: string, state: string, hint?: string) {
    super('EQMP_STATE', message, hint === undefined ? {} : { hint });
    this.state = state;
  }
}

/** A `human-monitor-command` succeeded at the QMP level but the HMP command printed an error. */
export class QmpHmpError extends QmpError {
  readonly commandLine: string;
  readonly output: string;

  constructor(commandLine: string, output: string) {
    super('EQMP_HMP', `HMP command '${commandLine}' failed: ${output.trim()}`);
    this.commandLine = commandLine;
    this.output = output;
  }
}
