/**
 * The NoCloud files as exact strings. Pure: same options, same bytes.
 *
 * YAML is written by the `yaml` package with YAML 1.1 quoting rules, because
 * cloud-init reads it with PyYAML (YAML 1.1): a hostname `on`, a user `no` or a
 * mode `0755` must be quoted or they come back as a boolean or an octal number.
 * Lines are never folded, and multi-line text uses literal blocks.
 */
import { stringify } from 'yaml';
import {
  AGENT_BUNDLE_PATH,
  AGENT_BUNDLE_PERMISSIONS,
  AGENT_SETUP_PATH,
  AGENT_START_PATH,
  AGENT_UNIT_NAME,
  AGENT_UNIT_PATH,
  AGENT_UNIT_PERMISSIONS,
  CLOUD_CONFIG_HEADER,
  DEFAULT_FILE_OWNER,
  DEFAULT_FILE_PERMISSIONS,
  DEFAULT_NETWORK_MATCH,
  DEFAULT_SHELL,
  DEFAULT_SUDO,
  DEFAULT_USER,
  NETWORK_ETHERNET_ID,
} from './constants.ts';
import { throwIfIssues } from './errors.ts';
import type { Argv, MetaDataOptions, NetworkOptions, UserDataOptions, WriteFile } from './types.ts';
import { validateMetaData, validateNetwork, validateUserData } from './validate.ts';

function toYaml(value: unknown): string {
  return stringify(value, { version: '1.1', lineWidth: 0, blockQuote: 'literal' });
}

/** `0o644` → `"0644"`, the form cloud-init's `permissions` expects. */
function octal(mode: number): string {
  return mode.toString(8).padStart(4, '0');
}

/** meta-data: `instance-id` and `local-hostname`. */
export function renderMetaData(opts: MetaDataOptions): string {
  throwIfIssues(validateMetaData(opts));
  return toYaml({ 'instance-id': opts.instanceId, 'local-hostname': opts.hostname });
}

/** The `write_files` and `runcmd` parts of the agent install. */
export function agentInstallParts(agent: NonNullable<UserDataOptions['agent']>): {
  writeFiles: WriteFile[];
  runcmd: Argv[];
} {
  return {
    writeFiles: [
      { path: AGENT_BUNDLE_PATH, content: agent.bundle, permissions: AGENT_BUNDLE_PERMISSIONS, owner: DEFAULT_FILE_OWNER },
      { path: AGENT_UNIT_PATH, content: agent.unit, permissions: AGENT_UNIT_PERMISSIONS, owner: DEFAULT_FILE_OWNER },
      { path: AGENT_START_PATH, content: agent.start, permissions: AGENT_BUNDLE_PERMISSIONS, owner: DEFAULT_FILE_OWNER },
      { path: AGENT_SETUP_PATH, content: agent.setup, permissions: AGENT_BUNDLE_PERMISSIONS, owner: DEFAULT_FILE_OWNER },
    ],
    runcmd: [
      ['/bin/sh', AGENT_SETUP_PATH],
      ['systemctl', 'daemon-reload'],
      ['systemctl', 'enable', '--now', AGENT_UNIT_NAME],
    ],
  };
}

function writeFileEntry(file: WriteFile, userName: string): Record<string, unknown> {
  const owner = file.owner ?? DEFAULT_FILE_OWNER;
  const entry: Record<string, unknown> = { path: file.path };
  if (typeof file.content === 'string') {
    entry.content = file.content;
  } else {
    entry.encoding = 'b64';
    entry.content = Buffer.from(file.content.buffer, file.content.byteOffset, file.content.byteLength).toString('base64');
  }
  entry.permissions = octal(file.permissions ?? DEFAULT_FILE_PERMISSIONS);
  entry.owner = owner;
  if (file.defer ?? owner.split(':')[0] === userName) entry.defer = true;
  return entry;
}

/** user-data: a `#cloud-config` document. */
export function renderUserData(opts: UserDataOptions): string {
  throwIfIssues(validateUserData(opts));
  const userName = opts.user?.name ?? DEFAULT_USER;
  const sudo = opts.user?.sudo ?? DEFAULT_SUDO;

  const user: Record<string, unknown> = { name: userName };
  if (sudo !== false) user.sudo = sudo;
  user.shell = opts.user?.shell ?? DEFAULT_SHELL;
  user.lock_passwd = true;
  // cloud-init's schema wants at least one key: an empty list is left out.
  if (opts.sshKeys.length > 0) user.ssh_authorized_keys = opts.sshKeys.map((key) => key.trim());

  const agent = opts.agent === undefined ? undefined : agentInstallParts(opts.agent);
  const files = [...(opts.writeFiles ?? []), ...(agent?.writeFiles ?? [])];
  const runcmd = [...(opts.runcmd ?? []), ...(agent?.runcmd ?? [])];

  const doc: Record<string, unknown> = { hostname: opts.hostname, preserve_hostname: false };
  if (opts.fqdn !== undefined) doc.fqdn = opts.fqdn;
  doc.users = [user];
  doc.ssh_pwauth = false;
  if (files.length > 0) doc.write_files = files.map((file) => writeFileEntry(file, userName));
  if (runcmd.length > 0) doc.runcmd = runcmd.map((argv) => [...argv]);
  return `${CLOUD_CONFIG_HEADER}\n${toYaml(doc)}`;
}

/** network-config, version 2: one ethernet, DHCP unless addresses are given. */
export function renderNetworkConfig(opts: NetworkOptions): string {
  throwIfIssues(validateNetwork(opts));
  const ethernet: Record<string, unknown> = {};
  if (opts.interface === undefined) ethernet.match = { name: opts.match ?? DEFAULT_NETWORK_MATCH };
  const addresses = opts.addresses ?? [];
  if (addresses.length === 0) {
    ethernet.dhcp4 = true;
  } else {
    ethernet.addresses = [...addresses];
    // `to: default` is newer than the cloud-init in Debian 12 (22.4), which
    // only takes a network there: 0.0.0.0/0 works in every version.
    if (opts.gateway !== undefined) {
      ethernet.routes = [{ to: opts.gateway.includes(':') ? '::/0' : '0.0.0.0/0', via: opts.gateway }];
    }
  }
  if (opts.nameservers !== undefined && opts.nameservers.length > 0) {
    ethernet.nameservers = { addresses: [...opts.nameservers] };
  }
  const id = opts.interface ?? NETWORK_ETHERNET_ID;
  return toYaml({ version: 2, ethernets: { [id]: ethernet } });
}
