/**
 * Host ports: one owner per host port across everything GoShip runs (every
 * VM's forwards, and so every project's), and none that another program on
 * the host has bound. The pure part finds owners in a state; the effectful
 * part asks the kernel whether a port can be bound right now.
 */
import { createSocket } from 'node:dgram';
import { createServer } from 'node:net';
import type { Issue } from '../errors.ts';
import type { PortForward, State } from '../store/index.ts';

/** The address a forward listens on when none is given (QEMU would otherwise listen on every address). */
export const DEFAULT_HOST_ADDR = '127.0.0.1';

/** Pure: `8080:80`, `tcp:8080:80`, `udp:5353:53` → a forward, or an issue. */
export function parsePort(text: string, path: string): PortForward | Issue {
  const m = /^(?:(tcp|udp):)?(\d{1,5}):(\d{1,5})$/.exec(text);
  const bad = (why: string): Issue => ({ path, message: `${why}; expected HOST:GUEST with ports 1-65535, optionally prefixed tcp: or udp:, got "${text}"` });
  if (!m) return bad('not a port mapping');
  const host = Number(m[2]);
  const guest = Number(m[3]);
  if (host < 1 || host > 65535) return bad(`host port ${host} is out of range`);
  if (guest < 1 || guest > 65535) return bad(`guest port ${guest} is out of range`);
  return { proto: (m[1] as 'tcp' | 'udp' | undefined) ?? 'tcp', host, guest };
}

/** Pure: `tcp:8080` style key of a host port. */
export function portKey(p: { proto: 'tcp' | 'udp'; host: number }): string {
  return `${p.proto}:${p.host}`;
}

/** A host port: its protocol and number. */
export type HostPort = Pick<PortForward, 'proto' | 'host'>;

/** Pure: who forwards each host port now: every VM's recorded forwards ("project web", "VM lab"), and every app's ports ("app web/api"). */
export function portOwners(state: State): Map<string, string> {
  const owners = new Map<string, string>();
  for (const vm of Object.values(state.vms)) {
    const network = (vm.config as { network?: { forwards?: Array<{ proto?: 'tcp' | 'udp'; host: number }> } }).network;
    for (const f of network?.forwards ?? []) {
      owners.set(portKey({ proto: f.proto ?? 'tcp', host: f.host }), vm.project ? `project ${vm.project}` : `VM ${vm.name}`);
    }
  }
  // An app's ports are its project VM's forwards too: the app is their owner.
  for (const a of Object.values(state.apps)) for (const p of a.spec?.ports ?? []) owners.set(portKey(p), `app ${a.project}/${a.name}`);
  return owners;
}

/** Pure: an issue for each forward whose host port someone else owns (`self` may keep its own). */
export function portClashes(state: State, ports: HostPort[], self?: string, path = '--port'): Issue[] {
  const owners = portOwners(state);
  const issues: Issue[] = [];
  ports.forEach((p, i) => {
    const owner = owners.get(portKey(p));
    if (owner !== undefined && owner !== self) issues.push({ path: `${path}[${i}]`, message: `host port ${portKey(p)} is already forwarded by ${owner}` });
  });
  return issues;
}

/** Whether `proto:addr:port` can be bound on this host right now (nothing else listens there). */
export function hostPortFree(proto: 'tcp' | 'udp', port: number, addr = DEFAULT_HOST_ADDR): Promise<boolean> {
  return new Promise((resolve) => {
    if (proto === 'udp') {
      const s = createSocket('udp4');
      s.once('error', () => {
        s.close();
        resolve(false);
      });
      s.bind(port, addr, () => s.close(() => resolve(true)));
      return;
    }
    const server = createServer();
    server.once('error', () => resolve(false));
    server.listen({ port, host: addr, exclusive: true }, () => server.close(() => resolve(true)));
  });
}

/** An issue for each forward whose host port another program has bound. */
/**
 * Every reason the host ports cannot be forwarded for `self`: forwarded by
 * another owner, or (when no GoShip owner holds them) bound by another
 * program on this host. A port `self` already forwards is its own.
 */
export async function takenPorts(state: State, ports: HostPort[], self?: string, path = '--port'): Promise<Issue[]> {
  const owners = portOwners(state);
  const issues = portClashes(state, ports, self, path);
  for (const [i, p] of ports.entries()) {
    if (owners.has(portKey(p))) continue;
    if (!(await hostPortFree(p.proto, p.host))) issues.push({ path: `${path}[${i}]`, message: `host port ${portKey(p)} is in use by another program on this host` });
  }
  return issues;
}
