/** OpenSSH into a project's VM, its pure parts: the config block, the pinned host keys, vm tunnel's target. */
import { describe, expect, it } from 'vitest';
import { knownHostsText, sshAlias, sshConfigText } from '../../src/runtime/ssh.ts';
import { parseTunnelTarget } from '../../src/cli/commands/vm.ts';

const ED = 'AAAAC3NzaC1lZDI1NTE5AAAAIDe2cO7lYlFq2m1n6UoJ0K2uY8m3kqvS8a9Xj3aT2v1b';

describe('ssh-config', () => {
  it('is one Host block: the project\'s key, pinned host keys, and goshipctl as ProxyCommand, quoted for sh with % doubled', () => {
    const text = sshConfigText({
      alias: sshAlias('web'),
      user: 'goship',
      key: '/var/lib/goship/vms/web/ssh_key',
      knownHosts: '/var/lib/goship/vms/web/ssh_known_hosts',
      proxy: ['/usr/bin/env', 'GOSHIP_HOME=/home/a b/100%', '/usr/bin/node', "/opt/it's/goshipctl.cjs", 'vm', 'tunnel', 'web', '22'],
    });
    expect(text).toBe(
      [
        'Host goship-web',
        '  HostName goship-web',
        '  User goship',
        '  IdentityFile "/var/lib/goship/vms/web/ssh_key"',
        '  IdentitiesOnly yes',
        '  UserKnownHostsFile "/var/lib/goship/vms/web/ssh_known_hosts"',
        '  StrictHostKeyChecking yes',
        '  HostKeyAlias goship-web',
        "  ProxyCommand /usr/bin/env 'GOSHIP_HOME=/home/a b/100%%' /usr/bin/node '/opt/it'\\''s/goshipctl.cjs' vm tunnel web 22",
        '',
      ].join('\n'),
    );
  });

  it('refuses a path ssh_config cannot quote', () => {
    expect(() => sshConfigText({ alias: 'goship-x', user: 'goship', key: '/a"b', knownHosts: '/k', proxy: ['x'] })).toThrow(/cannot quote a path with a double quote/);
  });

  it("pins only whole host key lines of known types from the guest's answer, without their comments", () => {
    const printed = [`ssh-ed25519 ${ED} root@web`, 'ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBA== root@web', 'garbage', `ssh-ed25519 ${ED} x\u001b[2J`, 'ssh-dss AAAAB3NzaC1kc3MAAACBAP', `goship-other ssh-ed25519 ${ED}`, ''].join('\n');
    expect(knownHostsText('goship-web', printed)).toBe(
      [`goship-web ssh-ed25519 ${ED}`, 'goship-web ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBA==', `goship-web ssh-ed25519 ${ED}`, ''].join('\n'),
    );
    expect(knownHostsText('goship-web', 'no keys here\n')).toBe('');
  });
});

describe('vm tunnel', () => {
  it('takes a port of the guest\'s loopback or unix:/PATH, nothing else', () => {
    expect(parseTunnelTarget('22')).toEqual({ to: 'tcp', port: 22 });
    expect(parseTunnelTarget('65535')).toEqual({ to: 'tcp', port: 65535 });
    expect(parseTunnelTarget('unix:/run/docker.sock')).toEqual({ to: 'unix', path: '/run/docker.sock' });
    for (const bad of ['0', '65536', 'host:22', 'unix:run/x', 'unix:', '-1', '22x', '']) {
      expect(() => parseTunnelTarget(bad)).toThrow(`vm tunnel: expected a port (1-65535) on the guest's loopback or unix:/PATH, got ${JSON.stringify(bad)}`);
    }
  });
});
