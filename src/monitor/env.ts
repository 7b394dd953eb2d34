/**
 * The monitor's environment: two glibc malloc settings, for the monitor and
 * not for QEMU.
 *
 * - `MALLOC_ARENA_MAX=1`: glibc gives every thread that allocates under
 *   contention an arena of its own, and keeps what they freed: in a monitor
 *   (libuv's pool writing console.log, V8's helper threads) that was ~2 MiB
 *   of private memory per VM. One arena costs the monitor nothing measurable.
 * - `MALLOC_MMAP_THRESHOLD_=32768`: Node reads a socket into a 64 KiB buffer
 *   per read, freed only when V8 collects its Buffer. Relaying an upload
 *   makes a thousand of them per 64 MiB; freed in the middle of the heap,
 *   glibc kept them (it returns only the heap's top), and a monitor that had
 *   relayed five uploads held 47 MiB private, a minute later too. With a
 *   fixed threshold every allocation of 32 KiB or more is a mapping of its
 *   own, unmapped when freed: 17–19 MiB after the same uploads (64 KiB:
 *   23–30 MiB, reads shrunk to their bytes fall below it). docs/decisions.md.
 *
 * QEMU never inherits them: its jailed command starts it with a scrubbed
 * environment (src/jail/command.ts). The monitor takes them out of its own
 * environment at once, before it spawns anything else. A setting the user
 * made is left alone. No imports: the monitor's entry loads this before
 * anything else.
 */

/** What the monitor runs with, unless the user set the same variable. */
export const MONITOR_MALLOC: Readonly<Record<string, string>> = { MALLOC_ARENA_MAX: '1', MALLOC_MMAP_THRESHOLD_: '32768' };

/** Set beside them, naming the ones the starter added, so the monitor takes out exactly those before it spawns QEMU. */
export const MALLOC_MARK = 'GOSHIP_MONITOR_MALLOC';

type Env = Record<string, string | undefined>;

/** Pure: the environment the monitor is started with. */
export function monitorEnv(env: Env): Env {
  const added = Object.keys(MONITOR_MALLOC).filter((k) => env[k] === undefined);
  if (added.length === 0) return { ...env };
  return { ...env, ...Object.fromEntries(added.map((k) => [k, MONITOR_MALLOC[k]])), [MALLOC_MARK]: added.join(' ') };
}

/** In the monitor: undoes what `monitorEnv` added (glibc read it at start already), so QEMU and every other child get the starter's environment. */
export function restoreEnv(env: Env): void {
  const mark = env[MALLOC_MARK];
  if (mark === undefined) return;
  for (const k of mark.split(' ')) if (Object.hasOwn(MONITOR_MALLOC, k)) delete env[k];
  delete env[MALLOC_MARK];
}
