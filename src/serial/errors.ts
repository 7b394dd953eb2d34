/**
 * Every error the agent client raises. Each has a stable `code`; messages read
 * "<what failed>: <why>" and `hint`, when present, is the fix.
 */
import { ERROR_CODES, GoshipError, type ErrorCode } from '../errors.ts';

export type AgentErrorCode = 'EAGENT_TIMEOUT' | 'EAGENT_CLOSED' | 'EAGENT_PROTOCOL' | 'EAGENT_REMOTE' | 'EAGENT_RUNTIME' | 'ELIMIT';

/** Base of every agent-channel error. */
export class AgentError extends GoshipError {
  declare readonly code: AgentErrorCode;

  constructor(code: AgentErrorCode, message: string, options: { hint?: string; cause?: unknown } = {}) {
    super(code, message, options);
  }
}

/** No answer in time: the agent never said hello, or a request got no reply. */
export class AgentTimeoutError extends AgentError {
  readonly timeoutMs: number;
  /** The method that got no reply; undefined when the hello never came. */
  readonly method: string | undefined;

  constructor(message: string, options: { timeoutMs: number; method?: string; hint?: string; cause?: unknown }) {
    super('EAGENT_TIMEOUT', message, {
      hint:
        options.hint ??
        'the guest may be busy or hung: retry with a longer timeout, or read the VM console.log and `journalctl -u goship-agent` in the guest',
      ...(options.cause === undefined ? {} : { cause: options.cause }),
    });
    this.timeoutMs = options.timeoutMs;
    this.method = options.method;
  }
}

/** The channel closed (by `close()`, the socket, or the agent restarting) while something was pending. */
export class AgentClosedError extends AgentError {
  /** True when this client called `close()`. */
  readonly byClient: boolean;

  constructor(message: string, options: { byClient: boolean; hint?: string; cause?: unknown }) {
    super('EAGENT_CLOSED', message, {
      ...(options.hint !== undefined
        ? { hint: options.hint }
        : options.byClient
          ? {}
          : { hint: 'QEMU or the guest agent went away: read qemu.log and the VM console.log, then connect again' }),
      ...(options.cause === undefined ? {} : { cause: options.cause }),
    });
    this.byClient = options.byClient;
  }
}

/** The guest sent something that breaks the protocol (bad framing, wrong version, bad result, checksum mismatch). */
export class AgentProtocolError extends AgentError {
  /** What was received, when it helps (a parsed message or a short description). */
  readonly received: unknown;

  constructor(message: string, options: { received?: unknown; hint?: string; cause?: unknown } = {}) {
    super('EAGENT_PROTOCOL', message, {
      ...(options.hint === undefined ? {} : { hint: options.hint }),
      ...(options.cause === undefined ? {} : { cause: options.cause }),
    });
    this.received = options.received;
  }
}

/** The fix for a guest without a Node.js the agent can run on. */
export const AGENT_RUNTIME_HINT =
  'use an image with Node.js 18 or newer (Debian: apt install nodejs), or one GoShip built (goshipctl image build); for an imported image, give the VM a route to its package mirror so cloud-init can install nodejs';

/**
 * The guest cannot run the agent (it said so on the port instead of a hello):
 * no Node.js, or one too old. `guestMessage` is the guest's own words (untrusted).
 */
export class AgentUnavailableError extends AgentError {
  readonly guestCode: string;
  readonly guestMessage: string;

  constructor(where: string, guestCode: string, guestMessage: string) {
    super('EAGENT_RUNTIME', `the guest cannot run goship-agent (${where}): ${guestMessage}`, {
      hint: AGENT_RUNTIME_HINT,
    });
    this.guestCode = guestCode;
    this.guestMessage = guestMessage;
  }
}

/**
 * The agent answered with an error: its code (`ENOENT`, `EUNKNOWN_METHOD`,
 * `ECHECKSUM`, …) is kept as `remoteCode`. Through a VM's monitor, an error of
 * GoShip's own (`EAGENT_CLOSED`, `ESTATE`, `EQMP_COMMAND`…) keeps its code as
 * the error's `code` too, so it maps to the same exit status as it would here.
 */
export class AgentRemoteError extends GoshipError {
  readonly method: string;
  readonly remoteCode: string;
  readonly remoteMessage: string;

  constructor(method: string, remoteCode: string, remoteMessage: string) {
    const own = Object.hasOwn(ERROR_CODES, remoteCode) && remoteCode !== 'EAGENT_REMOTE';
    super(own ? (remoteCode as ErrorCode) : 'EAGENT_REMOTE', own ? remoteMessage : `agent ${method} failed: ${remoteCode}: ${remoteMessage}`);
    this.method = method;
    this.remoteCode = remoteCode;
    this.remoteMessage = remoteMessage;
  }
}

/** A transfer over its bound: larger than the caller's limit or the free space, or more than the guest announced. */
export class TransferLimitError extends AgentError {
  constructor(message: string, options: { hint?: string } = {}) {
    super('ELIMIT', message, options);
  }
}
