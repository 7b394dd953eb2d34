/**
 * VmConfig → argv: pure, total for a valid VmConfig, and in a fixed order:
 *
 *   BINARY
 *   -name guest=NAME,process=goship-ID  -S  -no-reboot  -nodefaults -no-user-config -display none
 *   [-sandbox …]  -pidfile PIDFILE
 *   -machine TYPE[,memory-backend=mem0][,pflash0=…,pflash1=…][,confidential-guest-support=cgs0][,kernel-irqchip=split]
 *   -accel kvm|tcg  -cpu MODEL  -smp cpus=…,sockets=…,cores=…,threads=…  -m size=…M
 *   [-kernel K [-initrd I] [-append CMDLINE]]
 *   devices (see devices/registry.ts: memory backend, confidential object,
 *            pflash, QMP, console, disks, seed, NIC, agent, RNG)
 *
 * `-kernel`, `-initrd`, `-append` and `-pidfile` take their value verbatim (no
 * option syntax, so no `,,`); everything else goes through qemuOpts.
 */
import { qemuOpts } from './opts.ts';
import { MiB } from './sizes.ts';
import { pflashNode } from './devices/pflash.ts';
import { CONFIDENTIAL_ID, MEMORY_BACKEND_ID, deviceArgs, devicesOf } from './devices/registry.ts';
import type { DeviceContext } from './devices/types.ts';
import type { VmConfig } from './spec.ts';

export const DEFAULT_QEMU_BINARY = 'qemu-system-x86_64';

/** seccomp: no obsolete syscalls, no privilege changes, no fork/exec, no scheduler/affinity changes. */
export const SANDBOX_OPTS = { obsolete: 'deny', elevateprivileges: 'deny', spawn: 'deny', resourcecontrol: 'deny' } as const;

/** The marker `/proc/PID/cmdline` carries, so a reused PID is never mistaken for this VM. */
export function processMarker(id: string): string {
  return `goship-${id}`;
}

/** `-machine` with the properties the other parts need. */
export function machineArgs(config: VmConfig): string[] {
  const uefi = config.boot.kind === 'firmware' && config.boot.firmware === 'uefi' ? config.boot : undefined;
  return [
    '-machine',
    qemuOpts(config.machine, {
      'memory-backend': config.memory.hugepages !== false || config.memory.shared ? MEMORY_BACKEND_ID : undefined,
      pflash0: uefi ? pflashNode(0) : undefined,
      pflash1: uefi?.ovmfVars !== undefined ? pflashNode(1) : undefined,
      'confidential-guest-support': config.confidential ? CONFIDENTIAL_ID : undefined,
      'kernel-irqchip': config.confidential?.type === 'tdx' ? 'split' : undefined,
    }),
  ];
}

/**
 * TCG's translation buffer, in MiB (`-accel tcg,tb-size=`). QEMU 7.2 takes
 * 1 GiB on a host with 8 GiB or more, and a boot fills most of it (code is
 * translated again each time the guest rewrites its pages), which then stays
 * the VM's: a settled 1 GiB guest's QEMU had 1.08 GB of PSS, with 256 MiB
 * 0.70 GB, and booted no slower (docs/decisions.md).
 */
export const TCG_TB_SIZE_MIB = 256;

/** `-accel`, `-cpu`, `-smp`, `-m`. Memory is a whole number of MiB (validated). */
export function computeArgs(config: VmConfig): string[] {
  const { cpu } = config;
  return [
    '-accel',
    qemuOpts(config.accel, config.accel === 'tcg' ? { 'tb-size': TCG_TB_SIZE_MIB } : {}),
    '-cpu',
    qemuOpts(cpu.model, {}),
    '-smp',
    qemuOpts(undefined, { cpus: cpu.count, sockets: cpu.sockets, cores: cpu.cores, threads: cpu.threads }),
    '-m',
    qemuOpts(undefined, { size: `${config.memory.bytes / MiB}M` }),
  ];
}

/** Direct kernel boot; nothing for firmware boot (SeaBIOS is the default, OVMF is pflash devices). */
export function bootArgs(config: VmConfig): string[] {
  const { boot } = config;
  if (boot.kind !== 'kernel') return [];
  const args = ['-kernel', boot.kernel];
  if (boot.initrd !== undefined) args.push('-initrd', boot.initrd);
  if (boot.cmdline !== undefined) args.push('-append', boot.cmdline);
  return args;
}

/** The whole command line, `binary` first. */
export function buildArgv(config: VmConfig, binary = DEFAULT_QEMU_BINARY): string[] {
  const ctx: DeviceContext = { machine: config.machine };
  return [
    binary,
    '-name',
    qemuOpts(undefined, { guest: config.name, process: processMarker(config.id) }),
    '-S',
    // A guest reboot ends this QEMU (SHUTDOWN guest-reset) and the VM's
    // monitor starts a fresh one: under TCG a reset inside the same process
    // boots several times slower than a new process (docs/images.md, Reboots).
    '-no-reboot',
    '-nodefaults',
    '-no-user-config',
    '-display',
    'none',
    ...(config.sandbox ? ['-sandbox', qemuOpts('on', SANDBOX_OPTS)] : []),
    '-pidfile',
    config.paths.pidfile,
    ...machineArgs(config),
    ...computeArgs(config),
    ...bootArgs(config),
    ...devicesOf(config).flatMap((d) => deviceArgs(d, ctx)),
  ];
}

/**
 * The id of the RAM backend QEMU makes itself for `pc` and `q35` machines
 * (query-machines' `default-ram-id`). A backend of this id named by
 * `-machine memory-backend=` holds the guest's RAM under the same name as the
 * default RAM, so a state saved by either restores into the other.
 */
const DEFAULT_RAM_ID = 'pc.ram';

/**
 * Pure: the words that put the guest's RAM in a file, appended to a VM's argv
 * for one QEMU only (-machine options merge). `share: true` maps it shared
 * (a template's VM: its RAM is then the file, and a save with
 * `x-ignore-shared` leaves it out); `share: false` maps it privately, copy on
 * write (a clone, on its template's memory: `/proc/self/fd/N`).
 */
export function ramFileArgs(o: { bytes: number; memPath: string; share: boolean }): string[] {
  return [
    '-machine',
    qemuOpts(undefined, { 'memory-backend': DEFAULT_RAM_ID }),
    '-object',
    qemuOpts('memory-backend-file', { id: DEFAULT_RAM_ID, size: o.bytes, 'mem-path': o.memPath, share: o.share }),
  ];
}
