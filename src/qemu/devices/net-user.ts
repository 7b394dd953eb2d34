/**
 * User-mode networking (slirp) with host → guest port forwards, and a virtio
 * NIC without an option ROM (no iPXE: GoShip never network-boots).
 *
 *   -netdev user,id=net0,hostfwd=tcp:127.0.0.1:2222-:22
 *   -device virtio-net-pci,id=nic0,netdev=net0,romfile=
 */
import type { Issue } from '../../errors.ts';
import { qemuOpts } from '../opts.ts';
import { DEFAULT_UNPRIVILEGED_PORT_START, type ForwardConfig, type HostFacts } from '../spec.ts';
import type { DeviceContext, NetUserDevice, ValidateContext } from './types.ts';

/** `tcp:127.0.0.1:2222-:22` (QEMU's `hostfwd=[tcp|udp]:[hostaddr]:hostport-[guestaddr]:guestport`). */
export function hostfwd(f: ForwardConfig): string {
  return `${f.proto}:${f.hostAddr}:${f.host}-:${f.guest}`;
}

/**
 * Pure: a host port QEMU could not bind. QEMU never runs privileged (as root
 * GoShip runs it as the VM's own identity, src/jail), and the kernel lets no
 * unprivileged process bind a port below `net.ipv4.ip_unprivileged_port_start`.
 */
export function privilegedPortIssue(port: number, host: Pick<HostFacts, 'unprivilegedPortStart'>, path: string): Issue | undefined {
  const start = host.unprivilegedPortStart ?? DEFAULT_UNPRIVILEGED_PORT_START;
  if (port >= start) return undefined;
  return {
    path,
    message: `host port ${port} is below ${start}: QEMU runs unprivileged (as root, as the VM's own identity) and this host lets no unprivileged process bind it (net.ipv4.ip_unprivileged_port_start = ${start}); forward a port of ${start} or more, or lower that sysctl`,
  };
}

/** Two forwards of the same protocol cannot listen on the same host port, and none on a port QEMU may not bind. */
export function validate(part: NetUserDevice, ctx: ValidateContext): Issue[] {
  const issues: Issue[] = [];
  const seen = new Map<string, number>();
  part.forwards.forEach((f, i) => {
    const low = privilegedPortIssue(f.host, ctx.host, `${part.at}.forwards[${i}].host`);
    if (low) issues.push(low);
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
