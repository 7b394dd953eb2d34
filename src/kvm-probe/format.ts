/** The host report as text for a person (pure; no colour: the CLI adds it). */
import { chooseAccel } from './accel.ts';
import type { CapabilityFact, CpuTopology, HostReport } from './types.ts';

const LABEL_WIDTH = 11;

/** `[0,1,2,3,8]` → `0-3,8` (the kernel's list format). */
export function formatCpuList(cpus: readonly number[]): string {
  const sorted = [...new Set(cpus)].sort((a, b) => a - b);
  const parts: string[] = [];
  for (let i = 0; i < sorted.length; ) {
    let j = i;
    while (j + 1 < sorted.length && sorted[j + 1] === (sorted[j] as number) + 1) j++;
    parts.push(i === j ? `${sorted[i]}` : `${sorted[i]}-${sorted[j]}`);
    i = j + 1;
  }
  return parts.join(',');
}

/** Bytes in binary units, one decimal when not whole: `2 MiB`, `23.5 GiB`. */
export function formatBytes(bytes: number | null): string {
  if (bytes === null) return 'unknown';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  let v = bytes;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  const text = Number.isInteger(v) ? String(v) : v.toFixed(1);
  return `${text} ${units[u]}`;
}

function plural(n: number, word: string): string {
  return `${n} ${word}${n === 1 ? '' : 's'}`;
}

function formatTopology(t: CpuTopology | null): string {
  if (t === null) return 'topology unknown';
  const cores = t.coresPerSocket === null ? `${t.cores} cores in all (uneven)` : plural(t.coresPerSocket, 'core');
  const threads = t.uniform ? plural(t.threadsPerCore, 'thread') : `up to ${plural(t.threadsPerCore, 'thread')}`;
  return `${plural(t.sockets, 'socket')} × ${cores} × ${threads}`;
}

function formatFact(f: CapabilityFact): string {
  return `${f.available ? 'yes' : 'no'} (${f.evidence.join('; ')})`;
}

export function formatHostReport(report: HostReport): string {
  const lines: string[] = [];
  const row = (label: string, ...values: string[]): void => {
    values.forEach((v, i) => lines.push(`${(i === 0 ? label : '').padEnd(LABEL_WIDTH)}${v}`));
  };
  const { cpu, memory, kvm, confidential } = report;

  const model = cpu.modelName ?? 'unknown model';
  const cpuCount =
    cpu.logicalCpus === null ? 'logical CPUs unknown' : `${plural(cpu.logicalCpus, 'logical CPU')} (${formatCpuList(cpu.onlineCpus)})`;
  const virt = cpu.virtualizationFlags.length > 0 ? cpu.virtualizationFlags.join(', ') : 'none (no vmx or svm)';
  row(
    'CPU',
    cpu.vendorId === null ? model : `${model} (${cpu.vendorId})`,
    `${cpuCount}: ${formatTopology(cpu.topology)}`,
    `virtualization flags: ${virt}${cpu.runningUnderHypervisor ? '; running under a hypervisor' : ''}`,
  );

  row(
    'NUMA',
    ...(cpu.numaNodes.length === 0
      ? ['no NUMA nodes exposed']
      : cpu.numaNodes.map(
          (n) =>
            `node${n.id}: CPUs ${n.cpus === null ? 'unknown' : n.cpus.length === 0 ? 'none' : formatCpuList(n.cpus)}, ` +
            `${formatBytes(n.memTotalBytes)} total, ${formatBytes(n.memFreeBytes)} free`,
        )),
  );

  row('Memory', `${formatBytes(memory.totalBytes)} total, ${formatBytes(memory.availableBytes)} available`);
  row(
    'Hugepages',
    ...(memory.hugepages.length === 0
      ? ['none']
      : memory.hugepages.map(
          (h) =>
            `${formatBytes(h.pageSizeBytes)} pages: ${h.total ?? 'unknown'} total, ${h.free ?? 'unknown'} free` +
            (h.pageSizeBytes === memory.defaultHugepageSizeBytes ? ' (default size)' : ''),
        )),
  );

  const device = kvm.device.present ? (kvm.device.accessible ? 'present, read-write' : 'present, not read-write') : 'missing';
  const nested = kvm.nested === null ? 'unknown' : kvm.nested ? 'on' : 'off';
  row(
    'KVM',
    `${kvm.usable ? 'usable' : 'not usable'}: ${kvm.reason}`,
    `/dev/kvm ${device}; provider: ${kvm.provider ?? 'none'}; modules: ${kvm.modules.length > 0 ? kvm.modules.join(', ') : 'none'}; nested: ${nested}`,
  );
  row('SEV', formatFact(confidential.sev));
  row('SEV-ES', formatFact(confidential.sevEs));
  row('SEV-SNP', formatFact(confidential.sevSnp));
  row('TDX', formatFact(confidential.tdx));
  const accel = chooseAccel(report);
  row('Accel', `auto → ${accel.accel}`);
  if (report.warnings.length > 0) row('Warnings', ...report.warnings);
  return lines.join('\n');
}
