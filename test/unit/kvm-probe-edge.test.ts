import { describe, expect, test } from 'vitest';
import { chooseAccel, probeHost } from '../../src/kvm-probe/index.ts';
import type { HostReader } from '../../src/kvm-probe/index.ts';
import { fixtureReaderFromMap } from '../helpers/host-fixture.ts';

/** A small Intel host as a path → text map; each test changes a piece. */
function intelHost(over: Record<string, string | null> = {}): Record<string, string> {
  const cpu = (n: number, core: number): string =>
    `processor\t: ${n}\nvendor_id\t: GenuineIntel\nmodel name\t: Test CPU\nphysical id\t: 0\ncore id\t\t: ${core}\nflags\t\t: fpu vmx ht\n`;
  const files: Record<string, string | null> = {
    '/proc/cpuinfo': [cpu(0, 0), cpu(1, 0), cpu(2, 1), cpu(3, 1)].join('\n'),
    '/proc/meminfo': 'MemTotal:        8000000 kB\nMemAvailable:    6000000 kB\nHugepagesize:       2048 kB\n',
    '/sys/devices/system/cpu/online': '0-3\n',
    '/sys/devices/system/cpu/cpu0/topology/physical_package_id': '0\n',
    '/sys/devices/system/cpu/cpu0/topology/core_id': '0\n',
    '/sys/devices/system/cpu/cpu0/topology/thread_siblings_list': '0-1\n',
    '/sys/devices/system/cpu/cpu1/topology/physical_package_id': '0\n',
    '/sys/devices/system/cpu/cpu1/topology/core_id': '0\n',
    '/sys/devices/system/cpu/cpu1/topology/thread_siblings_list': '0-1\n',
    '/sys/devices/system/cpu/cpu2/topology/physical_package_id': '0\n',
    '/sys/devices/system/cpu/cpu2/topology/core_id': '1\n',
    '/sys/devices/system/cpu/cpu2/topology/thread_siblings_list': '2-3\n',
    '/sys/devices/system/cpu/cpu3/topology/physical_package_id': '0\n',
    '/sys/devices/system/cpu/cpu3/topology/core_id': '1\n',
    '/sys/devices/system/cpu/cpu3/topology/thread_siblings_list': '2-3\n',
    '/sys/devices/system/node/node0/cpulist': '0-3\n',
    '/sys/devices/system/node/node0/meminfo': 'Node 0 MemTotal:  8000000 kB\nNode 0 MemFree:  7000000 kB\n',
    '/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages': '16\n',
    '/sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages': '16\n',
    '/sys/module/kvm/parameters/halt_poll_ns': '200000\n',
    '/sys/module/kvm_intel/parameters/nested': 'N\n',
    '/dev/kvm': '',
    ...over,
  };
  return Object.fromEntries(Object.entries(files).filter((e): e is [string, string] => e[1] !== null));
}

const probeMap = (files: Record<string, string>, denied: string[] = []) => probeHost(fixtureReaderFromMap(files, { denied }));

describe('the KVM verdict', () => {
  test('the plain Intel host is usable, nested off', async () => {
    const r = await probeMap(intelHost());
    expect(r.kvm).toMatchObject({ usable: true, provider: 'kvm_intel', nested: false });
    expect(r.warnings).toEqual([]);
  });

  test('kvm_intel loaded but no vmx flag (VT-x off in firmware): not usable', async () => {
    const files = intelHost();
    files['/proc/cpuinfo'] = (files['/proc/cpuinfo'] as string).replaceAll('fpu vmx ht', 'fpu ht');
    const r = await probeMap(files);
    expect(r.kvm.usable).toBe(false);
    expect(r.kvm.reason).toBe('kvm_intel is loaded but the CPU has no vmx flag in /proc/cpuinfo');
  });

  test('kvm_pvm loaded next to kvm_intel: kvm_pvm is named, not usable', async () => {
    const r = await probeMap(intelHost({ '/sys/module/kvm_pvm/parameters/pvm_native': 'Y\n' }));
    expect(r.kvm.provider).toBe('kvm_pvm');
    expect(r.kvm.modules).toEqual(['kvm', 'kvm_intel', 'kvm_pvm']);
    expect(r.kvm.usable).toBe(false);
    expect(r.kvm.reason).toBe('/dev/kvm is provided by kvm_pvm, which runs only PVM-aware guests; a normal guest hangs under it');
    expect(r.kvm.evidence).toContain('kvm_pvm is loaded alongside kvm_intel');
    expect(chooseAccel(r).accel).toBe('tcg');
  });

  test('an unknown vendor module is not trusted', async () => {
    const r = await probeMap(intelHost({ '/sys/module/kvm_intel/parameters/nested': null, '/sys/module/kvm_foo/refcnt': '1\n' }));
    expect(r.kvm.reason).toBe('/dev/kvm is provided by kvm_foo, not kvm_intel or kvm_amd; a normal guest may not run under it');
  });

  test('an unparsable nested parameter is null and named in warnings', async () => {
    const r = await probeMap(intelHost({ '/sys/module/kvm_intel/parameters/nested': 'maybe\n' }));
    expect(r.kvm.nested).toBeNull();
    expect(r.kvm.usable).toBe(true);
    expect(r.warnings).toEqual(['/sys/module/kvm_intel/parameters/nested: expected Y, N, 1 or 0, got "maybe"']);
  });
});

describe('confidential computing', () => {
  test('TDX: tdx_host_platform flag and kvm_intel tdx=Y', async () => {
    const files = intelHost({ '/sys/module/kvm_intel/parameters/tdx': 'Y\n' });
    files['/proc/cpuinfo'] = (files['/proc/cpuinfo'] as string).replaceAll('fpu vmx ht', 'fpu vmx ht tdx_host_platform');
    expect((await probeMap(files)).confidential.tdx).toEqual({
      available: true,
      evidence: ['tdx_host_platform flag in /proc/cpuinfo', '/sys/module/kvm_intel/parameters/tdx = Y'],
    });
  });

  test('TDX: the flag without the module parameter turned on is not enough', async () => {
    const files = intelHost({ '/sys/module/kvm_intel/parameters/tdx': 'N\n' });
    files['/proc/cpuinfo'] = (files['/proc/cpuinfo'] as string).replaceAll('fpu vmx ht', 'fpu vmx ht tdx');
    expect((await probeMap(files)).confidential.tdx).toEqual({
      available: false,
      evidence: ['tdx flag in /proc/cpuinfo', '/sys/module/kvm_intel/parameters/tdx = N'],
    });
  });
});

describe('bad or missing input is reported, never dropped, never a crash', () => {
  test('an empty host: every value null, every gap named', async () => {
    const r = await probeMap({});
    expect(r).toEqual({
      schemaVersion: 1,
      cpu: {
        vendorId: null,
        vendor: null,
        modelName: null,
        virtualizationFlags: [],
        runningUnderHypervisor: false,
        logicalCpus: null,
        onlineCpus: [],
        topology: null,
        numaNodes: [],
      },
      memory: { totalBytes: null, availableBytes: null, defaultHugepageSizeBytes: null, hugepages: [] },
      kvm: {
        device: { path: '/dev/kvm', present: false, accessible: false },
        modules: [],
        provider: null,
        nested: null,
        usable: false,
        reason:
          '/dev/kvm does not exist; neither kvm_intel nor kvm_amd is loaded; the CPU flags could not be read from /proc/cpuinfo',
        evidence: ['no kvm module loaded'],
      },
      confidential: {
        sev: {
          available: false,
          evidence: ['/proc/cpuinfo flags could not be read', 'kvm_amd is not loaded', '/dev/sev is missing'],
        },
        sevEs: {
          available: false,
          evidence: ['/proc/cpuinfo flags could not be read', 'kvm_amd is not loaded', '/dev/sev is missing'],
        },
        sevSnp: {
          available: false,
          evidence: ['/proc/cpuinfo flags could not be read', 'kvm_amd is not loaded', '/dev/sev is missing'],
        },
        tdx: { available: false, evidence: ['/proc/cpuinfo flags could not be read', 'kvm_intel is not loaded'] },
      },
      warnings: [
        '/proc/cpuinfo: missing',
        '/proc/meminfo: missing',
        '/sys/devices/system/cpu/online: missing',
        '/sys/module: missing, so no KVM module can be seen',
        'CPU topology unknown: neither /sys/devices/system/cpu/cpuN/topology nor /proc/cpuinfo place every CPU',
      ],
    });
  });

  test('garbage in sysfs: nulls, fallbacks to /proc/cpuinfo, and a warning for each', async () => {
    const r = await probeMap(
      intelHost({
        '/sys/devices/system/cpu/online': 'zero to three\n',
        '/sys/devices/system/cpu/cpu2/topology/physical_package_id': 'x\n',
        '/sys/devices/system/node/node0/cpulist': '0-\n',
        '/sys/devices/system/node/node0/meminfo': 'Node 0 MemFree:  7000000 kB\n',
        '/proc/meminfo': 'MemTotal:        8000000 kB\nweird\n',
        '/sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages': 'many\n',
        '/sys/kernel/mm/hugepages/hugepages-1048576kB/nr_hugepages': '2\n',
        '/sys/kernel/mm/hugepages/hugepages-huge/nr_hugepages': '2\n',
      }),
    );
    expect(r.cpu.logicalCpus).toBe(4);
    expect(r.cpu.onlineCpus).toEqual([0, 1, 2, 3]);
    expect(r.cpu.topology).toEqual({ sockets: 1, coresPerSocket: 2, threadsPerCore: 2, cores: 2, uniform: true, source: 'cpuinfo' });
    expect(r.cpu.numaNodes).toEqual([{ id: 0, cpus: null, memTotalBytes: null, memFreeBytes: 7000000 * 1024 }]);
    expect(r.memory).toEqual({
      totalBytes: 8000000 * 1024,
      availableBytes: null,
      defaultHugepageSizeBytes: null,
      hugepages: [
        { pageSizeBytes: 2 * 1024 * 1024, total: 16, free: null },
        { pageSizeBytes: 1024 * 1024 * 1024, total: 2, free: null },
      ],
    });
    expect(r.warnings).toEqual([
      '/proc/meminfo: no MemAvailable line in kB',
      '/proc/meminfo: unparsable line "weird"',
      '/sys/devices/system/cpu/cpu2/topology/physical_package_id: expected an integer, got "x"',
      '/sys/devices/system/cpu/online: expected a CPU list such as 0-3,8-11, got "zero to three"',
      '/sys/devices/system/node/node0/cpulist: expected a CPU list such as 0-3,8-11, got "0-"',
      '/sys/devices/system/node/node0/meminfo: no MemTotal line in kB',
      '/sys/kernel/mm/hugepages/hugepages-1048576kB/free_hugepages: missing',
      '/sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages: expected a whole number, got "many"',
      '/sys/kernel/mm/hugepages/hugepages-huge: expected a directory named hugepages-<size>kB',
      'CPU topology read from /proc/cpuinfo: the sysfs topology files are incomplete',
      'online CPUs counted from the processor entries of /proc/cpuinfo',
    ]);
  });

  test('offline CPUs are left out of the count and the topology', async () => {
    const r = await probeMap(intelHost({ '/sys/devices/system/cpu/online': '0,2\n' }));
    expect(r.cpu.logicalCpus).toBe(2);
    expect(r.cpu.topology).toMatchObject({ cores: 2, threadsPerCore: 1 });
  });

  test('a read that fails (not "missing") becomes a warning; the rest of the report stands', async () => {
    const inner = fixtureReaderFromMap(intelHost());
    const reader: HostReader = {
      ...inner,
      async readFile(path) {
        if (path === '/proc/meminfo') throw Object.assign(new Error('permission denied'), { code: 'EACCES' });
        return inner.readFile(path);
      },
      async access(path, mode) {
        if (path === '/dev/sev') throw new Error('weird device');
        return inner.access(path, mode);
      },
    };
    const r = await probeHost(reader);
    expect(r.kvm.usable).toBe(true);
    expect(r.memory.totalBytes).toBeNull();
    expect(r.warnings).toEqual(['/dev/sev: cannot read (weird device)', '/proc/meminfo: cannot read (EACCES)']);
  });
});
