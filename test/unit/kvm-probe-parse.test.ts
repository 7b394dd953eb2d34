import { describe, expect, test } from 'vitest';
import {
  meminfoBytes,
  parseCpuinfo,
  parseCpuList,
  parseHugepageDirName,
  parseInteger,
  parseKernelBool,
  parseMeminfo,
} from '../../src/kvm-probe/parse.ts';
import { computeTopology } from '../../src/kvm-probe/topology.ts';
import type { CpuPlace } from '../../src/kvm-probe/topology.ts';
import { formatBytes, formatCpuList } from '../../src/kvm-probe/index.ts';

describe('parseCpuList (the kernel %*pbl list format)', () => {
  test.each([
    ['0-3,8-11\n', [0, 1, 2, 3, 8, 9, 10, 11]],
    ['5', [5]],
    ['0,2,4-5', [0, 2, 4, 5]],
    ['\n', []],
    ['', []],
    ['3,1,1', [1, 3]],
  ])('%j → %j', (text, expected) => {
    expect(parseCpuList(text)).toEqual(expected);
  });

  test.each(['abc', '0-', '3-1', '0-3:2', '1,,2', '-1'])('%j is not a list', (text) => {
    expect(parseCpuList(text)).toBeUndefined();
  });
});

describe('parseCpuinfo', () => {
  const x86 = [
    'processor\t: 0',
    'vendor_id\t: GenuineIntel',
    'model name\t: Intel(R) Xeon(R) CPU E5-2623 v4 @ 2.60GHz',
    'physical id\t: 1',
    'core id\t\t: 3',
    'flags\t\t: fpu vmx  ht',
    'vmx flags\t: ept vpid',
    'power management:',
    '',
    'processor\t: 1',
    'vendor_id\t: GenuineIntel',
    'flags\t\t: fpu',
    '',
    '',
  ].join('\n');

  test('reads each processor block; "vmx flags" is not "flags"', () => {
    const [p0, p1, ...rest] = parseCpuinfo(x86);
    expect(rest).toEqual([]);
    expect(p0).toMatchObject({
      processor: 0,
      vendorId: 'GenuineIntel',
      modelName: 'Intel(R) Xeon(R) CPU E5-2623 v4 @ 2.60GHz',
      flags: ['fpu', 'vmx', 'ht'],
      physicalId: 1,
      coreId: 3,
    });
    expect(p0?.fields['vmx flags']).toBe('ept vpid');
    expect(p0?.fields['power management']).toBe('');
    expect(p1).toMatchObject({ processor: 1, modelName: undefined, physicalId: undefined, coreId: undefined, flags: ['fpu'] });
  });

  test('arm64: Features are the flags, the trailing Hardware block is skipped', () => {
    const arm = 'processor\t: 0\nBogoMIPS\t: 50.00\nFeatures\t: fp asimd evtstrm\nCPU implementer\t: 0x41\n\nHardware\t: BCM2835\n';
    expect(parseCpuinfo(arm)).toEqual([
      {
        processor: 0,
        vendorId: undefined,
        modelName: undefined,
        flags: ['fp', 'asimd', 'evtstrm'],
        physicalId: undefined,
        coreId: undefined,
        fields: { processor: '0', BogoMIPS: '50.00', Features: 'fp asimd evtstrm', 'CPU implementer': '0x41' },
      },
    ]);
  });

  test('garbage gives no processors, not a crash', () => {
    expect(parseCpuinfo('')).toEqual([]);
    expect(parseCpuinfo('\u0000\u0001 nonsense\n\n::::')).toEqual([]);
  });
});

describe('parseMeminfo', () => {
  test('/proc/meminfo and node meminfo lines; kB is KiB; counts have no unit', () => {
    const { values, unparsed } = parseMeminfo(
      'MemTotal:       24683652 kB\nHugePages_Total:       4\nNode 1 MemFree:   5120 kB\nbogus line\nMemAvailable: lots kB\n',
    );
    expect(Object.fromEntries(values)).toEqual({
      MemTotal: { value: 24683652, unit: 'kB' },
      HugePages_Total: { value: 4, unit: null },
      MemFree: { value: 5120, unit: 'kB' },
    });
    expect(unparsed).toEqual(['bogus line', 'MemAvailable: lots kB']);
    expect(meminfoBytes(values, 'MemTotal')).toBe(24683652 * 1024);
    expect(meminfoBytes(values, 'HugePages_Total')).toBeUndefined();
    expect(meminfoBytes(values, 'MemAvailable')).toBeUndefined();
  });
});

test('parseKernelBool: bool params print Y/N, int params 1/0', () => {
  expect(['Y\n', 'y', '1', 'N', 'n', '0\n', '2', 'yes', ''].map(parseKernelBool)).toEqual([
    true,
    true,
    true,
    false,
    false,
    false,
    undefined,
    undefined,
    undefined,
  ]);
});

test('parseInteger accepts -1 (physical_package_id on some platforms), nothing else odd', () => {
  expect(['0\n', '-1', ' 42 ', '4.5', '0x10', '', '99999999999999999999'].map(parseInteger)).toEqual([
    0,
    -1,
    42,
    undefined,
    undefined,
    undefined,
    undefined,
  ]);
});

test('parseHugepageDirName', () => {
  expect(['hugepages-2048kB', 'hugepages-1048576kB', 'hugepages-64kB', 'hugepages-2M', 'hugepages-0kB', 'x'].map(parseHugepageDirName)).toEqual([
    2 * 1024 * 1024,
    1024 * 1024 * 1024,
    64 * 1024,
    undefined,
    undefined,
    undefined,
  ]);
});

describe('computeTopology', () => {
  const place = (cpu: number, packageId: number, coreId: number, threadSiblings?: number[]): CpuPlace => ({
    cpu,
    packageId,
    coreId,
    threadSiblings,
  });

  test('hybrid CPU (2-thread P-cores, 1-thread E-cores): up to 2 threads, not uniform', () => {
    const places = [
      place(0, 0, 0, [0, 1]),
      place(1, 0, 0, [0, 1]),
      place(2, 0, 4, [2, 3]),
      place(3, 0, 4, [2, 3]),
      place(4, 0, 8, [4]),
      place(5, 0, 9, [5]),
      place(6, 0, 10, [6]),
      place(7, 0, 11, [7]),
    ];
    expect(computeTopology(places, 'sysfs')).toEqual({
      sockets: 1,
      coresPerSocket: 6,
      threadsPerCore: 2,
      cores: 6,
      uniform: false,
      source: 'sysfs',
    });
  });

  test('sockets with different core counts: coresPerSocket is null', () => {
    const places = [place(0, 0, 0), place(1, 0, 1), place(2, 1, 0)];
    expect(computeTopology(places, 'cpuinfo')).toEqual({
      sockets: 2,
      coresPerSocket: null,
      threadsPerCore: 1,
      cores: 3,
      uniform: false,
      source: 'cpuinfo',
    });
  });

  test('the same core_id in two packages is two cores', () => {
    expect(computeTopology([place(0, 0, 0), place(1, 1, 0)], 'cpuinfo')).toMatchObject({ sockets: 2, cores: 2, coresPerSocket: 1 });
  });

  test('no CPUs, or a CPU with neither siblings nor core id: unknown', () => {
    expect(computeTopology([], 'sysfs')).toBeUndefined();
    expect(computeTopology([{ cpu: 0, packageId: 0, coreId: undefined, threadSiblings: undefined }], 'sysfs')).toBeUndefined();
  });
});

test('formatCpuList and formatBytes', () => {
  expect(formatCpuList([11, 0, 1, 2, 3, 8, 9, 10, 5])).toBe('0-3,5,8-11');
  expect(formatCpuList([])).toBe('');
  expect([2097152, 1073741824, 25276059648, 512, null].map(formatBytes)).toEqual(['2 MiB', '1 GiB', '23.5 GiB', '512 B', 'unknown']);
});
