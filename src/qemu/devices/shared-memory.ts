/**
 * Guest RAM that another process may map: a memfd shared with the daemons of
 * vhost-user devices (virtiofsd for shared folders). `-machine
 * memory-backend=mem0` points the machine at it; `-m` stays and must match.
 *
 *   -object memory-backend-memfd,id=mem0,size=1073741824,share=on
 */
import type { Issue } from '../../errors.ts';
import { qemuOpts } from '../opts.ts';
import type { DeviceContext, SharedMemoryDevice, ValidateContext } from './types.ts';

export function validate(_part: SharedMemoryDevice, _ctx: ValidateContext): Issue[] {
  return [];
}

export function toArgs(part: SharedMemoryDevice, _ctx: DeviceContext): string[] {
  return ['-object', qemuOpts('memory-backend-memfd', { id: part.id, size: part.bytes, share: true })];
}
