/**
 * A virtio RNG fed by QEMU's built-in backend: the guest's entropy pool fills
 * at once, so nothing in early boot waits for randomness.
 *
 *   -device virtio-rng-pci,id=rng0
 */
import type { Issue } from '../../errors.ts';
import { qemuOpts } from '../opts.ts';
import type { DeviceContext, RngDevice, ValidateContext } from './types.ts';

export function validate(_part: RngDevice, _ctx: ValidateContext): Issue[] {
  return [];
}

export function toArgs(part: RngDevice, _ctx: DeviceContext): string[] {
  return ['-device', qemuOpts('virtio-rng-pci', { id: part.id })];
}
