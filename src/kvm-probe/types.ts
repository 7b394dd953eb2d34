/**
 * The host report and the reader the probe reads the host through.
 *
 * The report is printed as-is by `goshipctl host --json`, so its shape is a
 * contract: every key is always present (an unknown value is `null`, never a
 * missing key), arrays are sorted, and `schemaVersion` changes when a field
 * changes meaning or disappears.
 */

/** Bumped when a field of {@link HostReport} changes meaning or is removed. */
export const HOST_REPORT_SCHEMA_VERSION = 1;

/**
 * How the probe reads the host. The real one is {@link realHostReader} in
 * `probe-io.ts`; tests hand in a fixture reader.
 */
export interface HostReader {
  /** The file's text, or `undefined` when it does not exist. Other failures throw. */
  readFile(path: string): Promise<string | undefined>;
  /** The names in a directory (unsorted), or `undefined` when it does not exist. Other failures throw. */
  readDir(path: string): Promise<string[] | undefined>;
  /**
   * `'exists'`: the path exists (any file type, including character devices).
   * `'rw'`: this process may open it for reading and writing.
   */
  access(path: string, mode: AccessMode): Promise<boolean>;
}

export type AccessMode = 'exists' | 'rw';

/** A yes/no capability with what the probe saw, phrased for a person. */
export interface CapabilityFact {
  available: boolean;
  /** Each thing seen or missing ("sev flag in /proc/cpuinfo", "/dev/sev is missing"). */
  evidence: string[];
}

/** How the logical CPUs are arranged. */
export interface CpuTopology {
  sockets: number;
  /** `null` when the sockets do not all have the same number of cores. */
  coresPerSocket: number | null;
  /** The largest number of hardware threads of one core (hybrid CPUs mix 1 and 2). */
  threadsPerCore: number;
  /** Total physical cores (distinct `thread_siblings_list` sets). */
  cores: number;
  /** True when every socket has the same cores and every core the same threads. */
  uniform: boolean;
  /** Where it was read: sysfs topology files, or the `physical id`/`core id` lines of /proc/cpuinfo. */
  source: 'sysfs' | 'cpuinfo';
}

export interface NumaNode {
  /** N of `/sys/devices/system/node/nodeN`. */
  id: number;
  /** The node's CPUs, sorted (from `nodeN/cpulist`); `null` when unreadable. */
  cpus: number[] | null;
  /** `Node N MemTotal` of `nodeN/meminfo`, in bytes. */
  memTotalBytes: number | null;
  /** `Node N MemFree` of `nodeN/meminfo`, in bytes. */
  memFreeBytes: number | null;
}

export interface CpuReport {
  /** `vendor_id` of /proc/cpuinfo: `GenuineIntel`, `AuthenticAMD`, … */
  vendorId: string | null;
  vendor: 'intel' | 'amd' | 'other' | null;
  /** `model name` of /proc/cpuinfo. */
  modelName: string | null;
  /** The hardware virtualization flags present, of `vmx` and `svm`. */
  virtualizationFlags: Array<'vmx' | 'svm'>;
  /** The `hypervisor` flag: this host is itself a virtual machine. */
  runningUnderHypervisor: boolean;
  /** Online logical CPUs (from `/sys/devices/system/cpu/online`, else the processors of /proc/cpuinfo). */
  logicalCpus: number | null;
  /** The online CPU numbers, sorted. */
  onlineCpus: number[];
  topology: CpuTopology | null;
  /** NUMA nodes sorted by id; empty when the kernel exposes none. */
  numaNodes: NumaNode[];
}

export interface HugepagePool {
  /** Page size in bytes (from the `hugepages-<N>kB` directory name). */
  pageSizeBytes: number;
  /** `nr_hugepages`: pages reserved in the pool. */
  total: number | null;
  /** `free_hugepages`: pages not in use. */
  free: number | null;
}

export interface MemoryReport {
  /** `MemTotal` of /proc/meminfo, in bytes. */
  totalBytes: number | null;
  /** `MemAvailable` of /proc/meminfo, in bytes. */
  availableBytes: number | null;
  /** `Hugepagesize` of /proc/meminfo: the default huge page size, in bytes. */
  defaultHugepageSizeBytes: number | null;
  /** One entry per `/sys/kernel/mm/hugepages/hugepages-*`, smallest page first. */
  hugepages: HugepagePool[];
}

export interface KvmReport {
  device: {
    path: '/dev/kvm';
    present: boolean;
    /** Open for reading and writing is allowed to this user. */
    accessible: boolean;
  };
  /** Loaded KVM modules seen in /sys/module (`kvm`, `kvm_intel`, `kvm_amd`, `kvm_pvm`, …), sorted. */
  modules: string[];
  /** The vendor module behind /dev/kvm (`kvm_intel`, `kvm_amd`, `kvm_pvm`, …); `null` when none is loaded. */
  provider: string | null;
  /** The provider's `nested` parameter; `null` when absent or unparsable. */
  nested: boolean | null;
  /** Whether a normal (unmodified) guest can run under `-accel kvm`. */
  usable: boolean;
  /** Why, in one line: every failed condition, or the conditions met. */
  reason: string;
  /** Each condition checked, met or not. */
  evidence: string[];
}

export interface ConfidentialReport {
  /** AMD SEV. */
  sev: CapabilityFact;
  /** AMD SEV-ES. */
  sevEs: CapabilityFact;
  /** AMD SEV-SNP. */
  sevSnp: CapabilityFact;
  /** Intel TDX. */
  tdx: CapabilityFact;
}

export interface HostReport {
  schemaVersion: typeof HOST_REPORT_SCHEMA_VERSION;
  cpu: CpuReport;
  memory: MemoryReport;
  kvm: KvmReport;
  confidential: ConfidentialReport;
  /**
   * What could not be read or parsed ("<path>: <why>"), sorted. A value named
   * here is `null` in the report; nothing is dropped silently.
   */
  warnings: string[];
}

/** What `accel: auto` resolves to, and why. */
export interface AccelChoice {
  accel: 'kvm' | 'tcg';
  reason: string;
}
