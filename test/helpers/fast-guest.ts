/**
 * The fast test guest for lifecycle tests: Debian's cloud kernel + a busybox
 * initramfs, built once by test/support/fastguest.ts and cached between runs in
 * `goship-test/fastguest` under the test cache (test/support/cache.ts). See
 * docs/test-guests.md.
 */
import { dirname, join } from 'node:path';
import { testCacheBase, openToQemu } from '../support/cache.ts';
import { ensureFastGuest } from '../support/fastguest.ts';
import type { FastGuest } from '../support/fastguest.ts';

export type { FastGuest };
export { FASTGUEST_ACPI_IGNORE, FASTGUEST_FILL, FASTGUEST_AGENT_PORT, FASTGUEST_READY_LINE, FASTGUEST_UP_LINE } from '../support/fastguest.ts';

/** The cache directory shared by every test run on this machine. */
export function fastGuestCacheDir(): string {
  return join(testCacheBase(), 'fastguest');
}

/** Builds the guest on first use (about a minute), then returns the cached one at once, readable by QEMU's user. */
export async function fastGuest(opts: { log?: (line: string) => void } = {}): Promise<FastGuest> {
  const guest = await ensureFastGuest(fastGuestCacheDir(), opts);
  await openToQemu(dirname(guest.kernel));
  return guest;
}
