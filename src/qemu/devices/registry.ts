/**
 * Every device kind and its builder, and the one place that turns a VmConfig
 * into its device list, in the fixed order the argv lists them.
 * The `DeviceRegistry` type makes a missing kind a compile error.
 */
import type { Issue } from '../../errors.ts';
import { AGENT_PORT_NAME } from '../../protocol/index.ts';
import type { VmConfig } from '../spec.ts';
import * as agent from './agent.ts';
import * as cdrom from './cdrom.ts';
import * as confidential from './confidential.ts';
import * as serialConsole from './console.ts';
import * as disk from './disk.ts';
import * as filesystem from './filesystem.ts';
import * as hugepages from './hugepages.ts';
import * as netUser from './net-user.ts';
import * as panic from './panic.ts';
import * as pflash from './pflash.ts';
import * as qmp from './qmp.ts';
import * as rng from './rng.ts';
import * as sharedMemory from './shared-memory.ts';
import * as vmgenid from './vmgenid.ts';
import type { Device, DeviceBuilder, DeviceContext, DeviceRegistry, ValidateContext } from './types.ts';

export const DEVICE_BUILDERS: DeviceRegistry = {
  hugepages,
  'shared-memory': sharedMemory,
  confidential,
  pflash,
  qmp,
  console: serialConsole,
  disk,
  cdrom,
  'net-user': netUser,
  filesystem,
  agent,
  rng,
  vmgenid,
  panic,
};

/** The ids the machine options refer to. */
export const MEMORY_BACKEND_ID = 'mem0';
export const CONFIDENTIAL_ID = 'cgs0';

/**
 * The devices of a VM, in argv order: memory backend, confidential object,
 * firmware flash, QMP (GoShip's, then people's), console, disks (boot disk
 * first), seed CD-ROM, NIC, shared folders, agent channel, RNG, VM
 * generation ID (not for a confidential guest), pvpanic.
 */
export function devicesOf(config: VmConfig): Device[] {
  const devices: Device[] = [];
  const { memory, boot } = config;
  if (memory.hugepages !== false && memory.hugepagePath !== undefined) {
    devices.push({ kind: 'hugepages', at: 'hugepages', id: MEMORY_BACKEND_ID, bytes: memory.bytes, pageSize: memory.hugepages, memPath: memory.hugepagePath });
  } else if (memory.shared) {
    devices.push({ kind: 'shared-memory', at: 'filesystems', id: MEMORY_BACKEND_ID, bytes: memory.bytes });
  }
  const cgs = config.confidential;
  if (cgs !== undefined) {
    devices.push(cgs.type === 'tdx' ? { kind: 'confidential', at: 'confidential', id: CONFIDENTIAL_ID, type: 'tdx' } : { kind: 'confidential', at: 'confidential', id: CONFIDENTIAL_ID, ...cgs });
  }
  if (boot.kind === 'firmware' && boot.firmware === 'uefi') {
    devices.push({ kind: 'pflash', at: 'boot.ovmfCode', unit: 0, path: boot.ovmfCode, readOnly: true });
    if (boot.ovmfVars !== undefined) devices.push({ kind: 'pflash', at: 'boot.ovmfVars', unit: 1, path: boot.ovmfVars, readOnly: false });
  }
  devices.push({ kind: 'qmp', at: 'paths.qmpSocket', id: 'qmp0', socket: config.paths.qmpSocket });
  devices.push({ kind: 'qmp', at: 'paths.qmpUserSocket', id: 'qmp1', socket: config.paths.qmpUserSocket });
  devices.push({ kind: 'console', at: 'paths.consoleSocket', socket: config.paths.consoleSocket });
  config.disks.forEach((d, i) => {
    devices.push({
      kind: 'disk',
      at: `disks[${i}]`,
      id: `disk${i}`,
      ...d,
      bootIndex: i === 0 && boot.kind === 'firmware' ? 1 : undefined,
    });
  });
  if (config.seed !== undefined) devices.push({ kind: 'cdrom', at: 'seed', id: 'seed', path: config.seed });
  if (config.network.mode === 'user') devices.push({ kind: 'net-user', at: 'network', id: 'net0', forwards: config.network.forwards });
  config.filesystems.forEach((f, i) => devices.push({ kind: 'filesystem', at: `filesystems[${i}]`, id: `fs${i}`, tag: f.tag, socket: f.socket, source: f.source }));
  if (config.agent) devices.push({ kind: 'agent', at: 'paths.agentSocket', socket: config.paths.agentSocket, portName: AGENT_PORT_NAME });
  devices.push({ kind: 'rng', at: 'rng', id: 'rng0' });
  if (cgs === undefined) devices.push({ kind: 'vmgenid', at: 'vmgenid', id: 'vmgenid0' });
  devices.push({ kind: 'panic', at: 'panic', id: 'panic0' });
  return devices;
}

function builderOf<D extends Device>(part: D): DeviceBuilder<D> {
  return DEVICE_BUILDERS[part.kind] as unknown as DeviceBuilder<D>;
}

/** One device's arguments. */
export function deviceArgs(part: Device, ctx: DeviceContext): string[] {
  return builderOf(part).toArgs(part, ctx);
}

/** One device's problems. */
export function validateDevice(part: Device, ctx: ValidateContext): Issue[] {
  return builderOf(part).validate(part, ctx);
}
