import { describe, expect, test } from 'vitest';
import { buildArgv, ramFileArgs } from '../../src/qemu/argv.ts';
import * as agent from '../../src/qemu/devices/agent.ts';
import * as cdrom from '../../src/qemu/devices/cdrom.ts';
import * as confidential from '../../src/qemu/devices/confidential.ts';
import * as consoleDev from '../../src/qemu/devices/console.ts';
import * as disk from '../../src/qemu/devices/disk.ts';
import * as hugepages from '../../src/qemu/devices/hugepages.ts';
import * as netUser from '../../src/qemu/devices/net-user.ts';
import * as pflash from '../../src/qemu/devices/pflash.ts';
import * as qmp from '../../src/qemu/devices/qmp.ts';
import { DEVICE_BUILDERS, devicesOf } from '../../src/qemu/devices/registry.ts';
import * as panic from '../../src/qemu/devices/panic.ts';
import * as rng from '../../src/qemu/devices/rng.ts';
import * as vmgenid from '../../src/qemu/devices/vmgenid.ts';
import type { DeviceContext, ValidateContext } from '../../src/qemu/devices/types.ts';
import type { HostFacts, ResolveContext } from '../../src/qemu/spec.ts';
import { resolveSpec } from '../../src/qemu/validate.ts';

const GiB = 1024 ** 3;
const NO = { available: false, evidence: [] };

/** This machine: KVM opens but cannot run a normal guest. */
const TCG_HOST: HostFacts = {
  cpuCount: 2,
  memTotalBytes: 8 * GiB,
  kvm: { usable: false, reason: 'no vmx or svm flag in /proc/cpuinfo (module kvm_pvm)' },
  confidential: { sev: NO, sevEs: NO, sevSnp: NO, tdx: NO },
};

/** An AMD EPYC host with SEV-SNP. */
const SNP_HOST: HostFacts = {
  cpuCount: 64,
  memTotalBytes: 256 * GiB,
  kvm: { usable: true, reason: 'kvm_amd loaded, svm flag present' },
  confidential: {
    sev: { available: true, evidence: ['sev flag in /proc/cpuinfo'] },
    sevEs: { available: true, evidence: ['sev_es flag in /proc/cpuinfo'] },
    sevSnp: { available: true, evidence: ['sev_snp flag in /proc/cpuinfo', 'kvm_amd sev_snp=Y'] },
    tdx: NO,
  },
};

const PATHS = {
  qmpSocket: '/run/goship/web/qmp.sock',
  qmpUserSocket: '/run/goship/web/qmp-user.sock',
  agentSocket: '/run/goship/web/agent.sock',
  consoleSocket: '/run/goship/web/console.sock',
  pidfile: '/var/lib/goship/vms/web/qemu.pid',
};

function ctx(host: HostFacts = TCG_HOST): ResolveContext {
  return { host, paths: PATHS, exists: () => true };
}

const argv = (spec: unknown, host?: HostFacts): string[] => buildArgv(resolveSpec(spec, ctx(host)));

const HEAD = (name = 'web') => [
  'qemu-system-x86_64',
  '-name',
  `guest=${name},process=goship-${name}`,
  '-S',
  '-no-reboot',
  '-nodefaults',
  '-no-user-config',
  '-display',
  'none',
  '-sandbox',
  'on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny',
  '-pidfile',
  '/var/lib/goship/vms/web/qemu.pid',
];

const MONITORS = [
  '-chardev',
  'socket,id=qmp0,path=/run/goship/web/qmp.sock,server=on,wait=off',
  '-mon',
  'chardev=qmp0,mode=control',
  '-chardev',
  'socket,id=qmp1,path=/run/goship/web/qmp-user.sock,server=on,wait=off',
  '-mon',
  'chardev=qmp1,mode=control',
  '-chardev',
  'socket,id=console0,path=/run/goship/web/console.sock,server=on,wait=off',
  '-device',
  'isa-serial,id=serial0,chardev=console0',
];

const NET = ['-netdev', 'user,id=net0', '-device', 'virtio-net-pci,id=nic0,netdev=net0,romfile='];

const AGENT = [
  '-device',
  'virtio-serial-pci,id=vser0,max_ports=2',
  '-chardev',
  'socket,id=agent0,path=/run/goship/web/agent.sock,server=on,wait=off',
  '-device',
  'virtserialport,id=agent0-port,bus=vser0.0,nr=1,chardev=agent0,name=org.goship.agent.0',
];

const RNG = ['-device', 'virtio-rng-pci,id=rng0'];
const VMGENID = ['-device', 'vmgenid,id=vmgenid0,guid=auto'];
const PANIC = ['-device', 'pvpanic,id=panic0', '-action', 'panic=shutdown'];

describe('buildArgv: whole VMs', () => {
  test('minimal direct kernel boot', () => {
    expect(
      argv({ name: 'web', boot: { kernel: '/img/vmlinuz', initrd: '/img/initrd.img', cmdline: 'console=ttyS0 root=/dev/vda1 ro' } }),
    ).toEqual([
      'qemu-system-x86_64',
      '-name',
      'guest=web,process=goship-web',
      '-S',
      '-no-reboot',
      '-nodefaults',
      '-no-user-config',
      '-display',
      'none',
      '-sandbox',
      'on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny',
      '-pidfile',
      '/var/lib/goship/vms/web/qemu.pid',
      '-machine',
      'q35',
      '-accel',
      'tcg,tb-size=256',
      '-cpu',
      'max',
      '-smp',
      'cpus=1,sockets=1,cores=1,threads=1',
      '-m',
      'size=1024M',
      '-kernel',
      '/img/vmlinuz',
      '-initrd',
      '/img/initrd.img',
      '-append',
      'console=ttyS0 root=/dev/vda1 ro',
      '-chardev',
      'socket,id=qmp0,path=/run/goship/web/qmp.sock,server=on,wait=off',
      '-mon',
      'chardev=qmp0,mode=control',
      '-chardev',
      'socket,id=qmp1,path=/run/goship/web/qmp-user.sock,server=on,wait=off',
      '-mon',
      'chardev=qmp1,mode=control',
      '-chardev',
      'socket,id=console0,path=/run/goship/web/console.sock,server=on,wait=off',
      '-device',
      'isa-serial,id=serial0,chardev=console0',
      '-netdev',
      'user,id=net0',
      '-device',
      'virtio-net-pci,id=nic0,netdev=net0,romfile=',
      '-device',
      'virtio-serial-pci,id=vser0,max_ports=2',
      '-chardev',
      'socket,id=agent0,path=/run/goship/web/agent.sock,server=on,wait=off',
      '-device',
      'virtserialport,id=agent0-port,bus=vser0.0,nr=1,chardev=agent0,name=org.goship.agent.0',
      '-device',
      'virtio-rng-pci,id=rng0',
      '-device',
      'vmgenid,id=vmgenid0,guid=auto',
      '-device',
      'pvpanic,id=panic0',
      '-action',
      'panic=shutdown',
    ]);
  });

  test('firmware boot (SeaBIOS) from a qcow2 disk, with a seed, an id and a binary', () => {
    const config = resolveSpec(
      { name: 'web', id: 'p1-web', machine: 'pc', memory: '512M', cpu: { count: 2 }, disks: [{ path: '/vms/web/disk.qcow2', serial: 'root' }], seed: '/vms/web/seed.iso' },
      ctx(),
    );
    expect(buildArgv(config, '/opt/qemu/bin/qemu-system-x86_64')).toEqual([
      '/opt/qemu/bin/qemu-system-x86_64',
      '-name',
      'guest=web,process=goship-p1-web',
      ...HEAD().slice(3),
      '-machine',
      'pc',
      '-accel',
      'tcg,tb-size=256',
      '-cpu',
      'max',
      '-smp',
      'cpus=2,sockets=1,cores=2,threads=1',
      '-m',
      'size=512M',
      ...MONITORS,
      '-blockdev',
      'driver=file,filename=/vms/web/disk.qcow2,node-name=disk0-file,read-only=off,cache.direct=off,cache.no-flush=off,discard=unmap',
      '-blockdev',
      'driver=qcow2,file=disk0-file,node-name=disk0-format,read-only=off,cache.direct=off,cache.no-flush=off,discard=unmap',
      '-device',
      'virtio-blk-pci,id=disk0,drive=disk0-format,serial=root,write-cache=on,bootindex=1',
      '-blockdev',
      'driver=file,filename=/vms/web/seed.iso,node-name=seed-file,read-only=on',
      '-blockdev',
      'driver=raw,file=seed-file,node-name=seed-format,read-only=on',
      '-device',
      'virtio-scsi-pci,id=seed-scsi',
      '-device',
      'scsi-cd,id=seed,bus=seed-scsi.0,drive=seed-format',
      ...NET,
      ...AGENT,
      ...RNG,
      ...VMGENID,
      ...PANIC,
    ]);
  });

  test('UEFI firmware boot: OVMF code and vars on pflash0/pflash1', () => {
    expect(argv({ name: 'web', boot: { firmware: 'uefi', ovmfVars: '/vms/web/OVMF_VARS.fd' }, network: { mode: 'none' }, agent: false, sandbox: false })).toEqual([
      'qemu-system-x86_64',
      '-name',
      'guest=web,process=goship-web',
      '-S',
      '-no-reboot',
      '-nodefaults',
      '-no-user-config',
      '-display',
      'none',
      '-pidfile',
      '/var/lib/goship/vms/web/qemu.pid',
      '-machine',
      'q35,pflash0=pflash0-format,pflash1=pflash1-format',
      '-accel',
      'tcg,tb-size=256',
      '-cpu',
      'max',
      '-smp',
      'cpus=1,sockets=1,cores=1,threads=1',
      '-m',
      'size=1024M',
      '-blockdev',
      'driver=file,filename=/usr/share/OVMF/OVMF_CODE_4M.fd,node-name=pflash0-file,read-only=on',
      '-blockdev',
      'driver=raw,file=pflash0-file,node-name=pflash0-format,read-only=on',
      '-blockdev',
      'driver=file,filename=/vms/web/OVMF_VARS.fd,node-name=pflash1-file,read-only=off',
      '-blockdev',
      'driver=raw,file=pflash1-file,node-name=pflash1-format,read-only=off',
      ...MONITORS,
      ...RNG,
      ...VMGENID,
      ...PANIC,
    ]);
  });

  test('two disks, the second raw, read-only, uncached, without discard', () => {
    expect(
      argv({
        name: 'web',
        boot: { kernel: '/img/vmlinuz' },
        disks: [{ path: '/vms/web/disk.qcow2' }, { path: '/data/ref.img', format: 'raw', readOnly: true, cache: 'none', discard: false, serial: 'ref-data' }],
        network: { mode: 'none' },
        agent: false,
      }),
    ).toEqual([
      ...HEAD(),
      '-machine',
      'q35',
      '-accel',
      'tcg,tb-size=256',
      '-cpu',
      'max',
      '-smp',
      'cpus=1,sockets=1,cores=1,threads=1',
      '-m',
      'size=1024M',
      '-kernel',
      '/img/vmlinuz',
      ...MONITORS,
      '-blockdev',
      'driver=file,filename=/vms/web/disk.qcow2,node-name=disk0-file,read-only=off,cache.direct=off,cache.no-flush=off,discard=unmap',
      '-blockdev',
      'driver=qcow2,file=disk0-file,node-name=disk0-format,read-only=off,cache.direct=off,cache.no-flush=off,discard=unmap',
      '-device',
      'virtio-blk-pci,id=disk0,drive=disk0-format,write-cache=on',
      '-blockdev',
      'driver=file,filename=/data/ref.img,node-name=disk1-file,read-only=on,cache.direct=on,cache.no-flush=off,discard=ignore',
      '-blockdev',
      'driver=raw,file=disk1-file,node-name=disk1-format,read-only=on,cache.direct=on,cache.no-flush=off,discard=ignore',
      '-device',
      'virtio-blk-pci,id=disk1,drive=disk1-format,serial=ref-data,write-cache=on',
      ...RNG,
      ...VMGENID,
      ...PANIC,
    ]);
  });

  test('a disk path with a comma and a space is one argument with the comma doubled', () => {
    const args = argv({ name: 'web', disks: [{ path: '/tmp/my disk,1.qcow2' }], network: { mode: 'none' }, agent: false });
    expect(args.slice(args.indexOf('-blockdev'), args.indexOf('-blockdev') + 6)).toEqual([
      '-blockdev',
      'driver=file,filename=/tmp/my disk,,1.qcow2,node-name=disk0-file,read-only=off,cache.direct=off,cache.no-flush=off,discard=unmap',
      '-blockdev',
      'driver=qcow2,file=disk0-file,node-name=disk0-format,read-only=off,cache.direct=off,cache.no-flush=off,discard=unmap',
      '-device',
      'virtio-blk-pci,id=disk0,drive=disk0-format,write-cache=on,bootindex=1',
    ]);
  });

  test('2M hugepages: a file backend on /dev/hugepages named by -machine', () => {
    expect(argv({ name: 'web', memory: '2G', hugepages: '2M', cpu: { count: 2, threads: 2 }, network: { mode: 'none' }, agent: false })).toEqual([
      ...HEAD(),
      '-machine',
      'q35,memory-backend=mem0',
      '-accel',
      'tcg,tb-size=256',
      '-cpu',
      'max',
      '-smp',
      'cpus=2,sockets=1,cores=1,threads=2',
      '-m',
      'size=2048M',
      '-object',
      'memory-backend-file,id=mem0,size=2147483648,mem-path=/dev/hugepages,prealloc=on',
      ...MONITORS,
      ...RNG,
      ...VMGENID,
      ...PANIC,
    ]);
  });

  test('port forwards: tcp and udp, default and explicit host address', () => {
    const args = argv({
      name: 'web',
      network: {
        forwards: [
          { host: 2222, guest: 22 },
          { proto: 'udp', host: 5353, guest: 53, hostAddr: '0.0.0.0' },
          { proto: 'udp', host: 2222, guest: 2222 },
        ],
      },
    });
    const at = args.indexOf('-netdev');
    expect(args.slice(at, at + 4)).toEqual([
      '-netdev',
      'user,id=net0,hostfwd=tcp:127.0.0.1:2222-:22,hostfwd=udp:0.0.0.0:5353-:53,hostfwd=udp:127.0.0.1:2222-:2222',
      '-device',
      'virtio-net-pci,id=nic0,netdev=net0,romfile=',
    ]);
  });

  test('agent off: no virtio-serial at all', () => {
    const args = argv({ name: 'web', agent: false });
    expect(args.filter((a) => a.includes('virtio-serial') || a.includes('agent'))).toEqual([]);
    expect(args.slice(-12)).toEqual([...NET, ...RNG, ...VMGENID, ...PANIC]);
  });

  test('SEV-SNP on a host that has it: kvm, host CPU, sev-snp-guest object', () => {
    expect(argv({ name: 'web', confidential: { type: 'sev-snp' }, cpu: { count: 4, sockets: 2 }, memory: '4G', network: { mode: 'none' }, agent: false }, SNP_HOST)).toEqual([
      ...HEAD(),
      '-machine',
      'q35,confidential-guest-support=cgs0',
      '-accel',
      'kvm',
      '-cpu',
      'host',
      '-smp',
      'cpus=4,sockets=2,cores=2,threads=1',
      '-m',
      'size=4096M',
      '-object',
      'sev-snp-guest,id=cgs0,cbitpos=51,reduced-phys-bits=1,policy=0x30000',
      ...MONITORS,
      ...RNG,
      ...PANIC,
    ]);
  });

  test('resolved accelerator and its reason', () => {
    expect(resolveSpec({ name: 'web' }, ctx()).accelReason).toBe('auto: KVM is not usable (no vmx or svm flag in /proc/cpuinfo (module kvm_pvm)), using TCG');
    expect(resolveSpec({ name: 'web' }, ctx(SNP_HOST))).toMatchObject({ accel: 'kvm', accelReason: 'auto: KVM is usable (kvm_amd loaded, svm flag present)', cpu: { model: 'host' } });
  });

  test('the device registry covers every kind devicesOf produces, in argv order', () => {
    const config = resolveSpec(
      { name: 'web', hugepages: '2M', boot: { firmware: 'uefi', ovmfVars: '/v' }, disks: [{ path: '/d' }], seed: '/s', confidential: { type: 'sev' } },
      ctx(SNP_HOST),
    );
    expect(devicesOf(config).map((d) => d.kind)).toEqual(['hugepages', 'confidential', 'pflash', 'pflash', 'qmp', 'qmp', 'console', 'disk', 'cdrom', 'net-user', 'agent', 'rng', 'panic']);
    const shared = resolveSpec({ name: 'web', filesystems: [{ tag: 'a', source: '/x' }] }, ctx());
    expect(devicesOf(shared).map((d) => d.kind)).toEqual(['shared-memory', 'qmp', 'qmp', 'console', 'net-user', 'filesystem', 'agent', 'rng', 'vmgenid', 'panic']);
    expect(Object.keys(DEVICE_BUILDERS).sort()).toEqual(['agent', 'cdrom', 'confidential', 'console', 'disk', 'filesystem', 'hugepages', 'net-user', 'panic', 'pflash', 'qmp', 'rng', 'shared-memory', 'vmgenid']);
  });
});

describe('devices alone', () => {
  const dctx: DeviceContext = { machine: 'q35' };
  const vctx = (exists = true, host: HostFacts = TCG_HOST): ValidateContext => ({ machine: 'q35', host, exists: () => exists });
  const baseDisk = { kind: 'disk', at: 'disks[0]', id: 'disk0', path: '/d.qcow2', format: 'qcow2', discard: true, readOnly: false, serial: undefined, bootIndex: undefined } as const;

  test.each([
    ['writeback', 'cache.direct=off,cache.no-flush=off', 'write-cache=on'],
    ['none', 'cache.direct=on,cache.no-flush=off', 'write-cache=on'],
    ['writethrough', 'cache.direct=off,cache.no-flush=off', 'write-cache=off'],
    ['directsync', 'cache.direct=on,cache.no-flush=off', 'write-cache=off'],
    ['unsafe', 'cache.direct=off,cache.no-flush=on', 'write-cache=on'],
  ] as const)('disk cache %s', (cache, nodes, device) => {
    expect(disk.toArgs({ ...baseDisk, cache }, dctx)).toEqual([
      '-blockdev',
      `driver=file,filename=/d.qcow2,node-name=disk0-file,read-only=off,${nodes},discard=unmap`,
      '-blockdev',
      `driver=qcow2,file=disk0-file,node-name=disk0-format,read-only=off,${nodes},discard=unmap`,
      '-device',
      `virtio-blk-pci,id=disk0,drive=disk0-format,${device}`,
    ]);
  });

  test('disk validate: the file must exist', () => {
    expect(disk.validate({ ...baseDisk, cache: 'writeback' }, vctx(true))).toEqual([]);
    expect(disk.validate({ ...baseDisk, cache: 'writeback' }, vctx(false))).toEqual([{ path: 'disks[0].path', message: 'file does not exist: /d.qcow2' }]);
  });

  test('cdrom', () => {
    const part = { kind: 'cdrom', at: 'seed', id: 'seed', path: '/s,1.iso' } as const;
    expect(cdrom.toArgs(part, dctx)).toEqual([
      '-blockdev',
      'driver=file,filename=/s,,1.iso,node-name=seed-file,read-only=on',
      '-blockdev',
      'driver=raw,file=seed-file,node-name=seed-format,read-only=on',
      '-device',
      'virtio-scsi-pci,id=seed-scsi',
      '-device',
      'scsi-cd,id=seed,bus=seed-scsi.0,drive=seed-format',
    ]);
    expect(cdrom.validate(part, vctx(false))).toEqual([{ path: 'seed', message: 'file does not exist: /s,1.iso' }]);
  });

  test('net-user without forwards, and duplicate host ports', () => {
    expect(netUser.toArgs({ kind: 'net-user', at: 'network', id: 'net0', forwards: [] }, dctx)).toEqual(NET);
    const f = (proto: 'tcp' | 'udp', host: number) => ({ proto, host, guest: 80, hostAddr: '127.0.0.1' });
    expect(netUser.validate({ kind: 'net-user', at: 'network', id: 'net0', forwards: [f('tcp', 8080), f('udp', 8080), f('tcp', 8080)] }, vctx())).toEqual([
      { path: 'network.forwards[2].host', message: 'tcp host port 8080 is already forwarded by network.forwards[0]; each host port can be forwarded once per protocol' },
    ]);
  });

  test('agent', () => {
    const part = { kind: 'agent', at: 'paths.agentSocket', socket: '/run/a.sock', portName: 'org.goship.agent.0' } as const;
    expect(agent.toArgs(part, dctx)).toEqual([
      '-device',
      'virtio-serial-pci,id=vser0,max_ports=2',
      '-chardev',
      'socket,id=agent0,path=/run/a.sock,server=on,wait=off',
      '-device',
      'virtserialport,id=agent0-port,bus=vser0.0,nr=1,chardev=agent0,name=org.goship.agent.0',
    ]);
    const long = `/${'r'.repeat(99)}/agent.sock`;
    expect(agent.validate({ ...part, socket: long }, vctx())).toEqual([
      { path: 'paths.agentSocket', message: `unix socket path is 111 bytes, more than the 107 Linux allows: ${long}; use a shorter run directory (GOSHIP_RUN)` },
    ]);
  });

  test('qmp', () => {
    expect(qmp.toArgs({ kind: 'qmp', at: 'paths.qmpSocket', id: 'qmp0', socket: '/run/q.sock' }, dctx)).toEqual([
      '-chardev',
      'socket,id=qmp0,path=/run/q.sock,server=on,wait=off',
      '-mon',
      'chardev=qmp0,mode=control',
    ]);
    expect(qmp.toArgs({ kind: 'qmp', at: 'paths.qmpUserSocket', id: 'qmp1', socket: '/run/u.sock' }, dctx)).toEqual([
      '-chardev',
      'socket,id=qmp1,path=/run/u.sock,server=on,wait=off',
      '-mon',
      'chardev=qmp1,mode=control',
    ]);
  });

  test('console', () => {
    expect(consoleDev.toArgs({ kind: 'console', at: 'paths.consoleSocket', socket: '/r/console.sock' }, dctx)).toEqual([
      '-chardev',
      'socket,id=console0,path=/r/console.sock,server=on,wait=off',
      '-device',
      'isa-serial,id=serial0,chardev=console0',
    ]);
  });

  test('vmgenid', () => {
    expect(vmgenid.toArgs({ kind: 'vmgenid', at: 'vmgenid', id: 'vmgenid0' }, dctx)).toEqual(VMGENID);
  });

  test('rng', () => {
    expect(rng.toArgs({ kind: 'rng', at: 'rng', id: 'rng0' }, dctx)).toEqual(RNG);
  });

  test('panic', () => {
    expect(panic.toArgs({ kind: 'panic', at: 'panic', id: 'panic0' }, dctx)).toEqual(PANIC);
  });

  test('pflash', () => {
    expect(pflash.toArgs({ kind: 'pflash', at: 'boot.ovmfVars', unit: 1, path: '/v/VARS.fd', readOnly: false }, dctx)).toEqual([
      '-blockdev',
      'driver=file,filename=/v/VARS.fd,node-name=pflash1-file,read-only=off',
      '-blockdev',
      'driver=raw,file=pflash1-file,node-name=pflash1-format,read-only=off',
    ]);
  });

  test('hugepages', () => {
    const part = { kind: 'hugepages', at: 'hugepages', id: 'mem0', bytes: 3 * 1024 ** 3, pageSize: '1G', memPath: '/dev/hugepages1G' } as const;
    expect(hugepages.toArgs(part, dctx)).toEqual(['-object', 'memory-backend-file,id=mem0,size=3221225472,mem-path=/dev/hugepages1G,prealloc=on']);
    expect(hugepages.validate({ ...part, bytes: 1536 * 1024 ** 2 }, vctx(false))).toEqual([
      { path: 'hugepages', message: '1G pages need hugetlbfs mounted at /dev/hugepages1G, which does not exist' },
      { path: 'memory', message: 'with 1G hugepages, memory must be a multiple of 1G, got 1536M' },
    ]);
  });

  test('confidential objects', () => {
    const sev = { kind: 'confidential', at: 'confidential', id: 'cgs0', cbitpos: 51, reducedPhysBits: 1 } as const;
    expect(confidential.toArgs({ ...sev, type: 'sev', policy: 1 }, dctx)).toEqual(['-object', 'sev-guest,id=cgs0,cbitpos=51,reduced-phys-bits=1,policy=0x1']);
    expect(confidential.toArgs({ ...sev, type: 'sev-es', policy: 5 }, dctx)).toEqual(['-object', 'sev-guest,id=cgs0,cbitpos=51,reduced-phys-bits=1,policy=0x5']);
    expect(confidential.toArgs({ ...sev, type: 'sev-snp', policy: 0x30000, cbitpos: 47 }, dctx)).toEqual(['-object', 'sev-snp-guest,id=cgs0,cbitpos=47,reduced-phys-bits=1,policy=0x30000']);
    expect(confidential.toArgs({ kind: 'confidential', at: 'confidential', id: 'cgs0', type: 'tdx' }, dctx)).toEqual(['-object', 'tdx-guest,id=cgs0']);
    expect(confidential.validate({ ...sev, type: 'sev-snp', policy: 0x30000 }, vctx(true, SNP_HOST))).toEqual([]);
    expect(confidential.validate({ kind: 'confidential', at: 'confidential', id: 'cgs0', type: 'tdx' }, vctx(true, SNP_HOST))).toEqual([
      { path: 'confidential.type', message: 'tdx needs an Intel host with TDX enabled; this host: the probe found no sign of it' },
    ]);
  });

  test('TDX: kernel-irqchip=split on the machine', () => {
    const host: HostFacts = { ...SNP_HOST, confidential: { ...SNP_HOST.confidential, tdx: { available: true, evidence: ['tdx flag'] } } };
    const args = argv({ name: 'web', confidential: { type: 'tdx' } }, host);
    expect(args.slice(args.indexOf('-machine'), args.indexOf('-machine') + 2)).toEqual(['-machine', 'q35,confidential-guest-support=cgs0,kernel-irqchip=split']);
    expect(args).toContain('tdx-guest,id=cgs0');
  });
});

describe('shared folders (virtio-fs)', () => {
  test('the guest memory becomes a shared memfd named by -machine; each folder a vhost-user-fs device on its socket in the run directory', () => {
    const args = argv({ name: 'web', memory: '1G', filesystems: [{ tag: 'goship-0', source: '/srv/app' }, { tag: 'goship-1', source: '/srv/data', readOnly: true }], agent: false });
    expect(args).toEqual([
      ...HEAD(),
      '-machine',
      'q35,memory-backend=mem0',
      '-accel',
      'tcg,tb-size=256',
      '-cpu',
      'max',
      '-smp',
      'cpus=1,sockets=1,cores=1,threads=1',
      '-m',
      'size=1024M',
      '-object',
      'memory-backend-memfd,id=mem0,size=1073741824,share=on',
      ...MONITORS,
      ...NET,
      '-chardev',
      'socket,id=fs0,path=/run/goship/web/fs-goship-0/sock',
      '-device',
      'vhost-user-fs-pci,id=fs0-dev,chardev=fs0,tag=goship-0',
      '-chardev',
      'socket,id=fs1,path=/run/goship/web/fs-goship-1/sock',
      '-device',
      'vhost-user-fs-pci,id=fs1-dev,chardev=fs1,tag=goship-1',
      ...RNG,
      ...VMGENID,
      ...PANIC,
    ]);
    // Read-only is the daemon's business (a read-only bind mount), not QEMU's.
    expect(resolveSpec({ name: 'web', filesystems: [{ tag: 'a', source: '/x', readOnly: true }] }, ctx()).filesystems).toEqual([{ tag: 'a', source: '/x', readOnly: true, socket: '/run/goship/web/fs-a/sock' }]);
  });

  test('refuses a bad tag, a tag twice, a missing or comma folder, hugepages beside them, and more than 8', () => {
    const bad = (spec: Record<string, unknown>, exists: (p: string) => boolean = () => true): string[] => {
      try {
        resolveSpec({ name: 'web', ...spec }, { ...ctx(), exists });
        return [];
      } catch (err) {
        return (err as { issues: { path: string; message: string }[] }).issues.map((i) => `${i.path}: ${i.message}`);
      }
    };
    expect(bad({ filesystems: [{ tag: 'Bad_Tag', source: '/x' }] })).toEqual(['filesystems[0].tag: expected 1-36 lowercase letters, digits and dashes, starting with a letter or digit, got "Bad_Tag"']);
    expect(bad({ filesystems: [{ tag: 'a', source: '/x' }, { tag: 'a', source: '/y' }] })).toEqual(['filesystems[1].tag: the same tag as filesystems[0]: a']);
    expect(bad({ filesystems: [{ tag: 'a', source: '/x,y' }] })).toEqual(['filesystems[0].source: virtiofsd cannot take a path with a comma: /x,y']);
    expect(bad({ filesystems: [{ tag: 'a', source: '/gone' }] }, (p) => p !== '/gone')).toEqual(['filesystems[0].source: directory does not exist: /gone']);
    expect(bad({ memory: '2G', hugepages: '2M', filesystems: [{ tag: 'a', source: '/x' }] })).toEqual(['filesystems: shared folders need the guest memory in a shared memfd, hugepages put it on hugetlbfs: choose one']);
    expect(bad({ filesystems: Array.from({ length: 9 }, (_, i) => ({ tag: `t${i}`, source: '/x' })) })).toEqual(['filesystems: at most 8 shared folders, got 9']);
  });
});

describe('guest RAM in a file (templates and their clones)', () => {
  test("a template's VM maps its memory file shared, under the default RAM's name", () => {
    expect(ramFileArgs({ bytes: 1073741824, memPath: '/var/lib/goship/vms/warm-1/memory', share: true })).toEqual([
      '-machine',
      'memory-backend=pc.ram',
      '-object',
      'memory-backend-file,id=pc.ram,size=1073741824,mem-path=/var/lib/goship/vms/warm-1/memory,share=on',
    ]);
  });

  test('a clone maps its descriptor privately; a comma in a path is doubled', () => {
    expect(ramFileArgs({ bytes: 536870912, memPath: '/proc/self/fd/3', share: false }).at(-1)).toBe('memory-backend-file,id=pc.ram,size=536870912,mem-path=/proc/self/fd/3,share=off');
    expect(ramFileArgs({ bytes: 536870912, memPath: '/srv/a,b/memory', share: true }).at(-1)).toBe('memory-backend-file,id=pc.ram,size=536870912,mem-path=/srv/a,,b/memory,share=on');
  });
});
