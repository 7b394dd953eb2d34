import { fileURLToPath } from 'node:url';
import { expect, test } from 'vitest';
import { formatHostReport, probeHost } from '../../src/kvm-probe/index.ts';
import { fixtureReaderFromDir, fixtureReaderFromMap } from '../helpers/host-fixture.ts';

const HOSTS = fileURLToPath(new URL('../fixtures/hosts/', import.meta.url));

test('the PVM host, as a person reads it', async () => {
  const report = await probeHost(fixtureReaderFromDir(`${HOSTS}pvm-host`));
  expect(formatHostReport(report).split('\n')).toEqual([
    'CPU        Intel(R) Xeon(R) Processor (GenuineIntel)',
    '           2 logical CPUs (0-1): 1 socket × 2 cores × 1 thread',
    '           virtualization flags: none (no vmx or svm); running under a hypervisor',
    'NUMA       node0: CPUs 0-1, 5.1 GiB total, 3.0 GiB free',
    'Memory     23.5 GiB total, 22.9 GiB available',
    'Hugepages  2 MiB pages: 0 total, 0 free (default size)',
    '           1 GiB pages: 0 total, 0 free',
    'KVM        not usable: /dev/kvm is provided by kvm_pvm, which runs only PVM-aware guests; a normal guest hangs under it; no vmx or svm flag in /proc/cpuinfo',
    '           /dev/kvm present, read-write; provider: kvm_pvm; modules: kvm, kvm_pvm; nested: unknown',
    'SEV        no (no sev flag in /proc/cpuinfo; kvm_amd is not loaded; /dev/sev is missing)',
    'SEV-ES     no (no sev_es flag in /proc/cpuinfo; kvm_amd is not loaded; /dev/sev is missing)',
    'SEV-SNP    no (no sev_snp flag in /proc/cpuinfo; kvm_amd is not loaded; /dev/sev is missing)',
    'TDX        no (no tdx_host_platform or tdx flag in /proc/cpuinfo; kvm_intel is not loaded)',
    'Accel      auto → tcg',
  ]);
});

test('the Intel host: sockets, NUMA nodes, both hugepage sizes, nested on', async () => {
  const text = formatHostReport(await probeHost(fixtureReaderFromDir(`${HOSTS}intel-vtx-2s`)));
  expect(text.split('\n').slice(0, 10)).toEqual([
    'CPU        Intel(R) Xeon(R) CPU E5-2623 v4 @ 2.60GHz (GenuineIntel)',
    '           16 logical CPUs (0-15): 2 sockets × 4 cores × 2 threads',
    '           virtualization flags: vmx',
    'NUMA       node0: CPUs 0-3,8-11, 62.8 GiB total, 46.0 GiB free',
    '           node1: CPUs 4-7,12-15, 63.0 GiB total, 49.0 GiB free',
    'Memory     125.8 GiB total, 100.0 GiB available',
    'Hugepages  2 MiB pages: 2048 total, 1536 free (default size)',
    '           1 GiB pages: 8 total, 6 free',
    'KVM        usable: /dev/kvm is read-write, kvm_intel is loaded and the CPU has vmx',
    '           /dev/kvm present, read-write; provider: kvm_intel; modules: kvm, kvm_intel; nested: on',
  ]);
  expect(text).not.toMatch(/\x1b\[/);
});

test('an empty host: unknowns are spelled out and warnings listed last', async () => {
  const lines = formatHostReport(await probeHost(fixtureReaderFromMap({}))).split('\n');
  expect(lines.slice(0, 7)).toEqual([
    'CPU        unknown model',
    '           logical CPUs unknown: topology unknown',
    '           virtualization flags: none (no vmx or svm)',
    'NUMA       no NUMA nodes exposed',
    'Memory     unknown total, unknown available',
    'Hugepages  none',
    'KVM        not usable: /dev/kvm does not exist; neither kvm_intel nor kvm_amd is loaded; the CPU flags could not be read from /proc/cpuinfo',
  ]);
  expect(lines.slice(-5)).toEqual([
    'Warnings   /proc/cpuinfo: missing',
    '           /proc/meminfo: missing',
    '           /sys/devices/system/cpu/online: missing',
    '           /sys/module: missing, so no KVM module can be seen',
    '           CPU topology unknown: neither /sys/devices/system/cpu/cpuN/topology nor /proc/cpuinfo place every CPU',
  ]);
});
