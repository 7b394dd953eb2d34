import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { ValidationError } from '../../src/errors.ts';
import {
  renderMetaData,
  renderNetworkConfig,
  renderUserData,
  seedEntries,
} from '../../src/cloudinit/index.ts';
import type { AgentInstall, SeedOptions, UserDataOptions } from '../../src/cloudinit/index.ts';

// Real public keys made by ssh-keygen (the private halves were thrown away).
const ED25519 = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPPx9gJJ/+Mw2jThY4jRCenm2eWThJNxBivYvkc2XGMU lead@goship';
const ECDSA =
  'ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBPSoURm7Z9mw1WZyIrhzRx++XVnr1wZ+rM5sevAqysLUoK1FCn7RUI0UMhUXvVcmi5wSPBrHSYkzF/9fYLCamks= ops';

const HOSTNAME_RULE =
  'expected an RFC 1123 label (1-63 letters, digits or hyphens, not starting or ending with a hyphen)';
const INSTANCE_ID_RULE =
  'expected 1-128 printable ASCII characters other than space and "/" (cloud-init makes it a directory name)';
const PATH_RULE = 'expected an absolute path without ".", ".." or empty segments';

const UNIT = [
  '[Unit]',
  'Description=GoShip guest agent',
  '',
  '[Service]',
  'ExecStart=/usr/bin/node /usr/local/lib/goship/goship-agent.mjs',
  'Restart=always',
  '',
  '[Install]',
  'WantedBy=multi-user.target',
  '',
].join('\n');

const AGENT: AgentInstall = {
  bundle: new TextEncoder().encode('#!/usr/bin/env node\nconsole.log("agent");\n'),
  unit: UNIT,
  start: '#!/bin/sh\nexec /usr/bin/node /usr/local/lib/goship/goship-agent.mjs\n',
  setup: '#!/bin/sh\ncommand -v node\n',
};

/** Runs `fn`, expects a ValidationError, returns it. */
function validationError(fn: () => unknown): ValidationError {
  try {
    fn();
  } catch (error) {
    expect(error).toBeInstanceOf(ValidationError);
    return error as ValidationError;
  }
  throw new Error('expected a ValidationError, nothing was thrown');
}

describe('renderMetaData', () => {
  it('writes instance-id and local-hostname', () => {
    expect(renderMetaData({ instanceId: 'iid-web1-0001', hostname: 'web1' })).toBe(
      'instance-id: iid-web1-0001\nlocal-hostname: web1\n',
    );
  });

  it('quotes values PyYAML (YAML 1.1) would read as booleans or numbers', () => {
    expect(renderMetaData({ instanceId: '0755', hostname: 'yes' })).toBe(
      'instance-id: "0755"\nlocal-hostname: "yes"\n',
    );
  });

  it('refuses an empty instance-id, verbatim', () => {
    const error = validationError(() => renderMetaData({ instanceId: '', hostname: 'web1' }));
    expect(error.code).toBe('EINVALID');
    expect(error.issues).toEqual([{ path: 'instanceId', message: `${INSTANCE_ID_RULE}, got ""` }]);
    expect(error.message).toBe(`invalid cloud-init seed: instanceId: ${INSTANCE_ID_RULE}, got ""`);
  });

  it('refuses an instance-id with a slash or a space', () => {
    const error = validationError(() => renderMetaData({ instanceId: 'a/b c', hostname: 'web1' }));
    expect(error.issues).toEqual([{ path: 'instanceId', message: `${INSTANCE_ID_RULE}, got "a/b c"` }]);
  });

  it('refuses a bad hostname, verbatim', () => {
    const error = validationError(() => renderMetaData({ instanceId: 'iid-1', hostname: 'web_1' }));
    expect(error.message).toBe(`invalid cloud-init seed: hostname: ${HOSTNAME_RULE}, got "web_1"`);
  });

  it.each([['-web'], ['web-'], [''], ['a'.repeat(64)], ['web.example']])('refuses hostname %j', (hostname) => {
    const error = validationError(() => renderMetaData({ instanceId: 'iid-1', hostname }));
    expect(error.issues.map((i) => i.path)).toEqual(['hostname']);
  });

  it.each([['a'], ['web-1'], ['A1'], ['a'.repeat(63)], ['123']])('accepts hostname %j', (hostname) => {
    expect(() => renderMetaData({ instanceId: 'iid-1', hostname })).not.toThrow();
  });
});

describe('renderUserData', () => {
  const full: UserDataOptions = {
    hostname: 'web1',
    fqdn: 'web1.example.test',
    sshKeys: [`${ED25519}\n`, ECDSA],
    writeFiles: [
      { path: '/etc/motd', content: 'Welcome to GoShip\nline two\n' },
      { path: '/home/goship/.config/app.json', content: '{"a": 1}', permissions: 0o600, owner: 'goship:goship' },
      { path: '/opt/blob.bin', content: new Uint8Array([0, 1, 2, 255]), permissions: 0o755 },
    ],
    runcmd: [
      ['echo', 'hello world'],
      ['sh', '-c', "echo 'quoted' > /tmp/x"],
    ],
  };

  it('writes users with keys, write_files and runcmd', () => {
    expect(renderUserData(full)).toBe(
      [
        '#cloud-config',
        'hostname: web1',
        'preserve_hostname: false',
        'fqdn: web1.example.test',
        'users:',
        '  - name: goship',
        '    sudo: ALL=(ALL) NOPASSWD:ALL',
        '    shell: /bin/bash',
        '    lock_passwd: true',
        '    ssh_authorized_keys:',
        `      - ${ED25519}`,
        `      - ${ECDSA}`,
        'ssh_pwauth: false',
        'write_files:',
        '  - path: /etc/motd',
        '    content: |',
        '      Welcome to GoShip',
        '      line two',
        '    permissions: "0644"',
        '    owner: root:root',
        '  - path: /home/goship/.config/app.json',
        `    content: '{"a": 1}'`,
        '    permissions: "0600"',
        '    owner: goship:goship',
        '    defer: true',
        '  - path: /opt/blob.bin',
        '    encoding: b64',
        '    content: AAEC/w==',
        '    permissions: "0755"',
        '    owner: root:root',
        'runcmd:',
        '  - - echo',
        '    - hello world',
        '  - - sh',
        '    - -c',
        "    - echo 'quoted' > /tmp/x",
        '',
      ].join('\n'),
    );
  });

  it('reads back (as YAML 1.1, like PyYAML) to exactly what was asked', () => {
    const text = renderUserData(full);
    expect(text.startsWith('#cloud-config\n')).toBe(true);
    const doc = parse(text, { version: '1.1' }) as Record<string, unknown>;
    expect(doc).toEqual({
      hostname: 'web1',
      preserve_hostname: false,
      fqdn: 'web1.example.test',
      users: [
        {
          name: 'goship',
          sudo: 'ALL=(ALL) NOPASSWD:ALL',
          shell: '/bin/bash',
          lock_passwd: true,
          ssh_authorized_keys: [ED25519, ECDSA],
        },
      ],
      ssh_pwauth: false,
      write_files: [
        { path: '/etc/motd', content: 'Welcome to GoShip\nline two\n', permissions: '0644', owner: 'root:root' },
        {
          path: '/home/goship/.config/app.json',
          content: '{"a": 1}',
          permissions: '0600',
          owner: 'goship:goship',
          defer: true,
        },
        { path: '/opt/blob.bin', encoding: 'b64', content: 'AAEC/w==', permissions: '0755', owner: 'root:root' },
      ],
      runcmd: [
        ['echo', 'hello world'],
        ['sh', '-c', "echo 'quoted' > /tmp/x"],
      ],
    });
  });

  it('keeps awkward text content byte for byte', () => {
    const awkward = [
      '  leading spaces\n',
      'crlf\r\nline\r\n',
      'bell\u0007 and é\n',
      'no newline at end',
      'trailing spaces  \n',
      'tab\there\n',
      'yes',
      '~',
      '',
    ];
    const text = renderUserData({
      hostname: 'web1',
      sshKeys: [],
      writeFiles: awkward.map((content, i) => ({ path: `/tmp/f${i}`, content })),
    });
    const doc = parse(text, { version: '1.1' }) as { write_files: { content: string }[] };
    expect(doc.write_files.map((f) => f.content)).toEqual(awkward);
  });

  it('writes the agent install after the caller’s files and commands; names a custom user without sudo', () => {
    const text = renderUserData({
      hostname: 'on',
      sshKeys: [],
      user: { name: 'debian', sudo: false },
      writeFiles: [{ path: '/etc/goship/agent.json', content: '{}\n', permissions: 0o600 }],
      runcmd: [['apt-get', 'install', '-y', 'nodejs']],
      agent: AGENT,
    });
    const bundle64 = Buffer.from(AGENT.bundle).toString('base64');
    expect(text).toBe(
      [
        '#cloud-config',
        'hostname: "on"',
        'preserve_hostname: false',
        'users:',
        '  - name: debian',
        '    shell: /bin/bash',
        '    lock_passwd: true',
        'ssh_pwauth: false',
        'write_files:',
        '  - path: /etc/goship/agent.json',
        '    content: |',
        '      {}',
        '    permissions: "0600"',
        '    owner: root:root',
        '  - path: /usr/local/lib/goship/goship-agent.mjs',
        '    encoding: b64',
        `    content: ${bundle64}`,
        '    permissions: "0755"',
        '    owner: root:root',
        '  - path: /etc/systemd/system/goship-agent.service',
        '    content: |',
        '      [Unit]',
        '      Description=GoShip guest agent',
        '',
        '      [Service]',
        '      ExecStart=/usr/bin/node /usr/local/lib/goship/goship-agent.mjs',
        '      Restart=always',
        '',
        '      [Install]',
        '      WantedBy=multi-user.target',
        '    permissions: "0644"',
        '    owner: root:root',
        '  - path: /usr/local/lib/goship/agent-start',
        '    content: |',
        '      #!/bin/sh',
        '      exec /usr/bin/node /usr/local/lib/goship/goship-agent.mjs',
        '    permissions: "0755"',
        '    owner: root:root',
        '  - path: /usr/local/lib/goship/node-setup',
        '    content: |',
        '      #!/bin/sh',
        '      command -v node',
        '    permissions: "0755"',
        '    owner: root:root',
        'runcmd:',
        '  - - apt-get',
        '    - install',
        '    - -y',
        '    - nodejs',
        '  - - /bin/sh',
        '    - /usr/local/lib/goship/node-setup',
        '  - - systemctl',
        '    - daemon-reload',
        '  - - systemctl',
        '    - enable',
        '    - --now',
        '    - goship-agent.service',
        '',
      ].join('\n'),
    );
    const doc = parse(text, { version: '1.1' }) as { hostname: unknown; write_files: { content: string }[] };
    expect(doc.hostname).toBe('on');
    expect(Buffer.from(doc.write_files[1]!.content, 'base64')).toEqual(Buffer.from(AGENT.bundle));
    expect(doc.write_files[2]!.content).toBe(UNIT);
  });

  it('refuses a relative write_files path, verbatim', () => {
    const error = validationError(() =>
      renderUserData({ hostname: 'web1', sshKeys: [], writeFiles: [{ path: 'etc/motd', content: 'hi' }] }),
    );
    expect(error.message).toBe(`invalid cloud-init seed: writeFiles[0].path: ${PATH_RULE}, got "etc/motd"`);
  });

  it.each([['/etc/../shadow'], ['/etc/./motd'], ['/etc//motd'], ['/etc/motd/'], ['/'], ['/etc/mo\ntd']])(
    'refuses write_files path %j',
    (path) => {
      const error = validationError(() => renderUserData({ hostname: 'web1', sshKeys: [], writeFiles: [{ path, content: '' }] }));
      expect(error.issues.map((i) => i.path)).toEqual(['writeFiles[0].path']);
    },
  );

  it('refuses a malformed SSH key, verbatim', () => {
    const error = validationError(() => renderUserData({ hostname: 'web1', sshKeys: ['ssh-ed25519 notbase64 me'] }));
    expect(error.message).toBe(
      'invalid cloud-init seed: sshKeys[0]: expected base64 key data starting "AAAA" and encoding the type ssh-ed25519, got "ssh-ed25519 notbase64 me"',
    );
  });

  it('refuses other bad keys, each with its reason', () => {
    const ed25519Blob = ED25519.split(' ')[1]!;
    const error = validationError(() =>
      renderUserData({
        hostname: 'web1',
        sshKeys: [
          `ssh-rsa ${ed25519Blob} liar`,
          `ssh-dss ${ed25519Blob}`,
          '-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----\n',
          `${ED25519}\n${ECDSA}`,
        ],
      }),
    );
    expect(error.issues).toEqual([
      {
        path: 'sshKeys[0]',
        message:
          'expected base64 key data starting "AAAA" and encoding the type ssh-rsa, got "ssh-rsa AAAAC3NzaC1lZDI1NTE5AAAAIPPx9gJJ/+Mw2j…"',
      },
      {
        path: 'sshKeys[1]',
        message:
          'expected an OpenSSH public key line "<type> <base64> [comment]" with type ssh-ed25519, ssh-rsa, ecdsa-sha2-nistp256, ecdsa-sha2-nistp384, ecdsa-sha2-nistp521, sk-ssh-ed25519@openssh.com, sk-ecdsa-sha2-nistp256@openssh.com, got "ssh-dss AAAAC3NzaC1lZDI1NTE5AAAAIPPx9gJJ/+Mw2j…"',
      },
      {
        path: 'sshKeys[2]',
        message: 'expected an OpenSSH public key line, got a private key: pass the public key (the .pub file)',
      },
      { path: 'sshKeys[3]', message: 'expected one OpenSSH public key line, got several lines' },
    ]);
  });

  it('refuses shell-string and empty runcmd entries', () => {
    const error = validationError(() =>
      renderUserData({
        hostname: 'web1',
        sshKeys: [],
        runcmd: ['systemctl restart x' as unknown as string[], [], ['', 'x'], ['echo', 'a\0b']],
      }),
    );
    expect(error.issues).toEqual([
      { path: 'runcmd[0]', message: 'expected an argv array of strings (never a shell string), got "systemctl restart x"' },
      { path: 'runcmd[1]', message: 'expected a non-empty argv array, got []' },
      { path: 'runcmd[2][0]', message: 'expected a program name, got ""' },
      { path: 'runcmd[3][1]', message: 'expected a string without NUL characters, got "a\\u0000b"' },
    ]);
  });

  it('refuses a path written twice, a non-deferred file for the new user, and bad modes and owners', () => {
    const error = validationError(() =>
      renderUserData({
        hostname: 'web1',
        fqdn: 'db.example.test',
        sshKeys: [],
        user: { name: 'root' },
        writeFiles: [
          { path: '/etc/systemd/system/goship-agent.service', content: '' },
          { path: '/etc/a', content: '', permissions: 0o10000 },
          { path: '/etc/a', content: '', owner: 'Bob' },
          { path: '/home/ops/x', content: '', owner: 'ops', defer: false },
        ],
        agent: { bundle: new Uint8Array(), unit: 'ExecStart=/bin/true', start: 'exec node', setup: '#!/bin/sh\n' },
      }),
    );
    expect(error.issues).toEqual([
      { path: 'fqdn', message: 'expected a name starting with the hostname "web1.", got "db.example.test"' },
      { path: 'user.name', message: 'expected a user other than root, got "root"' },
      {
        path: 'writeFiles[0].path',
        message:
          'expected each path once, got "/etc/systemd/system/goship-agent.service" again (also written by the agent install)',
      },
      { path: 'writeFiles[1].permissions', message: 'expected an integer mode from 0 to 0o7777 (e.g. 0o644), got 4096' },
      { path: 'writeFiles[2].owner', message: 'expected "user" or "user:group" (lowercase names), got "Bob"' },
      { path: 'writeFiles[2].path', message: 'expected each path once, got "/etc/a" again (also written by writeFiles[1])' },
      { path: 'agent.bundle', message: 'expected the agent bundle bytes (a non-empty Uint8Array), got 0 bytes' },
      {
        path: 'agent.unit',
        message: 'expected the text of a systemd unit with a [Service] section, got "ExecStart=/bin/true"',
      },
      { path: 'agent.start', message: 'expected the text of a sh script (#!/bin/sh), got "exec node"' },
    ]);
    const deferError = validationError(() =>
      renderUserData({
        hostname: 'web1',
        sshKeys: [],
        user: { name: 'ops' },
        writeFiles: [{ path: '/home/ops/x', content: '', owner: 'ops:ops', defer: false }],
      }),
    );
    expect(deferError.issues).toEqual([
      {
        path: 'writeFiles[0].defer',
        message: 'expected true (or unset) when the owner is the user cloud-init creates ("ops"): write_files runs before users exist',
      },
    ]);
  });
});

describe('renderNetworkConfig', () => {
  it('defaults to DHCP on the ethernet matching e*', () => {
    expect(renderNetworkConfig({})).toBe(
      ['version: 2', 'ethernets:', '  primary:', '    match:', '      name: e*', '    dhcp4: true', ''].join('\n'),
    );
  });

  it('writes static addresses, a default route and nameservers on a named interface', () => {
    expect(
      renderNetworkConfig({
        interface: 'enp0s2',
        addresses: ['10.0.2.15/24', 'fd00::15/64'],
        gateway: '10.0.2.2',
        nameservers: ['10.0.2.3'],
      }),
    ).toBe(
      [
        'version: 2',
        'ethernets:',
        '  enp0s2:',
        '    addresses:',
        '      - 10.0.2.15/24',
        '      - fd00::15/64',
        '    routes:',
        '      - to: 0.0.0.0/0',
        '        via: 10.0.2.2',
        '    nameservers:',
        '      addresses:',
        '        - 10.0.2.3',
        '',
      ].join('\n'),
    );
  });

  it('refuses bad addresses, both selectors, and a gateway without addresses', () => {
    const error = validationError(() =>
      renderNetworkConfig({ match: 'e*', interface: 'eth0', addresses: ['10.0.2.15', '10.0.2.300/24'], nameservers: ['dns'] }),
    );
    expect(error.issues).toEqual([
      { path: 'network.interface', message: 'expected either network.match or network.interface, got both' },
      {
        path: 'network.addresses[0]',
        message: 'expected an IP address with a prefix length (e.g. "10.0.2.15/24"), got "10.0.2.15"',
      },
      {
        path: 'network.addresses[1]',
        message: 'expected an IP address with a prefix length (e.g. "10.0.2.15/24"), got "10.0.2.300/24"',
      },
      { path: 'network.nameservers[0]', message: 'expected an IP address, got "dns"' },
    ]);
    expect(validationError(() => renderNetworkConfig({ gateway: '10.0.2.2' })).issues).toEqual([
      {
        path: 'network.gateway',
        message: 'expected network.addresses with it (with DHCP the gateway comes from the DHCP server)',
      },
    ]);
  });
});

describe('seedEntries', () => {
  const opts: SeedOptions = { instanceId: 'iid-web1-0001', hostname: 'web1', sshKeys: [ED25519] };

  it('gives meta-data and user-data, and network-config only when asked', () => {
    const decode = (bytes: Uint8Array): string => new TextDecoder().decode(bytes);
    const plain = seedEntries(opts);
    expect(plain.map((e) => e.path)).toEqual(['meta-data', 'user-data']);
    expect(decode(plain[0]!.bytes)).toBe(renderMetaData(opts));
    expect(decode(plain[1]!.bytes)).toBe(renderUserData(opts));

    const withNetwork = seedEntries({ ...opts, network: {} });
    expect(withNetwork.map((e) => e.path)).toEqual(['meta-data', 'user-data', 'network-config']);
    expect(decode(withNetwork[2]!.bytes)).toBe(renderNetworkConfig({}));
  });

  it('reports every problem at once, the hostname once', () => {
    const error = validationError(() =>
      seedEntries({
        instanceId: '',
        hostname: 'web_1',
        sshKeys: ['nope'],
        writeFiles: [{ path: 'relative', content: '' }],
        network: { gateway: 'x' },
      }),
    );
    expect(error.issues.map((i) => i.path)).toEqual([
      'instanceId',
      'hostname',
      'sshKeys[0]',
      'writeFiles[0].path',
      'network.gateway',
    ]);
  });
});
