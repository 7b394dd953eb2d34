/**
 * The guest agent's channel: a virtio-serial controller, a unix socket
 * chardev QEMU listens on, and one named port (`/dev/virtio-ports/NAME` in the
 * guest).
 *
 *   -device virtio-serial-pci,id=vser0,max_ports=2
 *   -chardev socket,id=agent0,path=AGENT_SOCK,server=on,wait=off
 *   -device virtserialport,id=agent0-port,bus=vser0.0,nr=1,chardev=agent0,name=org.goship.agent.0
 *
 * Port 0 is reserved for a virtconsole, so the agent is port 1 and
 * `max_ports` is 2: it must count every port number in use, or QEMU refuses
 * the port with "Out-of-range port id".
 */
import type { Issue } from '../../errors.ts';
import { qemuOpts } from '../opts.ts';
import { socketPath } from './checks.ts';
import type { AgentDevice, DeviceContext, ValidateContext } from './types.ts';

export const AGENT_PORT_NR = 1;
/** Highest port number in use + 1. */
export const VIRTIO_SERIAL_MAX_PORTS = AGENT_PORT_NR + 1;

export function validate(part: AgentDevice, _ctx: ValidateContext): Issue[] {
  return socketPath(part.socket, part.at);
}

export function toArgs(part: AgentDevice, _ctx: DeviceContext): string[] {
  return [
    '-device',
    qemuOpts('virtio-serial-pci', { id: 'vser0', max_ports: VIRTIO_SERIAL_MAX_PORTS }),
    '-chardev',
    qemuOpts('socket', { id: 'agent0', path: part.socket, server: true, wait: false }),
    '-device',
    qemuOpts('virtserialport', { id: 'agent0-port', bus: 'vser0.0', nr: AGENT_PORT_NR, chardev: 'agent0', name: part.portName }),
  ];
}
