/**
 * The agent's outgoing side of one channel: a unix socket (test mode) or the
 * virtio-serial character device (or a FIFO standing in for it).
 */
import { Buffer } from 'node:buffer';
import { writev as fsWritev } from 'node:fs';
import type { Socket } from 'node:net';
import { whenWritable } from '../../src/protocol/index.ts';

/** Bytes the agent may have queued for the host before stream pumps wait. */
export const LINK_HIGH_WATER = 1024 * 1024;

/** Queued frames written by one `writev(2)`: at most this many bytes (a lone larger frame goes alone)… */
export const LINK_WRITE_BYTES = 256 * 1024;
/** …and at most this many frames. */
export const LINK_WRITE_FRAMES = 64;

export interface Link {
  /** Queue bytes for the host. Never throws; bytes are dropped once the link is dead. */
  write(bytes: Buffer): void;
  /** Resolves when the queue is below the high-water mark (or the link is dead). */
  whenWritable(): Promise<void>;
  /** A new host session: forget frames queued for the previous one (a write in flight still completes). */
  dropQueued(): void;
}

/** Test mode: one unix-socket connection is one session. */
export class SocketLink implements Link {
  readonly #socket: Socket;

  constructor(socket: Socket) {
    this.#socket = socket;
  }

  write(bytes: Buffer): void {
    if (this.#socket.destroyed || this.#socket.writableEnded) return;
    this.#socket.write(bytes);
  }

  whenWritable(): Promise<void> {
    return whenWritable(this.#socket);
  }

  dropQueued(): void {
    // A socket connection is one session: nothing from another session can be queued.
  }
}

/**
 * A file descriptor written with one `writev(2)` at a time on libuv's thread
 * pool, of every frame queued meanwhile (bounded): each hand-off to the pool
 * and back costs the guest about a millisecond under TCG, and under load (the
 * answers to several clients' requests, acks, output) frames queue up behind
 * one another. On a virtio-serial port `write` blocks while the host is not
 * connected: only one pool thread ever waits for it, and frames queued for a
 * host that went away are dropped at the next session.
 */
export class FdLink implements Link {
  readonly #fd: number;
  readonly #log: (line: string) => void;
  #queue: Buffer[] = [];
  #queued = 0;
  #writing = false;
  #dead = false;
  #waiters: Array<() => void> = [];

  constructor(fd: number, log: (line: string) => void) {
    this.#fd = fd;
    this.#log = log;
  }

  write(bytes: Buffer): void {
    if (this.#dead || bytes.length === 0) return;
    this.#queue.push(bytes);
    this.#queued += bytes.length;
    this.#pump();
  }

  whenWritable(): Promise<void> {
    if (this.#dead || this.#queued < LINK_HIGH_WATER) return Promise.resolve();
    return new Promise((resolve) => this.#waiters.push(resolve));
  }

  dropQueued(): void {
    this.#queue = [];
    this.#queued = 0;
    this.#wake();
  }

  /** The descriptor failed (port unplugged): drop everything from now on. */
  kill(): void {
    this.#dead = true;
    this.dropQueued();
  }

  #wake(): void {
    if (this.#queued >= LINK_HIGH_WATER && !this.#dead) return;
    const waiters = this.#waiters;
    this.#waiters = [];
    for (const w of waiters) w();
  }

  #pump(): void {
    if (this.#writing || this.#dead) return;
    const queue = this.#queue;
    const batch = writeBatch(queue);
    if (batch.length === 0) return;
    this.#writing = true;
    fsWritev(this.#fd, batch, null, (err, written) => {
      this.#writing = false;
      if (err) {
        this.#log(`write to the port failed: ${err.message}; queued output dropped`);
        this.dropQueued();
        if (err.code === 'ENODEV' || err.code === 'EBADF') this.kill();
        return;
      }
      // The queue may have been replaced by dropQueued() while this write was in flight.
      if (this.#queue === queue) {
        consume(queue, written);
        this.#queued -= written;
      }
      this.#wake();
      this.#pump();
    });
  }
}

/** Pure: the frames at the head of `queue` that one write takes (at least one, when there is one). */
export function writeBatch(queue: readonly Buffer[]): Buffer[] {
  const batch: Buffer[] = [];
  let bytes = 0;
  for (const b of queue) {
    if (batch.length === LINK_WRITE_FRAMES || (batch.length > 0 && bytes + b.length > LINK_WRITE_BYTES)) break;
    batch.push(b);
    bytes += b.length;
  }
  return batch;
}

/** Pure: takes `written` bytes off the head of `queue` (a frame written in part keeps its rest at the head). */
export function consume(queue: Buffer[], written: number): void {
  let left = written;
  while (left > 0 && queue.length > 0) {
    const head = queue[0]!;
    if (left >= head.length) {
      left -= head.length;
      queue.shift();
    } else {
      queue[0] = head.subarray(left);
      left = 0;
    }
  }
}
