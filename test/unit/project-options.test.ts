import { describe, expect, it } from 'vitest';
import type { HostFacts } from '../../src/qemu/index.ts';
import { projectStateFor, validateProjectOptions } from '../../src/runtime/projects.ts';
import { parsePort, portClashes, portOwners } from '../../src/runtime/ports.ts';
import { emptyState, type Project, type State, type Vm } from '../../src/store/index.ts';
import { ed25519PublicKey } from '../helpers/ssh-key.ts';

const none = { available: false, evidence: [] };
const host: HostFacts = {
  cpuCount: 4,
  memTotalBytes: 8 * 1024 ** 3,
  kvm: { usable: false, reason: 'test host' },
  confidential: { sev: none, sevEs: none, sevSnp: none, tdx: none },
};
const KEY = ed25519PublicKey('me@host');

function issues(o: Parameters<typeof validateProjectOptions>[0]) {
  try {
    validateProjectOptions(o, host);
  } catch (e) {
    return (e as { issues: unknown }).issues;
  }
  return [];
}

describe('parsePort', () => {
  it('reads HOST:GUEST with an optional protocol', () => {
    expect(parsePort('8080:80', 'p')).toEqual({ proto: 'tcp', host: 8080, guest: 80 });
    expect(parsePort('udp:5353:53', 'p')).toEqual({ proto: 'udp', host: 5353, guest: 53 });
  });
  it('refuses out-of-range and malformed mappings with the rule', () => {
    expect(parsePort('70000:22', '--port[0]')).toEqual({
      path: '--port[0]',
      message: 'host port 70000 is out of range; expected HOST:GUEST with ports 1-65535, optionally prefixed tcp: or udp:, got "70000:22"',
    });
    expect(parsePort('22', '--port[0]')).toMatchObject({ message: expect.stringMatching(/^not a port mapping; /) });
    expect(parsePort('0:22', 'p')).toMatchObject({ message: expect.stringMatching(/^host port 0 is out of range/) });
    expect(parsePort('22:0', 'p')).toMatchObject({ message: expect.stringMatching(/^guest port 0 is out of range/) });
  });
});

describe('validateProjectOptions', () => {
  it('fills the defaults', () => {
    expect(validateProjectOptions({ name: 'web' }, host)).toEqual({
      name: 'web',
      cpus: 1,
      memoryBytes: 1024 ** 3,
      diskBytes: 10 * 1024 ** 3,
      image: 'default',
      sshKeys: [],
      ports: [],
      restart: 'no',
      mounts: [],
    });
  });

  it('reports every bad option at once, each naming its flag', () => {
    expect(
      issues({ name: '../x', cpus: 1000, memory: '0', disk: 'abc', ports: ['70000:22', '2222:22', '2222:80'], sshKeys: ['not a key'] }),
    ).toEqual([
      { path: 'name', message: 'expected 1-63 lowercase letters, digits or "-", not starting with "-" (it is used in file names), got "../x"' },
      { path: '--cpus', message: "expected a whole number from 1 to 4 (this host's logical CPUs), got 1000" },
      { path: '--memory', message: expect.any(String) },
      { path: '--disk', message: expect.any(String) },
      { path: '--port[0]', message: expect.stringMatching(/^host port 70000 is out of range/) },
      { path: '--port[2]', message: 'host port tcp:2222 is already forwarded (to guest port 22)' },
      { path: '--ssh-key[0]', message: expect.any(String) },
    ]);
  });

  it('refuses memory beyond the host and zero CPUs', () => {
    expect(issues({ name: 'web', memory: '64G' })).toEqual([{ path: '--memory', message: '64G is more than this host has (8192M)' }]);
    expect(issues({ name: 'web', cpus: 0 })).toEqual([{ path: '--cpus', message: "expected a whole number from 1 to 4 (this host's logical CPUs), got 0" }]);
  });

  it('accepts a real key and the same port number for tcp and udp', () => {
    const v = validateProjectOptions({ name: 'dns', ports: ['5353:53', 'udp:5353:53'], sshKeys: [KEY] }, host);
    expect(v.ports).toEqual([
      { proto: 'tcp', host: 5353, guest: 53 },
      { proto: 'udp', host: 5353, guest: 53 },
    ]);
  });
});

describe('a host port QEMU could not bind', () => {
  it('--port 80:80 is refused at the boundary, with the sysctl that decides; a host that allows low ports takes it', () => {
    expect(issues({ name: 'web', ports: ['8080:80', '80:80'] })).toEqual([
      {
        path: '--port[1]',
        message: "host port 80 is below 1024: QEMU runs unprivileged (as root, as the VM's own identity) and this host lets no unprivileged process bind it (net.ipv4.ip_unprivileged_port_start = 1024); forward a port of 1024 or more, or lower that sysctl",
      },
    ]);
    expect(validateProjectOptions({ name: 'web', ports: ['80:80'] }, { ...host, unprivilegedPortStart: 80 }).ports).toEqual([{ proto: 'tcp', host: 80, guest: 80 }]);
  });
});

describe('host port owners', () => {
  const vm = (name: string, forwards: unknown[], project?: string): Vm =>
    ({ id: name, name, ...(project ? { project } : {}), config: { network: { mode: 'user', forwards } } }) as unknown as Vm;
  const state = (...vms: Vm[]): State => ({ ...emptyState(), vms: Object.fromEntries(vms.map((v) => [v.id, v])) });

  it('knows every VM\'s forwards, by project when the VM is a project\'s', () => {
    const s = state(vm('api', [{ proto: 'tcp', host: 8080, guest: 80 }, { host: 2222, guest: 22 }], 'api'), vm('lab', [{ proto: 'udp', host: 5353, guest: 53 }]));
    expect([...portOwners(s)]).toEqual([
      ['tcp:8080', 'project api'],
      ['tcp:2222', 'project api'],
      ['udp:5353', 'VM lab'],
    ]);
  });

  it('names the owner of a host port already forwarded; the protocol counts; the owner may keep its own', () => {
    const s = state(vm('api', [{ proto: 'tcp', host: 8080, guest: 80 }], 'api'));
    expect(portClashes(s, [{ proto: 'tcp', host: 8080 }])).toEqual([
      { path: '--port[0]', message: 'host port tcp:8080 is already forwarded by project api' },
    ]);
    expect(portClashes(s, [{ proto: 'udp', host: 8080 }])).toEqual([]);
    expect(portClashes(s, [{ proto: 'tcp', host: 8080 }], 'project api')).toEqual([]);
  });
});

describe('projectStateFor: a project follows its VM', () => {
  const project = (state: Project['state'], op?: Project['op']) => ({ name: 'web', state, ...(op ? { op } : {}) }) as Project;
  const vm = (state: Vm['state'], end?: string, op?: Vm['op']) => ({ name: 'web', state, ...(end ? { end: { summary: end } } : {}), ...(op ? { op } : {}) }) as unknown as Vm;
  const op = { kind: 'stop' as const, pid: 1, startedAt: '2026-12-06T00:00:00.000Z' };
  it.each([
    ['ready', 'crashed', { state: 'crashed', lastError: "its VM crashed: QEMU was killed by SIGKILL; start it again: goshipctl project start web (the VM's logs: goshipctl vm status web)" }],
    ['ready', 'stopped', { state: 'stopped', lastError: 'its VM stopped: QEMU was killed by SIGKILL; start it: goshipctl project start web' }],
    ['crashed', 'ready', { state: 'ready' }],
    ['stopped', 'running', { state: 'ready' }],
    ['ready', 'ready', undefined],
    ['stopped', 'stopped', undefined],
    ['broken', 'crashed', undefined],
    ['creating', 'crashed', undefined],
    ['ready', 'suspended', { state: 'suspended' }],
    ['suspended', 'ready', { state: 'ready' }],
    ['suspended', 'suspended', undefined],
    ['suspended', 'stopped', { state: 'stopped', lastError: "its VM's saved state is gone: QEMU was killed by SIGKILL" }],
  ] as const)('project %s, VM %s', (p, v, expected) => {
    expect(projectStateFor(project(p), vm(v, 'QEMU was killed by SIGKILL'))).toEqual(expected);
  });
  it('a project or VM a command is working on keeps its state; a missing VM decides nothing', () => {
    expect(projectStateFor(project('ready', op), vm('crashed'))).toBeUndefined();
    expect(projectStateFor(project('ready'), vm('stopped', undefined, op))).toBeUndefined();
    expect(projectStateFor(project('ready'), undefined)).toBeUndefined();
  });
});
