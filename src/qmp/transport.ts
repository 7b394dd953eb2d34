/**
 * QMP transport: a unix socket carrying newline-delimited JSON.
 *
 * This layer knows bytes and lines only: it connects (with a timeout and a
 * clear error per failure), splits the stream into lines under a size limit,
 * writes lines and closes. It does not parse JSON.
 */
import { Buffer } from 'node:buffer';
import { connect as netConnect, type Socket } from 'node:net';
import { UNIX_SOCKET_PATH_MAX } from '../layout.ts';
import { QmpConnectError, QmpFrameError } from './errors.ts';

/** Largest line accepted from QEMU (replies to `query-*` commands can be big). */
export const MAX_LINE_BYTES = 16 * 1024 * 1024;

const NEWLINE = 0x0a;

/**
 * Splits a byte stream into lines. Pure: no I/O.
 *
 * Chunks without a newline are kept as a list (not concatenated on every
 * chunk), so a multi-megabyte line costs one copy. A line longer than
 * `maxLineBytes` (newline excluded) throws `QmpFrameError`.
 */
export class LineFramer {
  readonly #maxLineBytes: number;
  #chunks: Buffer[] = [];
  #pendingBytes = 0;

  constructor(maxLineBytes: number = MAX_LINE_BYTES) {
    this.#maxLineBytes = maxLineBytes;
  }

  /** Bytes received that do not yet form a whole line. */
  get pendingBytes(): number {
    return this.#pendingBytes;
  }

  /** Feed a chunk; returns the complete lines it finished (decoded as UTF-8, `\r\n` trimmed). */
  push(chunk: Buffer): string[] {
    const lines: string[] = [];
    let start = 0;
    for (;;) {
      const nl = chunk.indexOf(NEWLINE, start);
      if (nl === -1) break;
      const part = chunk.subarray(start, nl);
      const length = this.#pendingBytes + part.length;
      if (length > this.#maxLineBytes) throw new QmpFrameError(this.#maxLineBytes);
      const line =
        this.#chunks.length === 0 ? part : Buffer.concat([...this.#chunks, part], length);
      this.#chunks = [];
      this.#pendingBytes = 0;
      let text = line.toString('utf8');
      if (text.endsWith('\r')) text = text.slice(0, -1);
      lines.push(text);
      start = nl + 1;
    }
    if (start < chunk.length) {
      const rest = chunk.subarray(start);
      this.#pendingBytes += rest.length;
      if (this.#pendingBytes > this.#maxLineBytes) throw new QmpFrameError(this.#maxLineBytes);
      // Copy: the socket may reuse its buffer.
      this.#chunks.push(Buffer.from(rest));
    }
    return lines;
  }
}

export interface TransportOptions {
  socketPath: string;
  /** How long the socket connect itself may take. */
  timeoutMs: number;
  /** Longest accepted line; default `MAX_LINE_BYTES` (16 MiB). */
  maxLineBytes?: number;
  /** Called for each complete line, in order. Attached before any byte can arrive. */
  onLine: (line: string) => void;
  /**
   * Called once when a connected transport closes: `undefined` for a clean EOF
   * or `close()`, else the socket error or the `QmpFrameError` that ended it.
   */
  onClose: (reason: Error | undefined) => void;
}

/** What each connect failure means for a QMP socket, and what to do about it. */
function describeConnectFailure(err: NodeJS.ErrnoException): { why: string; hint?: string } {
  switch (err.code) {
    case 'ENOENT':
      return { why: 'no such file', hint: 'is QEMU running? The socket appears once QEMU has started' };
    case 'ECONNREFUSED':
      return {
        why: 'connection refused',
        hint: 'nothing listens on it: QEMU probably exited and left a stale socket file',
      };
    case 'EACCES':
    case 'EPERM':
      return { why: 'permission denied', hint: 'run as the user that started QEMU' };
    case 'ENOTSOCK':
      return { why: 'not a socket' };
    case 'EAGAIN':
      return {
        why: 'the socket is busy (listen backlog full)',
        hint: 'another client may hold the socket: a QMP socket serves one client at a time',
      };
    default:
      return { why: err.message };
  }
}

/** A connected QMP socket that speaks lines. */
export class LineTransport {
  readonly #socket: Socket;
  readonly #framer: LineFramer;
  readonly #onLine: (line: string) => void;
  readonly #onClose: (reason: Error | undefined) => void;
  #closed = false;
  #closeReason: Error | undefined;
  readonly #closedPromise: Promise<void>;
  #resolveClosed!: () => void;

  private constructor(socket: Socket, options: Pick<TransportOptions, 'maxLineBytes' | 'onLine' | 'onClose'>) {
    this.#socket = socket;
    this.#framer = new LineFramer(options.maxLineBytes ?? MAX_LINE_BYTES);
    this.#onLine = options.onLine;
    this.#onClose = options.onClose;
    this.#closedPromise = new Promise<void>((r) => (this.#resolveClosed = r));
  }

  /**
   * Connect to a unix socket. Rejects with `QmpConnectError` (EQMP_CONNECT)
   * when the path is missing, refused, too long, or the connect times out.
   */
  static connect(options: TransportOptions): Promise<LineTransport> {
    const { socketPath, timeoutMs } = options;
    const pathBytes = Buffer.byteLength(socketPath);
    if (pathBytes > UNIX_SOCKET_PATH_MAX) {
      return Promise.reject(
        new QmpConnectError(
          socketPath,
          `path is ${pathBytes} bytes, longer than the ${UNIX_SOCKET_PATH_MAX} a unix socket allows`,
          { hint: 'use a shorter run directory (GOSHIP_RUN)' },
        ),
      );
    }
    return new Promise<LineTransport>((resolve, reject) => {
      const socket = netConnect({ path: socketPath });
      const transport = new LineTransport(socket, options);
      let connected = false;

      const timer = setTimeout(() => {
        socket.destroy();
        reject(
          new QmpConnectError(socketPath, `no connection within ${timeoutMs}ms`, {
            hint: 'another client may hold the socket: a QMP socket serves one client at a time',
          }),
        );
      }, timeoutMs);

      socket.once('connect', () => {
        clearTimeout(timer);
        connected = true;
        resolve(transport);
      });
      socket.once('error', (err: NodeJS.ErrnoException) => {
        if (connected) return;
        clearTimeout(timer);
        const { why, hint } = describeConnectFailure(err);
        reject(new QmpConnectError(socketPath, why, { ...(hint === undefined ? {} : { hint }), cause: err }));
      });
      socket.once('close', () => clearTimeout(timer));
      transport.#wire(() => connected);
    });
  }

  #wire(connected: () => boolean): void {
    const socket = this.#socket;
    socket.on('data', (chunk: Buffer) => this.#receive(chunk));
    socket.on('error', (err: Error) => {
      if (connected()) this.#closeReason ??= err;
    });
    socket.once('close', () => {
      if (connected()) this.#ended();
      else this.#resolveClosed();
    });
  }

  #ended(): void {
    this.#resolveClosed();
    if (this.#closed) return;
    this.#closed = true;
    this.#onClose(this.#closeReason);
  }

  #receive(chunk: Buffer): void {
    const socket = this.#socket;
    if (socket.destroyed) return;
    let lines: string[];
    try {
      lines = this.#framer.push(chunk);
    } catch (err) {
      this.#closeReason = err as Error;
      socket.destroy();
      return;
    }
    for (const line of lines) {
      // A handler may have closed the transport (fatal protocol error): stop there.
      if (socket.destroyed) return;
      this.#onLine(line);
    }
  }

  /** True once the socket closed or `close()`/`destroy()` was called. */
  get closed(): boolean {
    return this.#closed || this.#socket.destroyed;
  }

  /** Write one line (a newline is appended). Returns false if the socket is no longer writable. */
  writeLine(line: string): boolean {
    if (this.closed || !this.#socket.writable) return false;
    this.#socket.write(line + '\n');
    return true;
  }

  /** Half-close politely, then destroy if the peer does not close within `graceMs`. */
  async close(graceMs = 1000): Promise<void> {
    if (!this.#socket.destroyed) {
      this.#socket.end();
      const timer = setTimeout(() => this.#socket.destroy(), graceMs);
      await this.#closedPromise;
      clearTimeout(timer);
    }
    await this.#closedPromise;
  }

  /** Close at once. `onClose` receives `reason`. */
  destroy(reason?: Error): void {
    this.#socket.destroy(reason);
  }
}
