/**
 * The restart policy's delay (`restart: on-crash`): 1 s after the first
 * crash, doubling up to 60 s while crashes follow each other; a run that
 * stayed up 5 minutes resets it. Pure: the caller says how long the last run
 * lasted.
 */
export const RESTART_DELAY_MIN_MS = 1_000;
export const RESTART_DELAY_MAX_MS = 60_000;
/** A run this long counts as healthy: the next crash starts over at the minimum delay. */
export const RESTART_RESET_AFTER_MS = 5 * 60_000;

export class RestartBackoff {
  #next = RESTART_DELAY_MIN_MS;

  /** The delay before the next start, given how long the run that just crashed was up. */
  delayAfter(uptimeMs: number): number {
    if (uptimeMs >= RESTART_RESET_AFTER_MS) this.#next = RESTART_DELAY_MIN_MS;
    const delay = this.#next;
    this.#next = Math.min(this.#next * 2, RESTART_DELAY_MAX_MS);
    return delay;
  }
}

/**
 * RESET events closer together than this are one reset: one guest reboot
 * gives QEMU two or three (measured: three within 50 ms), and counting each
 * made two reboots in a minute look like a loop and quit the VM.
 */
export const RESET_COALESCE_MS = 2000;

/** A burst of guest resets: more than `max` within `windowMs` is a reset loop. */
export const RESET_LOOP_MAX = 5;
export const RESET_LOOP_WINDOW_MS = 60_000;

/** Counts guest resets in a sliding window. Pure: the caller passes the clock. */
export class ResetWatch {
  readonly #times: number[] = [];

  constructor(
    readonly max = RESET_LOOP_MAX,
    readonly windowMs = RESET_LOOP_WINDOW_MS,
  ) {}

  /**
   * Records a reset at `now`; true when this makes a loop. `coalesce`: RESET
   * events of one in-place reboot count once; a reboot that ended QEMU
   * (`-no-reboot`) is one reset however soon it follows the last.
   */
  reset(now: number, coalesce = true): boolean {
    const last = this.#times.at(-1);
    if (coalesce && last !== undefined && now - last < RESET_COALESCE_MS) return false;
    this.#times.push(now);
    while (this.#times.length > 0 && now - this.#times[0]! > this.windowMs) this.#times.shift();
    return this.#times.length > this.max;
  }

  get count(): number {
    return this.#times.length;
  }
}
