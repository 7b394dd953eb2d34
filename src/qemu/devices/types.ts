/**
 * Devices: each part of the VM that contributes its own arguments is a
 * `kind`-tagged value with one file exporting `validate(part, ctx)` and
 * `toArgs(part, ctx)`. `at` is the spec field the part comes from, so an issue
 * names what the user wrote (`disks[1].path`).
 */
import type { Issue } from '../../errors.ts';
import type { DiskConfig, ForwardConfig, HostFacts, HugepageSize, MachineType } from '../spec.ts';

export interface DiskDevice extends DiskConfig {
  kind: 'disk';
  at: string;
  /** Device id; node names are `ID-file` and `ID-format`. */
  id: string;
  /** Set on the boot disk under firmware boot. */
  bootIndex: number | undefined;
}

export interface CdromDevice {
  kind: 'cdrom';
  at: string;
  id: string;
  path: string;
}

export interface NetUserDevice {
  kind: 'net-user';
  at: string;
  /** The netdev id; the NIC's id is `nic` + the digits. */
  id: string;
  forwards: ForwardConfig[];
}

export interface AgentDevice {
  kind: 'agent';
  at: string;
  socket: string;
  portName: string;
}

export interface RngDevice {
  kind: 'rng';
  at: string;
  id: string;
}

export interface VmgenidDevice {
  kind: 'vmgenid';
  at: string;
  id: string;
}

export interface ConsoleDevice {
  kind: 'console';
  at: string;
  socket: string;
}

export interface QmpDevice {
  kind: 'qmp';
  at: string;
  /** `qmp0` (GoShip's) or `qmp1` (people's). */
  id: string;
  socket: string;
}

export interface PanicDevice {
  kind: 'panic';
  at: string;
  id: string;
}

export interface PflashDevice {
  kind: 'pflash';
  at: string;
  unit: 0 | 1;
  path: string;
  readOnly: boolean;
}

export interface HugepagesDevice {
  kind: 'hugepages';
  at: string;
  /** The backend's id, named by `-machine memory-backend=`. */
  id: string;
  bytes: number;
  pageSize: HugepageSize;
  memPath: string;
}

export interface SharedMemoryDevice {
  kind: 'shared-memory';
  at: string;
  /** The backend's id, named by `-machine memory-backend=`. */
  id: string;
  bytes: number;
}

export interface FilesystemDevice {
  kind: 'filesystem';
  at: string;
  /** The chardev's id; the device's is `ID-dev`. */
  id: string;
  tag: string;
  /** virtiofsd's socket, which QEMU connects to. */
  socket: string;
  /** The host directory virtiofsd serves (checked here; virtiofsd opens it, never QEMU). */
  source: string;
}

export type ConfidentialDevice =
  | { kind: 'confidential'; at: string; id: string; type: 'sev' | 'sev-es' | 'sev-snp'; policy: number; cbitpos: number; reducedPhysBits: number }
  | { kind: 'confidential'; at: string; id: string; type: 'tdx' };

export type Device =
  | HugepagesDevice
  | SharedMemoryDevice
  | ConfidentialDevice
  | PflashDevice
  | QmpDevice
  | ConsoleDevice
  | DiskDevice
  | CdromDevice
  | NetUserDevice
  | FilesystemDevice
  | AgentDevice
  | RngDevice
  | VmgenidDevice
  | PanicDevice;

export type DeviceKind = Device['kind'];

/** What rendering may know: never the filesystem or the clock. */
export interface DeviceContext {
  machine: MachineType;
}

/** What validation may know: host facts and an injected existence check. */
export interface ValidateContext extends DeviceContext {
  host: HostFacts;
  exists: (path: string) => boolean;
}

export interface DeviceBuilder<D extends Device = Device> {
  validate(part: D, ctx: ValidateContext): Issue[];
  toArgs(part: D, ctx: DeviceContext): string[];
}

export type DeviceRegistry = { [K in DeviceKind]: DeviceBuilder<Extract<Device, { kind: K }>> };
