/**
 * The host: the probe's report (and the facts a VM spec is validated
 * against), and QEMU's version, as `--version` prints it and as a live QEMU
 * reports it over QMP (which also proves QMP works on this host).
 */
import { readFile } from 'node:fs/promises';
import { cpus, totalmem } from 'node:os';
import { chooseAccel, probeHost, type AccelChoice, type HostReport } from '../kvm-probe/index.ts';
import { QEMU_BINARY, readQemuVersion, startBareQemu, type HostFacts } from '../qemu/index.ts';
import { QmpClient } from '../qmp/index.ts';

/** Pure: HostReport → HostFacts (os fallbacks only where the probe could not read a value). */
export function factsFromReport(report: HostReport, fallback = { cpuCount: cpus().length, memTotalBytes: totalmem() }): HostFacts {
  const accel = chooseAccel(report);
  return {
    cpuCount: report.cpu.logicalCpus ?? fallback.cpuCount,
    memTotalBytes: report.memory.totalBytes ?? fallback.memTotalBytes,
    // The probe's own reason: the spec's accelerator message adds "KVM is (not) usable" itself.
    kvm: { usable: accel.accel === 'kvm', reason: report.kvm.reason },
    confidential: report.confidential,
  };
}

/** The lowest port an unprivileged process may bind here (QEMU never runs privileged), when the kernel says. */
async function unprivilegedPortStart(): Promise<number | undefined> {
  const text = await readFile('/proc/sys/net/ipv4/ip_unprivileged_port_start', 'utf8').catch(() => undefined);
  const n = Number(text?.trim());
  return text !== undefined && Number.isInteger(n) ? n : undefined;
}

export async function hostFacts(): Promise<HostFacts> {
  const [report, start] = await Promise.all([probeHost(), unprivilegedPortStart()]);
  return { ...factsFromReport(report), ...(start !== undefined ? { unprivilegedPortStart: start } : {}) };
}

export interface QemuVersionReport {
  binary: string;
  /** From `--version`. */
  version: string;
  package: string | undefined;
  /** From QMP `query-version` of a live QEMU. */
  qmp: { version: string; package: string };
}

/** `--version`, then `query-version` over QMP of a bare QEMU (`-machine none -S`). */
export async function qemuVersion(binary = QEMU_BINARY): Promise<QemuVersionReport> {
  const text = await readQemuVersion(binary);
  const bare = await startBareQemu(binary);
  try {
    const qmp = await QmpClient.connect(bare.socket, { timeoutMs: 5000 });
    try {
      const v = await qmp.queryVersion();
      const q = v.qemu;
      return { binary, version: text.version, package: text.package, qmp: { version: `${q.major}.${q.minor}.${q.micro}`, package: v.package.trim() } };
    } finally {
      await qmp.close();
    }
  } finally {
    await bare.dispose();
  }
}

export interface VersionReport {
  goship: string;
  /** The agent protocol (and so monitor and node) version this GoShip speaks. */
  protocol: number;
  node: string;
  qemu: QemuVersionReport;
  accel: AccelChoice;
  /** Where this GoShip keeps its state and its sockets (a node's `project list` is read from there). */
  paths: { home: string; run: string };
}

