/**
 * The pvpanic device: a guest kernel that panics tells QEMU (QMP
 * GUEST_PANICKED), and `-action panic=shutdown` makes QEMU shut down with
 * SHUTDOWN reason `guest-panic`. So the monitor records a panic from QEMU's
 * own evidence, never from the console text.
 *
 *   -device pvpanic,id=panic0
 *   -action panic=shutdown
 */
import type { Issue } from '../../errors.ts';
import { qemuOpts } from '../opts.ts';
import type { DeviceContext, PanicDevice, ValidateContext } from './types.ts';

export function validate(_part: PanicDevice, _ctx: ValidateContext): Issue[] {
  return [];
}

export function toArgs(part: PanicDevice, _ctx: DeviceContext): string[] {
  return ['-device', qemuOpts('pvpanic', { id: part.id }), '-action', qemuOpts(undefined, { panic: 'shutdown' })];
}
