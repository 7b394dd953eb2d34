/** The host capability probe: what this host can do, and which accelerator `auto` picks. */
export { probeHost } from './probe.ts';
export { chooseAccel } from './accel.ts';
export { formatHostReport, formatBytes, formatCpuList } from './format.ts';
export { realHostReader, collectHostSources } from './probe-io.ts';
export { buildHostReport, HOST_PATHS } from './report.ts';
export type { HostSources, CpuTopologySource } from './report.ts';
export { HOST_REPORT_SCHEMA_VERSION } from './types.ts';
export type {
  AccelChoice,
  AccessMode,
  CapabilityFact,
  ConfidentialReport,
  CpuReport,
  CpuTopology,
  HostReader,
  HostReport,
  HugepagePool,
  KvmReport,
  MemoryReport,
  NumaNode,
} from './types.ts';
