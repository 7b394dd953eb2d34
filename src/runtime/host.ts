/** The host probe's report, reduced to the facts a VM spec is validated against. */
import { cpus, totalmem } from 'node:os';
import { chooseAccel, probeHost, type HostReport } from '../kvm-probe/index.ts';
import type { HostFacts } from '../qemu/index.ts';

/** Pure: HostReport → HostFacts (os fallbacks only where the probe could not read a value). */
export function factsFromReport(report: HostReport, fallback = { cpuCount: cpus().length, memTotalBytes: totalmem() }): HostFacts {
  const accel = chooseAccel(report);
  return {
    cpuCount: report.cpu.logicalCpus ?? fallback.cpuCount,
    memTotalBytes: report.memory.totalBytes ?? fallback.memTotalBytes,
    kvm: { usable: accel.accel === 'kvm', reason: accel.reason },
    confidential: report.confidential,
  };
}

export async function hostFacts(): Promise<HostFacts> {
  return factsFromReport(await probeHost());
}
