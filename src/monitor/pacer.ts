/**
 * Pacing of one relayed stream toward the agent. Everything the monitor sends
 * the guest shares one virtio-serial port, a FIFO: a ping written behind a
 * megabyte of upload waits until the guest has read that megabyte (about 70 ms
 * at TCG's 15 MiB/s). So a bulk stream keeps only a share of its window in
 * flight (sent to the agent and not yet acknowledged by it) while other
 * requests are busy on the VM (one sent something toward the guest in the
 * last half second); alone it may use the whole window, and nothing of its
 * throughput is lost. Frames beyond the share wait here: at most one window
 * per stream, which the client's credit already bounds.
 *
 * It also fits a client's frames to the agent: a client that synced before
 * the agent's first hello was granted the host's own limits, and an older
 * agent takes smaller frames and a smaller window. Frames are split to the
 * agent's size and only its window goes in flight; the rest waits here.
 *
 * Pure bookkeeping: `send` is called with what may go now; a payload lent
 * for the call alone (the client's read buffer) is copied only for the part
 * that has to wait.
 */
import { Buffer } from 'node:buffer';
import type { FlowLimits } from '../protocol/index.ts';

/** In flight per stream while other requests are busy: about 4 ms of virtio-serial throughput under TCG. */
export const SHARED_IN_FLIGHT = 64 * 1024;
/** Frames are forwarded in pieces of at most this much, so a share is not overshot by a whole frame. */
export const PACED_PIECE = 16 * 1024;

export class StreamPacer {
  readonly #send: (payload: Buffer) => void;
  readonly #contended: () => boolean;
  readonly #limits: FlowLimits;
  readonly #held: Buffer[] = [];
  #heldBytes = 0;
  #inFlight = 0;
  #eof: (() => void) | undefined;

  /**
   * @param send forwards a piece to the agent
   * @param contended whether other requests are busy on the VM right now
   * @param limits the agent's (its session's `hello.limits`): its window, and its largest frame, which no piece exceeds
   */
  constructor(send: (payload: Buffer) => void, contended: () => boolean, limits: FlowLimits) {
    this.#send = send;
    this.#contended = contended;
    this.#limits = limits;
  }

  /** Bytes sent to the agent and not yet acknowledged by it. */
  get inFlight(): number {
    return this.#inFlight;
  }

  /** Bytes received from the client and not yet sent to the agent. */
  get held(): number {
    return this.#heldBytes;
  }

  /**
   * A frame from the client. `lent`: the payload is a view of a buffer its
   * owner reuses after this call, so what cannot go at once is copied.
   */
  data(payload: Buffer, lent = false): void {
    this.#held.push(payload);
    this.#heldBytes += payload.length;
    this.pump();
    // The queue goes in order: whatever is left of the payload just pushed is its last entry.
    const last = this.#held.length - 1;
    if (lent && last >= 0) this.#held[last] = Buffer.from(this.#held[last]!);
  }

  /** The client's eof: sent once everything before it has gone. */
  eof(send: () => void): void {
    this.#eof = send;
    this.pump();
  }

  /** The agent acknowledged `n` bytes. */
  acked(n: number): void {
    this.#inFlight = Math.max(0, this.#inFlight - n);
    this.pump();
  }

  /** Sends what the current limit allows; call it again when contention ends. */
  pump(): void {
    const contended = this.#contended();
    const limit = contended ? SHARED_IN_FLIGHT : this.#limits.window;
    while (this.#held.length > 0 && this.#inFlight < limit) {
      const head = this.#held[0]!;
      // Alone, frames go whole (the client's window already bounds them): fewer frames for the guest to parse;
      // split only where the agent takes less than the client was granted.
      const n = contended ? Math.min(head.length, PACED_PIECE, limit - this.#inFlight) : Math.min(head.length, this.#limits.chunk);
      const piece = head.subarray(0, n);
      if (n === head.length) this.#held.shift();
      else this.#held[0] = head.subarray(n);
      this.#heldBytes -= n;
      this.#inFlight += n;
      this.#send(piece);
    }
    if (this.#held.length === 0 && this.#eof) {
      const eof = this.#eof;
      this.#eof = undefined;
      eof();
    }
  }
}
