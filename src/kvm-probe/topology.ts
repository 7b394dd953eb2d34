/**
 * CPU topology from per-CPU facts (pure). Cores are counted as groups of
 * online CPUs sharing a thread-sibling set (or, without one, a package and
 * core id), so sparse `core_id` numbering (common on AMD) and duplicate
 * core ids on different dies do not mislead it.
 */
import type { CpuTopology } from './types.ts';

/** What one online logical CPU says about its place. */
export interface CpuPlace {
  cpu: number;
  /** `physical_package_id` (sysfs) or `physical id` (cpuinfo). */
  packageId: number;
  /** `core_id` (sysfs) or `core id` (cpuinfo). */
  coreId: number | undefined;
  /** `thread_siblings_list`, parsed; `undefined` to group by package and core id instead. */
  threadSiblings: number[] | undefined;
}

/**
 * Sockets, cores and threads of the given CPUs. Returns `undefined` when a
 * CPU can be placed neither by its thread siblings nor by its core id.
 */
export function computeTopology(places: CpuPlace[], source: CpuTopology['source']): CpuTopology | undefined {
  if (places.length === 0) return undefined;
  const coreOf = new Map<string, { packageId: number; threads: number }>();
  for (const p of places) {
    let key: string;
    if (p.threadSiblings !== undefined && p.threadSiblings.length > 0) key = `${p.packageId}/t${p.threadSiblings.join(',')}`;
    else if (p.coreId !== undefined) key = `${p.packageId}/c${p.coreId}`;
    else return undefined;
    const core = coreOf.get(key);
    if (core) core.threads += 1;
    else coreOf.set(key, { packageId: p.packageId, threads: 1 });
  }
  const coresPerPackage = new Map<number, number>();
  const threadCounts = new Set<number>();
  for (const core of coreOf.values()) {
    coresPerPackage.set(core.packageId, (coresPerPackage.get(core.packageId) ?? 0) + 1);
    threadCounts.add(core.threads);
  }
  const perSocket = new Set(coresPerPackage.values());
  const coresPerSocket = perSocket.size === 1 ? ([...perSocket][0] as number) : null;
  return {
    sockets: coresPerPackage.size,
    coresPerSocket,
    threadsPerCore: Math.max(...threadCounts),
    cores: coreOf.size,
    uniform: coresPerSocket !== null && threadCounts.size === 1,
    source,
  };
}
