/**
 * What makes the monitor's startup snapshot usable (pure, Node built-ins
 * only: the snapshot's builder and the runtime both read this). Node refuses
 * a snapshot made by another Node version or with other V8 flags, and it does
 * so by exiting, after the launcher has forked QEMU: so the runtime passes
 * the snapshot only when its key file says it was made by this Node, with
 * these flags, from the bundle that is there now.
 */

/**
 * Node flags of the monitor: a small young generation and heap keep its
 * private memory per VM small (docs/benchmarks.md has the measured figures).
 * The snapshot is built with exactly these (V8 checks its flags).
 */
export const MONITOR_NODE_FLAGS: readonly string[] = ['--max-semi-space-size=1', '--max-old-space-size=48'];

/** Beside the monitor's entry in dist/: the snapshot's source bundle, the snapshot, its key. */
export const SNAPSHOT_FILES = { bundle: 'goship-monitor-snap.cjs', blob: 'goship-monitor.blob', key: 'goship-monitor.blob.json' } as const;

export interface SnapshotKey {
  node: string;
  flags: string[];
  /** The source bundle the snapshot was made from, by size and modification time. */
  bundle: { size: number; mtimeMs: number };
}

/** Pure: the key of a snapshot made by this Node with these flags from a bundle of this size and time. */
export function snapshotKey(node: string, flags: readonly string[], bundle: { size: number; mtimeMs: number }): SnapshotKey {
  return { node, flags: [...flags], bundle: { size: bundle.size, mtimeMs: bundle.mtimeMs } };
}

/** Pure: may a monitor start from a snapshot whose key file holds `text`? The key the runtime expects is `want`; NODE_OPTIONS could add V8 flags. */
export function snapshotUsable(text: string | undefined, want: SnapshotKey, env: Record<string, string | undefined>): boolean {
  if (text === undefined || (env.NODE_OPTIONS ?? '').trim() !== '') return false;
  let have: unknown;
  try {
    have = JSON.parse(text);
  } catch {
    return false;
  }
  return JSON.stringify(have) === JSON.stringify(want);
}
