/**
 * The monitor's environment. glibc gives every thread that allocates under
 * contention an arena of its own, and keeps what they freed: in a monitor
 * (libuv's pool writing console.log, V8's helper threads) that was ~2 MiB of
 * private memory per VM (docs/benchmarks.md). One arena
 * (`MALLOC_ARENA_MAX=1`) costs the monitor nothing measurable, but QEMU must
 * not inherit it (its vCPU and I/O threads do allocate concurrently): the
 * monitor takes it out of its own environment at once, before it spawns QEMU.
 * A `MALLOC_ARENA_MAX` the user set is left alone, in both. No imports: the
 * monitor's entry loads this before anything else.
 */

/** Set beside MALLOC_ARENA_MAX when the starter added it, so the monitor knows to take it out. */
export const ARENA_MARK = 'GOSHIP_MONITOR_ARENA';

type Env = Record<string, string | undefined>;

/** Pure: the environment the monitor is started with. */
export function monitorEnv(env: Env): Env {
  if (env.MALLOC_ARENA_MAX !== undefined) return { ...env };
  return { ...env, MALLOC_ARENA_MAX: '1', [ARENA_MARK]: '1' };
}

/** In the monitor: undoes what `monitorEnv` added (glibc read it at start already), so QEMU and every other child get the starter's environment. */
export function restoreEnv(env: Env): void {
  if (env[ARENA_MARK] !== '1') return;
  delete env.MALLOC_ARENA_MAX;
  delete env[ARENA_MARK];
}
