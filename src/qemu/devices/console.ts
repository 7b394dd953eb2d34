/**
 * The serial console (ttyS0) written to a log file, as an explicit ISA serial
 * device (what `-serial chardev:console0` would create implicitly).
 *
 *   -chardev file,id=console0,path=CONSOLE_LOG
 *   -device isa-serial,id=serial0,chardev=console0
 */
import type { Issue } from '../../errors.ts';
import { qemuOpts } from '../opts.ts';
import { plainPath } from './checks.ts';
import type { ConsoleDevice, DeviceContext, ValidateContext } from './types.ts';

export function validate(part: ConsoleDevice, _ctx: ValidateContext): Issue[] {
  return plainPath(part.path, part.at);
}

export function toArgs(part: ConsoleDevice, _ctx: DeviceContext): string[] {
  return [
    '-chardev',
    qemuOpts('file', { id: 'console0', path: part.path }),
    '-device',
    qemuOpts('isa-serial', { id: 'serial0', chardev: 'console0' }),
  ];
}
