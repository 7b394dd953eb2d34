/**
 * Raw host text → {@link HostReport} (pure). `probe-io.ts` gathers the
 * {@link HostSources}; everything here is a function of that text, so a
 * fixture of any host gives the same report the host would.
 */
import { assessConfidential, assessKvm } from './kvm.ts';
import type { ModuleParams } from './kvm.ts';
import {
  meminfoBytes,
  parseCount,
  parseCpuinfo,
  parseCpuList,
  parseHugepageDirName,
  parseInteger,
  parseMeminfo,
} from './parse.ts';
import type { CpuinfoProcessor } from './parse.ts';
import { computeTopology } from './topology.ts';
import type { CpuPlace } from './topology.ts';
import { HOST_REPORT_SCHEMA_VERSION } from './types.ts';
import type { CpuReport, CpuTopology, HostReport, HugepagePool, MemoryReport, NumaNode } from './types.ts';

/** Every path the probe reads, in one place. */
export const HOST_PATHS = {
  cpuinfo: '/proc/cpuinfo',
  meminfo: '/proc/meminfo',
  cpuDir: '/sys/devices/system/cpu',
  cpuOnline: '/sys/devices/system/cpu/online',
  nodeDir: '/sys/devices/system/node',
  hugepagesDir: '/sys/kernel/mm/hugepages',
  moduleDir: '/sys/module',
  devKvm: '/dev/kvm',
  devSev: '/dev/sev',
} as const;

/** The text of one CPU's `topology/` files (`undefined`: missing). */
export interface CpuTopologySource {
  cpu: number;
  physicalPackageId: string | undefined;
  coreId: string | undefined;
  threadSiblingsList: string | undefined;
}

/** Everything the probe read, as text. */
export interface HostSources {
  cpuinfo: string | undefined;
  cpuOnline: string | undefined;
  /** One entry per CPU whose topology was read (the online ones). */
  cpuTopology: CpuTopologySource[];
  /** `undefined` when /sys/devices/system/node does not exist (kernel without NUMA). */
  nodes: Array<{ id: number; cpulist: string | undefined; meminfo: string | undefined }> | undefined;
  meminfo: string | undefined;
  /** One entry per directory of /sys/kernel/mm/hugepages; `undefined` when it does not exist. */
  hugepages: Array<{ dir: string; nrHugepages: string | undefined; freeHugepages: string | undefined }> | undefined;
  /** Loaded KVM modules (`kvm`, `kvm_*`) with the parameters read. */
  modules: Record<string, ModuleParams>;
  devKvm: { present: boolean; rw: boolean };
  devSev: { present: boolean; rw: boolean };
  /** Files that exist but could not be read ("<path>: <why>"). */
  readErrors: string[];
}

export function buildHostReport(src: HostSources): HostReport {
  const warnings = [...src.readErrors];
  const processors = src.cpuinfo === undefined ? undefined : parseCpuinfo(src.cpuinfo);
  if (src.cpuinfo === undefined) warnings.push(`${HOST_PATHS.cpuinfo}: missing`);
  else if (processors?.length === 0) warnings.push(`${HOST_PATHS.cpuinfo}: no processor entries`);
  const first = processors?.[0];
  const flags = first === undefined ? undefined : new Set(first.flags);

  const cpu = buildCpu(src, processors, flags, warnings);
  const memory = buildMemory(src, warnings);
  const kvmFacts = { flags, modules: src.modules, devKvm: src.devKvm, devSev: src.devSev };
  const kvm = assessKvm(kvmFacts, warnings);
  const confidential = assessConfidential(kvmFacts, warnings);
  return {
    schemaVersion: HOST_REPORT_SCHEMA_VERSION,
    cpu,
    memory,
    kvm,
    confidential,
    warnings: dropMissingWhenUnreadable(warnings),
  };
}

function vendorOf(vendorId: string | undefined): CpuReport['vendor'] {
  if (vendorId === undefined) return null;
  if (vendorId === 'GenuineIntel') return 'intel';
  if (vendorId === 'AuthenticAMD') return 'amd';
  return 'other';
}

function buildCpu(
  src: HostSources,
  processors: CpuinfoProcessor[] | undefined,
  flags: ReadonlySet<string> | undefined,
  warnings: string[],
): CpuReport {
  const first = processors?.[0];
  let online: number[] | undefined;
  if (src.cpuOnline === undefined) {
    warnings.push(`${HOST_PATHS.cpuOnline}: missing`);
  } else {
    online = parseCpuList(src.cpuOnline);
    if (online === undefined) warnings.push(`${HOST_PATHS.cpuOnline}: expected a CPU list such as 0-3,8-11, got ${JSON.stringify(src.cpuOnline.trim())}`);
  }
  if (online === undefined && processors !== undefined && processors.length > 0) {
    const numbers = processors.map((p) => p.processor);
    if (numbers.every((n): n is number => n !== undefined)) {
      online = [...new Set(numbers)].sort((a, b) => a - b);
      warnings.push(`online CPUs counted from the processor entries of ${HOST_PATHS.cpuinfo}`);
    }
  }

  return {
    vendorId: first?.vendorId ?? null,
    vendor: vendorOf(first?.vendorId),
    modelName: first?.modelName ?? null,
    virtualizationFlags: flags === undefined ? [] : (['vmx', 'svm'] as const).filter((f) => flags.has(f)),
    runningUnderHypervisor: flags?.has('hypervisor') ?? false,
    logicalCpus: online?.length ?? null,
    onlineCpus: online ?? [],
    topology: buildTopology(src, processors, online, warnings) ?? null,
    numaNodes: buildNuma(src, warnings),
  };
}

function buildTopology(
  src: HostSources,
  processors: CpuinfoProcessor[] | undefined,
  online: number[] | undefined,
  warnings: string[],
): CpuTopology | undefined {
  const onlineSet = online === undefined ? undefined : new Set(online);
  const sysfs = src.cpuTopology.filter((t) => onlineSet === undefined || onlineSet.has(t.cpu));
  const places: CpuPlace[] = [];
  let sysfsComplete = sysfs.length > 0 && (onlineSet === undefined || sysfs.length === onlineSet.size);
  for (const t of sysfs) {
    const base = `${HOST_PATHS.cpuDir}/cpu${t.cpu}/topology`;
    const packageId = parseInteger(t.physicalPackageId);
    const coreId = parseInteger(t.coreId);
    const threadSiblings = t.threadSiblingsList === undefined ? undefined : parseCpuList(t.threadSiblingsList);
    if (t.physicalPackageId === undefined) warnings.push(`${base}/physical_package_id: missing`);
    else if (packageId === undefined) warnings.push(`${base}/physical_package_id: expected an integer, got ${JSON.stringify(t.physicalPackageId.trim())}`);
    if (t.coreId !== undefined && coreId === undefined) warnings.push(`${base}/core_id: expected an integer, got ${JSON.stringify(t.coreId.trim())}`);
    if (t.threadSiblingsList !== undefined && threadSiblings === undefined)
      warnings.push(`${base}/thread_siblings_list: expected a CPU list, got ${JSON.stringify(t.threadSiblingsList.trim())}`);
    if (packageId === undefined || (coreId === undefined && threadSiblings === undefined)) {
      sysfsComplete = false;
      continue;
    }
    places.push({ cpu: t.cpu, packageId, coreId, threadSiblings });
  }
  if (sysfsComplete) {
    const topology = computeTopology(places, 'sysfs');
    if (topology !== undefined) return topology;
  }

  // Fall back to the `physical id` / `core id` lines of /proc/cpuinfo.
  const fromCpuinfo: CpuPlace[] = [];
  for (const p of processors ?? []) {
    if (p.processor === undefined || (onlineSet !== undefined && !onlineSet.has(p.processor))) continue;
    if (p.physicalId === undefined || p.coreId === undefined) {
      warnings.push(`CPU topology unknown: neither ${HOST_PATHS.cpuDir}/cpuN/topology nor the physical id/core id lines of ${HOST_PATHS.cpuinfo} place every CPU`);
      return undefined;
    }
    fromCpuinfo.push({ cpu: p.processor, packageId: p.physicalId, coreId: p.coreId, threadSiblings: undefined });
  }
  const topology = computeTopology(fromCpuinfo, 'cpuinfo');
  if (topology === undefined) {
    warnings.push(`CPU topology unknown: neither ${HOST_PATHS.cpuDir}/cpuN/topology nor ${HOST_PATHS.cpuinfo} place every CPU`);
  } else if (src.cpuTopology.length > 0 || sysfs.length > 0) {
    warnings.push(`CPU topology read from ${HOST_PATHS.cpuinfo}: the sysfs topology files are incomplete`);
  }
  return topology;
}

function buildNuma(src: HostSources, warnings: string[]): NumaNode[] {
  if (src.nodes === undefined) return [];
  return [...src.nodes]
    .sort((a, b) => a.id - b.id)
    .map((n) => {
      const base = `${HOST_PATHS.nodeDir}/node${n.id}`;
      let cpus: number[] | null = null;
      if (n.cpulist === undefined) warnings.push(`${base}/cpulist: missing`);
      else {
        cpus = parseCpuList(n.cpulist) ?? null;
        if (cpus === null) warnings.push(`${base}/cpulist: expected a CPU list such as 0-3,8-11, got ${JSON.stringify(n.cpulist.trim())}`);
      }
      let memTotalBytes: number | null = null;
      let memFreeBytes: number | null = null;
      if (n.meminfo === undefined) warnings.push(`${base}/meminfo: missing`);
      else {
        const { values } = parseMeminfo(n.meminfo);
        memTotalBytes = meminfoBytes(values, 'MemTotal') ?? null;
        memFreeBytes = meminfoBytes(values, 'MemFree') ?? null;
        if (memTotalBytes === null) warnings.push(`${base}/meminfo: no MemTotal line in kB`);
        if (memFreeBytes === null) warnings.push(`${base}/meminfo: no MemFree line in kB`);
      }
      return { id: n.id, cpus, memTotalBytes, memFreeBytes };
    });
}

function buildMemory(src: HostSources, warnings: string[]): MemoryReport {
  let totalBytes: number | null = null;
  let availableBytes: number | null = null;
  let defaultHugepageSizeBytes: number | null = null;
  if (src.meminfo === undefined) warnings.push(`${HOST_PATHS.meminfo}: missing`);
  else {
    const { values, unparsed } = parseMeminfo(src.meminfo);
    for (const line of unparsed) warnings.push(`${HOST_PATHS.meminfo}: unparsable line ${JSON.stringify(line)}`);
    totalBytes = meminfoBytes(values, 'MemTotal') ?? null;
    availableBytes = meminfoBytes(values, 'MemAvailable') ?? null;
    defaultHugepageSizeBytes = meminfoBytes(values, 'Hugepagesize') ?? null;
    if (totalBytes === null) warnings.push(`${HOST_PATHS.meminfo}: no MemTotal line in kB`);
    if (availableBytes === null) warnings.push(`${HOST_PATHS.meminfo}: no MemAvailable line in kB`);
  }

  const hugepages: HugepagePool[] = [];
  for (const h of src.hugepages ?? []) {
    const base = `${HOST_PATHS.hugepagesDir}/${h.dir}`;
    const pageSizeBytes = parseHugepageDirName(h.dir);
    if (pageSizeBytes === undefined) {
      warnings.push(`${base}: expected a directory named hugepages-<size>kB`);
      continue;
    }
    const count = (name: string, text: string | undefined): number | null => {
      if (text === undefined) {
        warnings.push(`${base}/${name}: missing`);
        return null;
      }
      const n = parseCount(text);
      if (n === undefined) warnings.push(`${base}/${name}: expected a whole number, got ${JSON.stringify(text.trim())}`);
      return n ?? null;
    };
    hugepages.push({
      pageSizeBytes,
      total: count('nr_hugepages', h.nrHugepages),
      free: count('free_hugepages', h.freeHugepages),
    });
  }
  hugepages.sort((a, b) => a.pageSizeBytes - b.pageSizeBytes);
  return { totalBytes, availableBytes, defaultHugepageSizeBytes, hugepages };
}

/** Sorted, unique; "<path>: missing" is dropped when "<path>: cannot read (…)" already says more. */
function dropMissingWhenUnreadable(warnings: string[]): string[] {
  const unreadable = new Set(warnings.filter((w) => / cannot read \(/.test(w)).map((w) => w.slice(0, w.indexOf(': cannot read ('))));
  return [...new Set(warnings)].filter((w) => !(w.endsWith(': missing') && unreadable.has(w.slice(0, -': missing'.length)))).sort();
}
