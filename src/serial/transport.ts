/**
 * Agent client transport: the byte stream under a session (QEMU's unix
 * socket for the agent's virtio-serial port, or any connected Duplex).
 *
 * This layer knows sockets and frames only: it checks the socket path,
 * connects once with a timeout, splits incoming bytes into control lines and
 * data frames (FrameDecoder, bounded by MAX_LINE and MAX_CHUNK), writes lines
 * and data frames, and closes. It knows no session, no request ids' meaning
 * and no retries: session.ts decides what the frames mean and when to
 * connect again.
 */
import { Buffer } from 'node:buffer';
import { connect as netConnect, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { ValidationError } from '../errors.ts';
import { UNIX_SOCKET_PATH_MAX } from '../layout.ts';
import { FrameDecoder, encodeLine, whenWritable, writeDataFrame, type Decoded, type StreamName } from '../protocol/index.ts';

/** Refuse a socket path the kernel would truncate (sun_path), before any attempt. */
export function checkSocketPath(socketPath: string): void {
  if (Buffer.byteLength(socketPath) > UNIX_SOCKET_PATH_MAX) {
    throw new ValidationError(
      [{ path: 'socketPath', message: `${Buffer.byteLength(socketPath)} bytes, the limit is ${UNIX_SOCKET_PATH_MAX}` }],
      { subject: 'agent socket path too long', hint: 'use a shorter run directory (GOSHIP_RUN)' },
    );
  }
}

/** One connection attempt to a unix socket, abandoned after `timeoutMs`. */
export function connectUnix(path: string, timeoutMs: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = netConnect({ path });
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`connect timed out after ${timeoutMs} ms`));
    }, timeoutMs);
    socket.once('connect', () => {
      clearTimeout(timer);
      socket.removeAllListeners('error');
      resolve(socket);
    });
    socket.once('error', (err) => {
      clearTimeout(timer);
      socket.destroy();
      reject(err);
    });
  });
}

/** What the transport hears from its stream. */
export interface TransportEvents {
  /** A decoded line, data frame, or framing error (see FrameDecoder). */
  decoded(event: Decoded): void;
  error(err: Error): void;
  close(): void;
}

/** A connected byte stream carrying the agent protocol's frames. */
export class AgentTransport {
  readonly #stream: Duplex;
  readonly #decoder: FrameDecoder;
  readonly #closedPromise: Promise<void>;

  constructor(stream: Duplex, events: TransportEvents) {
    this.#stream = stream;
    this.#decoder = new FrameDecoder((e) => events.decoded(e));
    this.#closedPromise = new Promise((resolve) => stream.once('close', () => resolve()));
    stream.on('data', (chunk: Buffer) => this.#decoder.push(chunk));
    stream.on('error', (err) => events.error(err));
    stream.on('close', () => events.close());
  }

  /** Bytes written but not yet taken by the other side (the agent is not reading when this grows). */
  get writableLength(): number {
    return this.#stream.writableLength;
  }

  /** Start parsing afresh, at the next byte received: what came before may have been inside a stale frame. */
  resetDecoder(): void {
    this.#decoder.reset();
  }

  /** Raw bytes; dropped once the stream is closed. */
  write(bytes: Buffer): void {
    if (this.#stream.destroyed || this.#stream.writableEnded) return;
    this.#stream.write(bytes);
  }

  /** One control line. */
  writeLine(message: object): void {
    this.write(encodeLine(message));
  }

  /** A data frame, its header and payload in one `writev` (the payload is not copied: see `writeDataFrame`). */
  writeData(id: number, stream: StreamName, payload: Buffer): Promise<void> | undefined {
    if (this.#stream.destroyed || this.#stream.writableEnded) return undefined;
    return writeDataFrame(this.#stream, id, stream, payload);
  }

  /** Resolves once the stream takes more writes without buffering (backpressure). */
  whenWritable(): Promise<void> {
    return whenWritable(this.#stream);
  }

  destroy(): void {
    this.#stream.destroy();
  }

  /** Resolves once the stream has closed. */
  async closed(): Promise<void> {
    if (!this.#stream.closed) await this.#closedPromise;
  }
}
