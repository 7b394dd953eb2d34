/**
 * The serial console (ttyS0) on a unix socket QEMU listens on, as an explicit
 * ISA serial device (what `-serial chardev:console0` would create implicitly).
 * The VM's monitor reads it into console.log with a size cap and rotation: a
 * guest cannot fill the host's disk. With no reader connected QEMU drops the
 * output; it never blocks the guest.
 *
 *   -chardev socket,id=console0,path=CONSOLE_SOCK,server=on,wait=off
 *   -device isa-serial,id=serial0,chardev=console0
 */
import type { Issue } from '../../errors.ts';
import { qemuOpts } from '../opts.ts';
import { socketPath } from './checks.ts';
import type { ConsoleDevice, DeviceContext, ValidateContext } from './types.ts';

export function validate(part: ConsoleDevice, _ctx: ValidateContext): Issue[] {
  return socketPath(part.socket, part.at);
}

export function toArgs(part: ConsoleDevice, _ctx: DeviceContext): string[] {
  return [
    '-chardev',
    qemuOpts('socket', { id: 'console0', path: part.socket, server: true, wait: false }),
    '-device',
    qemuOpts('isa-serial', { id: 'serial0', chardev: 'console0' }),
  ];
}
