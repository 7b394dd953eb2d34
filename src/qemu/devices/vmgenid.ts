/**
 * The VM generation ID (ACPI `QEMUVGID`): a 128-bit value the guest can read,
 * new in every QEMU (`guid=auto`) and announced to the guest after a restore
 * from a saved state. Linux (≥ 5.18, `CONFIG_VMGENID`) reseeds its random
 * generator when it changes, so two clones of one template, or a VM and its
 * resumed self, never go on from the same generator state. Not for a
 * confidential guest, whose memory QEMU cannot write.
 *
 *   -device vmgenid,id=vmgenid0,guid=auto
 */
import type { Issue } from '../../errors.ts';
import { qemuOpts } from '../opts.ts';
import type { DeviceContext, ValidateContext, VmgenidDevice } from './types.ts';

export function validate(_part: VmgenidDevice, _ctx: ValidateContext): Issue[] {
  return [];
}

export function toArgs(part: VmgenidDevice, _ctx: DeviceContext): string[] {
  return ['-device', qemuOpts('vmgenid', { id: part.id, guid: 'auto' })];
}
