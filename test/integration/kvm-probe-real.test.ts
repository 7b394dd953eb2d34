/**
 * The probe on the real machine. Asserts what holds on any Linux host, and
 * the kvm_pvm verdict where that module is loaded (as on the build host).
 */
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { cpus } from 'node:os';
import { describe, expect, test } from 'vitest';
import { chooseAccel, formatHostReport, probeHost } from '../../src/kvm-probe/index.ts';

const report = await probeHost();

function meminfoKiB(key: string): number {
  const m = new RegExp(`^${key}:\\s+(\\d+) kB$`, 'm').exec(readFileSync('/proc/meminfo', 'utf8'));
  if (!m) throw new Error(`no ${key} in /proc/meminfo`);
  return Number(m[1]);
}

describe('probeHost() on this machine', () => {
  test('logical CPUs equal os.cpus().length, and the topology multiplies out', () => {
    expect(report.cpu.logicalCpus).toBe(cpus().length);
    const t = report.cpu.topology;
    expect(t).not.toBeNull();
    if (t?.uniform) expect(t.sockets * (t.coresPerSocket ?? 0) * t.threadsPerCore).toBe(cpus().length);
  });

  test('memory total is MemTotal of /proc/meminfo', () => {
    expect(report.memory.totalBytes).toBe(meminfoKiB('MemTotal') * 1024);
  });

  test('every hugepage size of sysfs is reported', () => {
    const sizes = existsSync('/sys/kernel/mm/hugepages')
      ? readdirSync('/sys/kernel/mm/hugepages').map((d) => Number(/^hugepages-(\d+)kB$/.exec(d)?.[1]) * 1024)
      : [];
    expect(report.memory.hugepages.map((h) => h.pageSizeBytes)).toEqual(sizes.sort((a, b) => a - b));
  });

  test('/dev/kvm presence matches the filesystem, and the verdict agrees with chooseAccel', () => {
    expect(report.kvm.device.present).toBe(existsSync('/dev/kvm'));
    expect(chooseAccel(report).accel).toBe(report.kvm.usable ? 'kvm' : 'tcg');
  });

  test('the report is JSON as-is and the summary renders', () => {
    expect(JSON.parse(JSON.stringify(report))).toEqual(report);
    expect(report.schemaVersion).toBe(1);
    expect(formatHostReport(report)).toMatch(/^CPU {8}/);
  });

  test('the verdict follows the rule; with kvm_pvm loaded it is "not usable", named, and auto picks tcg', () => {
    if (existsSync('/sys/module/kvm_pvm')) {
      expect(report.kvm.provider).toBe('kvm_pvm');
      expect(report.kvm.usable).toBe(false);
      expect(report.kvm.reason).toContain('/dev/kvm is provided by kvm_pvm, which runs only PVM-aware guests');
      const accel = chooseAccel(report);
      expect(accel.accel).toBe('tcg');
      expect(accel.reason).toContain('kvm_pvm');
    } else {
      const vendorModule = existsSync('/sys/module/kvm_intel') || existsSync('/sys/module/kvm_amd');
      const flags = /^flags\s*:.* (vmx|svm)( |$)/m.test(readFileSync('/proc/cpuinfo', 'utf8'));
      expect(report.kvm.usable).toBe(report.kvm.device.accessible && vendorModule && flags);
    }
  });
});

