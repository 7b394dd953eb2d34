/**
 * The fast test guest for lifecycle tests: Debian's cloud kernel + a busybox
 * initramfs, built once by test/support/fastguest.ts and cached between runs in
 * `${XDG_CACHE_HOME:-$HOME/.cache}/goship-test/fastguest`. See docs/test-guests.md.
 */
import { homedir } from 'node:os';
import { join } from 'node:path';
import { ensureFastGuest } from '../support/fastguest.ts';
import type { FastGuest } from '../support/fastguest.ts';

export type { FastGuest };
export { FASTGUEST_ACPI_IGNORE, FASTGUEST_AGENT_PORT, FASTGUEST_READY_LINE, FASTGUEST_UP_LINE } from '../support/fastguest.ts';

/** The cache directory shared by every test run on this machine. */
export function fastGuestCacheDir(): string {
  const base = process.env.XDG_CACHE_HOME || join(process.env.HOME || homedir(), '.cache');
  return join(base, 'goship-test', 'fastguest');
}

/** Builds the guest on first use (about a minute), then returns the cached one at once. */
export function fastGuest(opts: { log?: (line: string) => void } = {}): Promise<FastGuest> {
  return ensureFastGuest(fastGuestCacheDir(), opts);
}
