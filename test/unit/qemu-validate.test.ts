import { describe, expect, test } from 'vitest';
import { ValidationError } from '../../src/errors.ts';
import type { Issue } from '../../src/errors.ts';
import type { HostFacts, ResolveContext } from '../../src/qemu/spec.ts';
import { resolveSpec } from '../../src/qemu/validate.ts';

const GiB = 1024 ** 3;
const HOST: HostFacts = {
  cpuCount: 2,
  memTotalBytes: 8 * GiB,
  kvm: { usable: false, reason: 'no vmx or svm flag in /proc/cpuinfo (module kvm_pvm)' },
  confidential: {
    sev: { available: false, evidence: ['no sev flag in /proc/cpuinfo', 'kvm_amd not loaded'] },
    sevEs: { available: false, evidence: ['no sev_es flag in /proc/cpuinfo', 'kvm_amd not loaded'] },
    sevSnp: { available: false, evidence: ['no sev_snp flag in /proc/cpuinfo', 'kvm_amd not loaded'] },
    tdx: { available: false, evidence: ['no tdx_guest flag in /proc/cpuinfo', 'kvm_intel not loaded'] },
  },
};
const KVM_HOST: HostFacts = { ...HOST, kvm: { usable: true, reason: 'kvm_intel loaded' } };
const PATHS = {
  qmpSocket: '/run/goship/web/qmp.sock',
  qmpUserSocket: '/run/goship/web/qmp-user.sock',
  agentSocket: '/run/goship/web/agent.sock',
  consoleSocket: '/run/goship/web/console.sock',
  pidfile: '/v/web/qemu.pid',
};
const EXISTING = new Set(['/vms/web/disk.qcow2', '/img/vmlinuz', '/usr/share/OVMF/OVMF_CODE_4M.fd']);

function ctx(over: Partial<ResolveContext> = {}): ResolveContext {
  return { host: HOST, paths: PATHS, exists: (p) => EXISTING.has(p), ...over };
}

function issuesOf(spec: unknown, c: ResolveContext = ctx()): Issue[] {
  try {
    resolveSpec(spec, c);
  } catch (e) {
    if (e instanceof ValidationError) return e.issues;
    throw e;
  }
  throw new Error('expected a ValidationError');
}

const NAME_MSG = 'expected 1-63 lowercase letters, digits or "-", not starting with "-" (it is used in file names), got';
const SIZE_MSG = 'expected a size such as "512M", "2G", "1.5G" or a whole number of bytes, got';

describe('resolveSpec: one bad field at a time', () => {
  test.each([
    [{ name: 'a/b' }, [{ path: 'name', message: `${NAME_MSG} "a/b"` }]],
    [{ name: '..' }, [{ path: 'name', message: `${NAME_MSG} ".."` }]],
    [{ name: '' }, [{ path: 'name', message: `${NAME_MSG} an empty string` }]],
    [{ name: 'a'.repeat(64) }, [{ path: 'name', message: `${NAME_MSG} 64 characters ("aaaaaaaaaaaaaaaaaaaaaaaa"…)` }]],
    [{ name: '-web' }, [{ path: 'name', message: `${NAME_MSG} "-web"` }]],
    [{ name: 'Web' }, [{ path: 'name', message: `${NAME_MSG} "Web"` }]],
    [{ name: 42 }, [{ path: 'name', message: `${NAME_MSG} 42` }]],
    [{}, [{ path: 'name', message: 'required field is missing' }]],
    [{ name: 'web', id: 'x/y' }, [{ path: 'id', message: `${NAME_MSG} "x/y"` }]],
    [{ name: 'web', memory: 0 }, [{ path: 'memory', message: 'must be at least 16M, got 0' }]],
    [{ name: 'web', memory: '0' }, [{ path: 'memory', message: 'must be at least 16M, got "0"' }]],
    [{ name: 'web', memory: -1 }, [{ path: 'memory', message: `${SIZE_MSG} -1` }]],
    [{ name: 'web', memory: 'abc' }, [{ path: 'memory', message: `${SIZE_MSG} "abc"` }]],
    [{ name: 'web', memory: '16G' }, [{ path: 'memory', message: "16G is more than this host's memory (8G)" }]],
    [{ name: 'web', memory: 100_000_000 }, [{ path: 'memory', message: "must be a whole number of MiB (QEMU's -m unit), got 100000000" }]],
    [{ name: 'web', cpu: { count: 0 } }, [{ path: 'cpu.count', message: 'expected a whole number from 1 to 1024, got 0' }]],
    [{ name: 'web', cpu: { count: 1.5 } }, [{ path: 'cpu.count', message: 'expected a whole number from 1 to 1024, got 1.5' }]],
    [{ name: 'web', cpu: { count: 4 } }, [{ path: 'cpu.count', message: "4 is more than this host's 2 logical CPUs" }]],
    [{ name: 'web', cpu: { sockets: 2, cores: 2 } }, [{ path: 'cpu.count', message: "4 is more than this host's 2 logical CPUs" }]],
    [{ name: 'web', cpu: { count: 2, cores: 3 } }, [{ path: 'cpu', message: 'sockets × cores × threads must equal count (2); got sockets ?, cores 3, threads ?' }]],
    [{ name: 'web', cpu: { count: 2, sockets: 1, cores: 1, threads: 1 } }, [{ path: 'cpu', message: 'sockets × cores × threads must equal count (2); got sockets 1, cores 1, threads 1' }]],
    [{ name: 'web', cpu: { model: 'host' } }, [{ path: 'cpu.model', message: '"host" needs KVM, but accel is tcg (auto: KVM is not usable (no vmx or svm flag in /proc/cpuinfo (module kvm_pvm)), using TCG); use "max" or a named model such as "EPYC-v4"' }]],
    [{ name: 'web', cpu: { model: 'max,+avx' } }, [{ path: 'cpu.model', message: 'expected a CPU model name such as "max", "host" or "EPYC-v4" (letters, digits, "_", ".", "-"), got "max,+avx"' }]],
    [{ name: 'web', accel: 'xen' }, [{ path: 'accel', message: 'expected "auto", "kvm" or "tcg", got "xen"' }]],
    [{ name: 'web', accel: 'kvm' }, [{ path: 'accel', message: '"kvm" was requested but KVM is not usable on this host: no vmx or svm flag in /proc/cpuinfo (module kvm_pvm); use "auto" or "tcg"' }]],
    [{ name: 'web', machine: 'virt' }, [{ path: 'machine', message: 'expected "q35" or "pc", or a versioned type such as "pc-q35-7.2", got "virt"' }]],
    [{ name: 'web', disks: [{ path: '/vms/web/disk.qcow2' }, { path: '/x/y' }] }, [{ path: 'disks[1].path', message: 'file does not exist: /x/y' }]],
    [{ name: 'web', disks: [{ path: 'disk.qcow2' }] }, [{ path: 'disks[0].path', message: 'expected an absolute path, got "disk.qcow2"' }]],
    [{ name: 'web', disks: [{ path: '/a\nb' }] }, [{ path: 'disks[0].path', message: 'a path must not contain a newline or NUL byte' }]],
    [{ name: 'web', disks: [{ path: '/vms/web/disk.qcow2', format: 'vmdk' }] }, [{ path: 'disks[0].format', message: 'expected "qcow2" or "raw", got "vmdk"' }]],
    [{ name: 'web', disks: [{ path: '/vms/web/disk.qcow2', cache: 'fast' }] }, [{ path: 'disks[0].cache', message: 'expected "none", "writeback", "writethrough", "directsync" or "unsafe", got "fast"' }]],
    [{ name: 'web', disks: [{ path: '/vms/web/disk.qcow2', serial: 'x'.repeat(21) }] }, [{ path: 'disks[0].serial', message: 'expected 1-20 printable ASCII characters without spaces, got "xxxxxxxxxxxxxxxxxxxxx"' }]],
    [{ name: 'web', disks: [{ path: '/vms/web/disk.qcow2' }, { path: '/vms/web/disk.qcow2' }] }, [{ path: 'disks[1].path', message: 'the same file as disks[0]: /vms/web/disk.qcow2; a file can be attached once' }]],
    [{ name: 'web', disks: [{ path: '/vms/web/disk.qcow2', size: '10G' }] }, [{ path: 'disks[0].size', message: 'unknown field; allowed fields: path, format, cache, discard, readOnly, serial' }]],
    [{ name: 'web', seed: '/vms/web/seed.iso' }, [{ path: 'seed', message: 'file does not exist: /vms/web/seed.iso' }]],
    [{ name: 'web', boot: { kernel: '/img/vmlinuz', initrd: '/img/none' } }, [{ path: 'boot.initrd', message: 'file does not exist: /img/none' }]],
    [{ name: 'web', boot: { firmware: 'efi' } }, [{ path: 'boot.firmware', message: 'expected "bios" or "uefi", got "efi"' }]],
    [{ name: 'web', boot: { firmware: 'uefi', ovmfVars: '/vms/web/VARS.fd' } }, [{ path: 'boot.ovmfVars', message: 'file does not exist: /vms/web/VARS.fd' }]],
    [{ name: 'web', boot: { firmware: 'bios', ovmfCode: '/usr/share/OVMF/OVMF_CODE_4M.fd' } }, [{ path: 'boot.ovmfCode', message: 'only used with firmware "uefi"; remove it or set firmware: uefi' }]],
    [{ name: 'web', hugepages: '4K' }, [{ path: 'hugepages', message: 'expected false, "2M" or "1G", got "4K"' }]],
    [{ name: 'web', hugepages: '2M' }, [{ path: 'hugepages', message: '2M pages need hugetlbfs mounted at /dev/hugepages, which does not exist' }]],
    [{ name: 'web', network: { mode: 'none', forwards: [{ host: 2222, guest: 22 }] } }, [{ path: 'network.forwards', message: 'forwards need network mode "user"; mode is "none"' }]],
    [{ name: 'web', network: { forwards: [{ host: 0, guest: 22 }] } }, [{ path: 'network.forwards[0].host', message: 'expected a whole number from 1 to 65535, got 0' }]],
    [{ name: 'web', network: { forwards: [{ host: 2222, guest: 65536 }] } }, [{ path: 'network.forwards[0].guest', message: 'expected a whole number from 1 to 65535, got 65536' }]],
    [{ name: 'web', network: { forwards: [{ host: 2222, guest: 22, hostAddr: '::1' }] } }, [{ path: 'network.forwards[0].hostAddr', message: 'expected an IPv4 address such as "127.0.0.1" or "0.0.0.0", got "::1"' }]],
    [{ name: 'web', network: { forwards: [{ host: 2222, guest: 22 }, { host: 2222, guest: 23 }] } }, [{ path: 'network.forwards[1].host', message: 'tcp host port 2222 is already forwarded by network.forwards[0]; each host port can be forwarded once per protocol' }]],
    [{ name: 'web', agent: 'yes' }, [{ path: 'agent', message: 'expected true or false, got "yes"' }]],
    [{ name: 'web', limits: { cpus: 0 } }, [{ path: 'limits.cpus', message: 'expected a number of host CPUs from 0.01 to 1024, got 0' }]],
    [{ name: 'web', limits: { pids: 8 } }, [{ path: 'limits.pids', message: 'expected a whole number from 16 to 65536, got 8' }]],
    [{ name: 'web', limits: { swap: '1G' } }, [{ path: 'limits.swap', message: 'unknown field; allowed fields: cpus, memoryOverhead, pids' }]],
    [{ name: 'web', bogus: 1 }, [{ path: 'bogus', message: 'unknown field; allowed fields: name, id, machine, accel, cpu, memory, hugepages, boot, disks, seed, network, filesystems, agent, sandbox, confidential, restart, console, limits' }]],
    [[], [{ path: '', message: 'expected an object, got an array' }]],
    [null, [{ path: '', message: 'expected an object, got null' }]],
  ])('%j', (spec, expected) => {
    expect(issuesOf(spec)).toEqual(expected);
  });
});

describe('resolveSpec: confidential guests against the host', () => {
  test.each([
    ['sev', 'sev needs an AMD host with SEV enabled; this host: no sev flag in /proc/cpuinfo, kvm_amd not loaded'],
    ['sev-es', 'sev-es needs an AMD host with SEV-ES enabled; this host: no sev_es flag in /proc/cpuinfo, kvm_amd not loaded'],
    ['sev-snp', 'sev-snp needs an AMD host with SEV-SNP enabled; this host: no sev_snp flag in /proc/cpuinfo, kvm_amd not loaded'],
    ['tdx', 'tdx needs an Intel host with TDX enabled; this host: no tdx_guest flag in /proc/cpuinfo, kvm_intel not loaded'],
  ])('%s on a host without it', (type, message) => {
    expect(issuesOf({ name: 'web', confidential: { type } }, ctx({ host: KVM_HOST }))).toEqual([{ path: 'confidential.type', message }]);
  });

  test('needs KVM: under accel tcg, and under auto when KVM is not usable', () => {
    expect(issuesOf({ name: 'web', accel: 'tcg', cpu: { model: 'max' }, confidential: { type: 'sev-snp' } })).toEqual([
      { path: 'confidential.type', message: 'sev-snp needs accel "kvm", but accel is "tcg"' },
      { path: 'confidential.type', message: 'sev-snp needs an AMD host with SEV-SNP enabled; this host: no sev_snp flag in /proc/cpuinfo, kvm_amd not loaded' },
    ]);
    expect(issuesOf({ name: 'web', cpu: { model: 'max' }, confidential: { type: 'sev-snp' } })[0]).toEqual({
      path: 'confidential.type',
      message: 'sev-snp needs accel "kvm", but KVM is not usable on this host: no vmx or svm flag in /proc/cpuinfo (module kvm_pvm)',
    });
  });

  test('policies and fields that do not apply', () => {
    const all = { sev: { available: true, evidence: [] }, sevEs: { available: true, evidence: [] }, sevSnp: { available: true, evidence: [] }, tdx: { available: true, evidence: [] } };
    const c = ctx({ host: { ...KVM_HOST, confidential: all } });
    expect(issuesOf({ name: 'web', confidential: { type: 'sev-es', policy: 1 } }, c)).toEqual([{ path: 'confidential.policy', message: 'sev-es needs the ES bit (0x4) set, got 0x1' }]);
    expect(issuesOf({ name: 'web', confidential: { type: 'sev', policy: 5 } }, c)).toEqual([
      { path: 'confidential.policy', message: 'the ES bit (0x4) makes this an SEV-ES guest: use type "sev-es", got 0x5' },
    ]);
    expect(issuesOf({ name: 'web', confidential: { type: 'sev-snp', policy: 0x10000 } }, c)).toEqual([
      { path: 'confidential.policy', message: 'sev-snp needs bit 17 (0x20000, reserved, must be 1) set, got 0x10000' },
    ]);
    expect(issuesOf({ name: 'web', confidential: { type: 'tdx', policy: 1, cbitpos: 51 } }, c)).toEqual([
      { path: 'confidential.policy', message: 'not used by tdx (AMD SEV only); remove it' },
      { path: 'confidential.cbitpos', message: 'not used by tdx (AMD SEV only); remove it' },
    ]);
    expect(resolveSpec({ name: 'web', confidential: { type: 'sev-es' } }, c).confidential).toEqual({ type: 'sev-es', policy: 5, cbitpos: 51, reducedPhysBits: 1 });
  });
});

describe('resolveSpec: instance paths', () => {
  test('a socket path longer than 107 bytes is refused; the agent socket only when the agent is on', () => {
    const long = `/tmp/${'r'.repeat(95)}/qmp.sock`;
    const c = ctx({ paths: { ...PATHS, qmpSocket: long, agentSocket: long.replace('qmp', 'agt') } });
    expect(issuesOf({ name: 'web', agent: false }, c)).toEqual([
      { path: 'paths.qmpSocket', message: `unix socket path is 109 bytes, more than the 107 Linux allows: ${long}; use a shorter run directory (GOSHIP_RUN)` },
    ]);
    expect(issuesOf({ name: 'web' }, c).map((i) => i.path)).toEqual(['paths.qmpSocket', 'paths.agentSocket']);
  });

  test('a socket path of exactly 107 bytes is fine', () => {
    const exact = `/tmp/${'r'.repeat(93)}/qmp.sock`;
    expect(Buffer.byteLength(exact)).toBe(107);
    expect(() => resolveSpec({ name: 'web', agent: false }, ctx({ paths: { ...PATHS, qmpSocket: exact } }))).not.toThrow();
  });

  test('relative instance paths are refused', () => {
    expect(issuesOf({ name: 'web' }, ctx({ paths: { ...PATHS, pidfile: 'qemu.pid', consoleSocket: 'console.sock' } }))).toEqual([
      { path: 'paths.pidfile', message: 'expected an absolute path, got "qemu.pid"' },
      { path: 'paths.consoleSocket', message: 'expected an absolute path, got "console.sock"' },
    ]);
  });
});

describe('resolveSpec: every problem at once', () => {
  test('host, files and values together, in one ValidationError', () => {
    const spec = {
      name: 'a/b',
      accel: 'kvm',
      memory: '64G',
      cpu: { count: 3 },
      disks: [{ path: '/vms/web/disk.qcow2' }, { path: '/x/y' }],
      confidential: { type: 'sev-snp' },
      network: { forwards: [{ host: 8080, guest: 80 }, { host: 8080, guest: 8080 }] },
    };
    let error: unknown;
    try {
      resolveSpec(spec, ctx());
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(ValidationError);
    const ve = error as ValidationError;
    expect(ve.code).toBe('EINVALID');
    expect(ve.hint).toBe('docs/vm-spec.md lists every field, its default and what it allows');
    expect(ve.issues).toEqual([
      { path: 'name', message: `${NAME_MSG} "a/b"` },
      { path: 'accel', message: '"kvm" was requested but KVM is not usable on this host: no vmx or svm flag in /proc/cpuinfo (module kvm_pvm); use "auto" or "tcg"' },
      { path: 'cpu.count', message: "3 is more than this host's 2 logical CPUs" },
      { path: 'memory', message: "64G is more than this host's memory (8G)" },
      { path: 'confidential.type', message: 'sev-snp needs an AMD host with SEV-SNP enabled; this host: no sev_snp flag in /proc/cpuinfo, kvm_amd not loaded' },
      { path: 'disks[1].path', message: 'file does not exist: /x/y' },
      { path: 'network.forwards[1].host', message: 'tcp host port 8080 is already forwarded by network.forwards[0]; each host port can be forwarded once per protocol' },
    ]);
    expect(ve.message.startsWith(`invalid VM spec: name: ${NAME_MSG} "a/b"; accel: "kvm" was requested`)).toBe(true);
  });

  test('a host port below net.ipv4.ip_unprivileged_port_start is refused: QEMU never runs privileged', () => {
    const low = { name: 'web', network: { forwards: [{ host: 80, guest: 80 }, { proto: 'udp', host: 1023, guest: 53 }, { host: 1024, guest: 22 }] } };
    expect(issuesOf(low)).toEqual([
      {
        path: 'network.forwards[0].host',
        message: "host port 80 is below 1024: QEMU runs unprivileged (as root, as the VM's own identity) and this host lets no unprivileged process bind it (net.ipv4.ip_unprivileged_port_start = 1024); forward a port of 1024 or more, or lower that sysctl",
      },
      {
        path: 'network.forwards[1].host',
        message: "host port 1023 is below 1024: QEMU runs unprivileged (as root, as the VM's own identity) and this host lets no unprivileged process bind it (net.ipv4.ip_unprivileged_port_start = 1024); forward a port of 1024 or more, or lower that sysctl",
      },
    ]);
    // A host whose sysctl lets everyone bind low ports (Docker Desktop, some container hosts): allowed.
    expect(resolveSpec(low, { ...ctx(), host: { ...ctx().host, unprivilegedPortStart: 0 } }).network).toMatchObject({ mode: 'user', forwards: [{ host: 80 }, { host: 1023 }, { host: 1024 }] });
  });

  test('shape errors are all reported too (later checks need the right types)', () => {
    expect(issuesOf({ name: 'web', memory: true, cpu: 2, disks: [{ path: 5 }], boot: 'bios' })).toEqual([
      { path: 'cpu', message: 'expected an object, got 2' },
      { path: 'memory', message: `${SIZE_MSG} true` },
      { path: 'boot', message: 'expected an object, got "bios"' },
      { path: 'disks[0].path', message: 'expected an absolute path, got 5' },
    ]);
  });
});

describe('resolveSpec: defaults', () => {
  test('a name alone resolves to the full default VM', () => {
    expect(resolveSpec({ name: 'web' }, ctx())).toEqual({
      name: 'web',
      id: 'web',
      machine: 'q35',
      accel: 'tcg',
      accelReason: 'auto: KVM is not usable (no vmx or svm flag in /proc/cpuinfo (module kvm_pvm)), using TCG',
      cpu: { model: 'max', count: 1, sockets: 1, cores: 1, threads: 1 },
      memory: { bytes: GiB, hugepages: false, hugepagePath: undefined, shared: false },
      boot: { kind: 'firmware', firmware: 'bios' },
      disks: [],
      seed: undefined,
      network: { mode: 'user', forwards: [] },
      filesystems: [],
      agent: true,
      sandbox: true,
      confidential: undefined,
      restart: 'no',
      console: { maxBytes: 8 * 1024 * 1024, keep: 1 },
      limits: {},
      paths: PATHS,
    });
  });

  test('disk and forward defaults; KVM host picks kvm and the host CPU', () => {
    const config = resolveSpec(
      { name: 'web', disks: [{ path: '/vms/web/disk.qcow2' }], network: { forwards: [{ host: 2222, guest: 22 }] }, cpu: { count: 2, sockets: 2 } },
      ctx({ host: KVM_HOST }),
    );
    expect(config.disks).toEqual([{ path: '/vms/web/disk.qcow2', format: 'qcow2', cache: 'writeback', discard: true, readOnly: false, serial: undefined }]);
    expect(config.network).toEqual({ mode: 'user', forwards: [{ proto: 'tcp', host: 2222, guest: 22, hostAddr: '127.0.0.1' }] });
    expect(config.cpu).toEqual({ model: 'host', count: 2, sockets: 2, cores: 1, threads: 1 });
    expect(config.accel).toBe('kvm');
  });

  test('UEFI defaults to Debian OVMF code, without a vars store', () => {
    expect(resolveSpec({ name: 'web', boot: { firmware: 'uefi' } }, ctx()).boot).toEqual({
      kind: 'firmware',
      firmware: 'uefi',
      ovmfCode: '/usr/share/OVMF/OVMF_CODE_4M.fd',
      ovmfVars: undefined,
    });
  });
});
