import { describe, expect, it } from 'vitest';
import type { HostFacts } from '../../src/qemu/index.ts';
import { parsePort, portClashes, validateProjectOptions } from '../../src/runtime/projects.ts';
import type { Project } from '../../src/store/index.ts';
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

describe('portClashes', () => {
  it('names the project that already forwards a host port', () => {
    const other = { name: 'api', spec: { ports: [{ proto: 'tcp', host: 8080, guest: 80 }] } } as unknown as Project;
    expect(portClashes({ api: other }, [{ proto: 'tcp', host: 8080, guest: 8080 }])).toEqual([
      { path: '--port[0]', message: 'host port tcp:8080 is already forwarded by project api' },
    ]);
    expect(portClashes({ api: other }, [{ proto: 'udp', host: 8080, guest: 8080 }])).toEqual([]);
  });
});
