/**
 * User-mode networking (slirp) with host → guest port forwards, and a virtio
 * NIC without an option ROM (no iPXE: GoShip never network-boots).
 *
 *   -netdev user,id=net0,hostfwd=tcp:127.0.0.1:2222-:22
 *   -device virtio-net-pci,id=nic0,netdev=net0,romfile=
 */
import type { Issue } from '../../errors.ts';
import { qemuOpts } from '../opts.ts';
import type { ForwardConfig } from '../spec.ts';
import type { DeviceContext, NetUserDevice, ValidateContext } from './types.ts';

/** `tcp:127.0.0.1:2222-:22` (QEMU's `hostfwd=[tcp|udp]:[hostaddr]:hostport-[guestaddr]:guestport`). */
export function hostfwd(f: ForwardConfig): string {
  return `${f.proto}:${f.hostAddr}:${f.host}-:${f.guest}`;
}

/** Two forwards of the same protocol cannot listen on the same host port. */
export function validate(part: NetUserDevice, _ctx: ValidateContext): Issue[] {
  const issues: Issue[] = [];
  const seen = new Map<string, number>();
  part.forwards.forEach((f, i) => {
    const key = `${f.proto}:${f.host}`;
    const first = seen.get(key);
    if (first === undefined) {
      seen.set(key, i);
    } else {
      issues.push({
        path: `${part.at}.forwards[${i}].host`,
        message: `${f.proto} host port ${f.host} is already forwarded by ${part.at}.forwards[${first}]; each host port can be forwarded once per protocol`,
      });
    }
  });
  return issues;
}

export function toArgs(part: NetUserDevice, _ctx: DeviceContext): string[] {
  const nic = part.id.replace(/^net/, 'nic');
  return [
    '-netdev',
    qemuOpts('user', { id: part.id, hostfwd: part.forwards.length > 0 ? part.forwards.map(hostfwd) : undefined }),
    '-device',
    qemuOpts('virtio-net-pci', { id: nic, netdev: part.id, romfile: '' }),
  ];
}
