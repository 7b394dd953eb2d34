/**
 * A QMP monitor on a unix socket QEMU listens on. Every VM has two: `qmp0`
 * for GoShip (its monitor process holds it for the VM's whole life) and
 * `qmp1` for people (`vm qmp`, qmp-shell, socat), so a person holding a
 * connection never blocks GoShip: a QMP socket serves one client at a time.
 *
 *   -chardev socket,id=qmp0,path=QMP_SOCK,server=on,wait=off
 *   -mon chardev=qmp0,mode=control
 */
import type { Issue } from '../../errors.ts';
import { qemuOpts } from '../opts.ts';
import { socketPath } from './checks.ts';
import type { DeviceContext, QmpDevice, ValidateContext } from './types.ts';

export function validate(part: QmpDevice, _ctx: ValidateContext): Issue[] {
  return socketPath(part.socket, part.at);
}

export function toArgs(part: QmpDevice, _ctx: DeviceContext): string[] {
  return [
    '-chardev',
    qemuOpts('socket', { id: part.id, path: part.socket, server: true, wait: false }),
    '-mon',
    qemuOpts(undefined, { chardev: part.id, mode: 'control' }),
  ];
}
