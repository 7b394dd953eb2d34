/**
 * Host facts for spec validation. Placeholder until the kvm-probe lands:
 * replaced by a mapping of the probe's report.
 */
import { cpus, totalmem } from 'node:os';
import type { HostFacts } from '../qemu/index.ts';

export async function hostFacts(): Promise<HostFacts> {
  const none = { available: false, evidence: ['not probed'] };
  return {
    cpuCount: cpus().length,
    memTotalBytes: totalmem(),
    kvm: { usable: false, reason: 'not probed' },
    confidential: { sev: none, sevEs: none, sevSnp: none, tdx: none },
  };
}
