import { fileURLToPath } from 'node:url';
import { describe, expect, test } from 'vitest';
import { chooseAccel, probeHost } from '../../src/kvm-probe/index.ts';
import { fixtureReaderFromDir } from '../helpers/host-fixture.ts';
import type { HostReport } from '../../src/kvm-probe/index.ts';

const HOSTS = fileURLToPath(new URL('../fixtures/hosts/', import.meta.url));
const kB = (n: number): number => n * 1024;
const MiB2 = 2 * 1024 * 1024;
const GiB1 = 1024 * 1024 * 1024;
const range = (lo: number, hi: number): number[] => Array.from({ length: hi - lo + 1 }, (_, i) => lo + i);

function probe(name: string, denied: string[] = []): Promise<HostReport> {
  return probeHost(fixtureReaderFromDir(`${HOSTS}${name}`, { denied }));
}

const NO_INTEL_TDX = {
  available: false,
  evidence: ['no tdx_host_platform or tdx flag in /proc/cpuinfo', 'kvm_intel is not loaded'],
};

describe('Intel Xeon with VT-x, kvm_intel nested=Y, 2 sockets × 4 cores × 2 threads', () => {
  test('the whole report', async () => {
    const report = await probe('intel-vtx-2s');
    expect(report).toEqual({
      schemaVersion: 1,
      cpu: {
        vendorId: 'GenuineIntel',
        vendor: 'intel',
        modelName: 'Intel(R) Xeon(R) CPU E5-2623 v4 @ 2.60GHz',
        virtualizationFlags: ['vmx'],
        runningUnderHypervisor: false,
        logicalCpus: 16,
        onlineCpus: range(0, 15),
        topology: { sockets: 2, coresPerSocket: 4, threadsPerCore: 2, cores: 8, uniform: true, source: 'sysfs' },
        numaNodes: [
          { id: 0, cpus: [0, 1, 2, 3, 8, 9, 10, 11], memTotalBytes: kB(65861528), memFreeBytes: kB(48211932) },
          { id: 1, cpus: [4, 5, 6, 7, 12, 13, 14, 15], memTotalBytes: kB(66058300), memFreeBytes: kB(51400120) },
        ],
      },
      memory: {
        totalBytes: kB(131919828),
        availableBytes: kB(104881220),
        defaultHugepageSizeBytes: MiB2,
        hugepages: [
          { pageSizeBytes: MiB2, total: 2048, free: 1536 },
          { pageSizeBytes: GiB1, total: 8, free: 6 },
        ],
      },
      kvm: {
        device: { path: '/dev/kvm', present: true, accessible: true },
        modules: ['kvm', 'kvm_intel'],
        provider: 'kvm_intel',
        nested: true,
        usable: true,
        reason: '/dev/kvm is read-write, kvm_intel is loaded and the CPU has vmx',
        evidence: [
          '/dev/kvm exists',
          'loaded modules: kvm, kvm_intel',
          '/dev/kvm is read-write for this user',
          'vmx flag in /proc/cpuinfo',
          'kvm_intel nested=Y',
        ],
      },
      confidential: {
        sev: {
          available: false,
          evidence: ['no sev flag in /proc/cpuinfo', 'kvm_amd is not loaded', '/dev/sev is missing'],
        },
        sevEs: {
          available: false,
          evidence: ['no sev_es flag in /proc/cpuinfo', 'kvm_amd is not loaded', '/dev/sev is missing'],
        },
        sevSnp: {
          available: false,
          evidence: ['no sev_snp flag in /proc/cpuinfo', 'kvm_amd is not loaded', '/dev/sev is missing'],
        },
        tdx: {
          available: false,
          evidence: ['no tdx_host_platform or tdx flag in /proc/cpuinfo', '/sys/module/kvm_intel/parameters/tdx is missing'],
        },
      },
      warnings: [],
    } satisfies HostReport);
  });

  test('accel auto picks kvm', async () => {
    expect(chooseAccel(await probe('intel-vtx-2s'))).toEqual({
      accel: 'kvm',
      reason: 'KVM is usable: /dev/kvm is read-write, kvm_intel is loaded and the CPU has vmx',
    });
  });

  test('/dev/kvm not read-write for this user: not usable, tcg, says how to fix', async () => {
    const report = await probe('intel-vtx-2s', ['/dev/kvm']);
    expect(report.kvm.device).toEqual({ path: '/dev/kvm', present: true, accessible: false });
    expect(report.kvm.usable).toBe(false);
    expect(chooseAccel(report)).toEqual({
      accel: 'tcg',
      reason: 'KVM is not usable: /dev/kvm is not read-write for this user (join the group that owns it, usually kvm)',
    });
  });

  test('the report survives JSON unchanged (printed as-is by goshipctl host --json)', async () => {
    const report = await probe('intel-vtx-2s');
    expect(JSON.parse(JSON.stringify(report))).toEqual(report);
  });
});

describe('AMD EPYC (Milan) with SEV, SEV-ES and SEV-SNP enabled', () => {
  test('the whole report', async () => {
    const sevDev = '/dev/sev is read-write';
    expect(await probe('amd-epyc-sev-snp')).toEqual({
      schemaVersion: 1,
      cpu: {
        vendorId: 'AuthenticAMD',
        vendor: 'amd',
        modelName: 'AMD EPYC 72F3 8-Core Processor',
        virtualizationFlags: ['svm'],
        runningUnderHypervisor: false,
        logicalCpus: 16,
        onlineCpus: range(0, 15),
        // core_id is sparse (0, 8, …, 56: one core per CCD); cores are counted by thread siblings
        topology: { sockets: 1, coresPerSocket: 8, threadsPerCore: 2, cores: 8, uniform: true, source: 'sysfs' },
        numaNodes: [{ id: 0, cpus: range(0, 15), memTotalBytes: kB(263842124), memFreeBytes: kB(229412008) }],
      },
      memory: {
        totalBytes: kB(263842124),
        availableBytes: kB(240118436),
        defaultHugepageSizeBytes: MiB2,
        hugepages: [
          { pageSizeBytes: MiB2, total: 0, free: 0 },
          { pageSizeBytes: GiB1, total: 16, free: 16 },
        ],
      },
      kvm: {
        device: { path: '/dev/kvm', present: true, accessible: true },
        modules: ['kvm', 'kvm_amd'],
        provider: 'kvm_amd',
        nested: true,
        usable: true,
        reason: '/dev/kvm is read-write, kvm_amd is loaded and the CPU has svm',
        evidence: [
          '/dev/kvm exists',
          'loaded modules: kvm, kvm_amd',
          '/dev/kvm is read-write for this user',
          'svm flag in /proc/cpuinfo',
          'kvm_amd nested=1',
        ],
      },
      confidential: {
        sev: {
          available: true,
          evidence: ['sev flag in /proc/cpuinfo', '/sys/module/kvm_amd/parameters/sev = Y', sevDev],
        },
        sevEs: {
          available: true,
          evidence: ['sev_es flag in /proc/cpuinfo', '/sys/module/kvm_amd/parameters/sev_es = Y', sevDev],
        },
        sevSnp: {
          available: true,
          evidence: ['sev_snp flag in /proc/cpuinfo', '/sys/module/kvm_amd/parameters/sev_snp = Y', sevDev],
        },
        tdx: NO_INTEL_TDX,
      },
      warnings: [],
    } satisfies HostReport);
  });

  test('accel auto picks kvm', async () => {
    expect(chooseAccel(await probe('amd-epyc-sev-snp'))).toEqual({
      accel: 'kvm',
      reason: 'KVM is usable: /dev/kvm is read-write, kvm_amd is loaded and the CPU has svm',
    });
  });

  test('/dev/sev not read-write: SEV is not available, and the evidence says why', async () => {
    const report = await probe('amd-epyc-sev-snp', ['/dev/sev']);
    expect(report.confidential.sevSnp).toEqual({
      available: false,
      evidence: [
        'sev_snp flag in /proc/cpuinfo',
        '/sys/module/kvm_amd/parameters/sev_snp = Y',
        '/dev/sev exists but is not read-write for this user',
      ],
    });
  });
});

describe('this PVM host (values copied from the real machine)', () => {
  test('the whole report', async () => {
    const none = (flag: string): { available: false; evidence: string[] } => ({
      available: false,
      evidence: [`no ${flag} flag in /proc/cpuinfo`, 'kvm_amd is not loaded', '/dev/sev is missing'],
    });
    expect(await probe('pvm-host')).toEqual({
      schemaVersion: 1,
      cpu: {
        vendorId: 'GenuineIntel',
        vendor: 'intel',
        modelName: 'Intel(R) Xeon(R) Processor',
        virtualizationFlags: [],
        runningUnderHypervisor: true,
        logicalCpus: 2,
        onlineCpus: [0, 1],
        topology: { sockets: 1, coresPerSocket: 2, threadsPerCore: 1, cores: 2, uniform: true, source: 'sysfs' },
        numaNodes: [{ id: 0, cpus: [0, 1], memTotalBytes: kB(5334812), memFreeBytes: kB(3197108) }],
      },
      memory: {
        totalBytes: kB(24683652),
        availableBytes: kB(24003656),
        defaultHugepageSizeBytes: MiB2,
        hugepages: [
          { pageSizeBytes: MiB2, total: 0, free: 0 },
          { pageSizeBytes: GiB1, total: 0, free: 0 },
        ],
      },
      kvm: {
        device: { path: '/dev/kvm', present: true, accessible: true },
        modules: ['kvm', 'kvm_pvm'],
        provider: 'kvm_pvm',
        nested: null,
        usable: false,
        reason:
          '/dev/kvm is provided by kvm_pvm, which runs only PVM-aware guests; a normal guest hangs under it; ' +
          'no vmx or svm flag in /proc/cpuinfo',
        evidence: [
          '/dev/kvm exists',
          'loaded modules: kvm, kvm_pvm',
          '/dev/kvm is read-write for this user',
          'no vmx or svm flag in /proc/cpuinfo',
          'kvm_pvm has no nested parameter',
        ],
      },
      confidential: { sev: none('sev'), sevEs: none('sev_es'), sevSnp: none('sev_snp'), tdx: NO_INTEL_TDX },
      warnings: [],
    } satisfies HostReport);
  });

  test('accel auto picks tcg and names kvm_pvm, although /dev/kvm opens read-write', async () => {
    expect(chooseAccel(await probe('pvm-host'))).toEqual({
      accel: 'tcg',
      reason:
        'KVM is not usable: /dev/kvm is provided by kvm_pvm, which runs only PVM-aware guests; ' +
        'a normal guest hangs under it; no vmx or svm flag in /proc/cpuinfo',
    });
  });
});

describe('a cloud guest: no /dev/kvm, no kvm module, no NUMA in sysfs', () => {
  test('the whole report', async () => {
    const none = (flag: string): { available: false; evidence: string[] } => ({
      available: false,
      evidence: [`no ${flag} flag in /proc/cpuinfo`, 'kvm_amd is not loaded', '/dev/sev is missing'],
    });
    expect(await probe('cloud-guest-no-kvm')).toEqual({
      schemaVersion: 1,
      cpu: {
        vendorId: 'AuthenticAMD',
        vendor: 'amd',
        modelName: 'AMD EPYC 7B13',
        virtualizationFlags: [],
        runningUnderHypervisor: true,
        logicalCpus: 4,
        onlineCpus: [0, 1, 2, 3],
        topology: { sockets: 1, coresPerSocket: 2, threadsPerCore: 2, cores: 2, uniform: true, source: 'sysfs' },
        numaNodes: [],
      },
      memory: {
        totalBytes: kB(16393292),
        availableBytes: kB(15102244),
        defaultHugepageSizeBytes: MiB2,
        hugepages: [{ pageSizeBytes: MiB2, total: 0, free: 0 }],
      },
      kvm: {
        device: { path: '/dev/kvm', present: false, accessible: false },
        modules: [],
        provider: null,
        nested: null,
        usable: false,
        reason: '/dev/kvm does not exist; neither kvm_intel nor kvm_amd is loaded; no vmx or svm flag in /proc/cpuinfo',
        evidence: ['no kvm module loaded', 'no vmx or svm flag in /proc/cpuinfo'],
      },
      confidential: { sev: none('sev'), sevEs: none('sev_es'), sevSnp: none('sev_snp'), tdx: NO_INTEL_TDX },
      warnings: [],
    } satisfies HostReport);
  });

  test('accel auto picks tcg', async () => {
    expect(chooseAccel(await probe('cloud-guest-no-kvm'))).toEqual({
      accel: 'tcg',
      reason:
        'KVM is not usable: /dev/kvm does not exist; neither kvm_intel nor kvm_amd is loaded; no vmx or svm flag in /proc/cpuinfo',
    });
  });
});
