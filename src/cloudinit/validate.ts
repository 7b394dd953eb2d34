/**
 * Input checks for the seed. Pure: each function returns every problem it
 * finds, each with the path of the field the caller set; the renderers throw.
 */
import { isIP } from 'node:net';
import type { Issue } from '../errors.ts';
import { AGENT_BUNDLE_PATH, AGENT_SETUP_PATH, AGENT_START_PATH, AGENT_UNIT_PATH, DEFAULT_USER } from './constants.ts';
import type { MetaDataOptions, NetworkOptions, UserDataOptions, WriteFile } from './types.ts';

/** The key types cloud-init's guests (OpenSSH ≥ 8.2) accept in authorized_keys. */
export const SSH_KEY_TYPES = [
  'ssh-ed25519',
  'ssh-rsa',
  'ecdsa-sha2-nistp256',
  'ecdsa-sha2-nistp384',
  'ecdsa-sha2-nistp521',
  'sk-ssh-ed25519@openssh.com',
  'sk-ecdsa-sha2-nistp256@openssh.com',
] as const;

const MAX_SHOWN = 48;

/** How a bad value is quoted in a message: strings in JSON quotes (shortened), others by type. */
export function shown(value: unknown): string {
  if (typeof value === 'string') {
    const quoted = JSON.stringify(value);
    return quoted.length > MAX_SHOWN ? `${quoted.slice(0, MAX_SHOWN - 1)}…"` : quoted;
  }
  if (value instanceof Uint8Array) return `${value.length} bytes`;
  if (Array.isArray(value)) return value.length === 0 ? '[]' : 'an array';
  if (value === null) return 'null';
  return typeof value;
}

const LABEL = /^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$/;
const INSTANCE_ID = /^[\x21-\x2e\x30-\x7e]{1,128}$/;
const ACCOUNT = /^[a-z_][a-z0-9_-]{0,31}$/;
const OWNER = /^[a-z_][a-z0-9_-]{0,31}(:[a-z_][a-z0-9_-]{0,31})?$/;
const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;
const IFNAME = /^[^\s/:]{1,15}$/;

function isLabel(value: unknown): value is string {
  return typeof value === 'string' && LABEL.test(value);
}

export function checkHostname(hostname: unknown, path = 'hostname'): Issue[] {
  if (isLabel(hostname)) return [];
  return [
    {
      path,
      message: `expected an RFC 1123 label (1-63 letters, digits or hyphens, not starting or ending with a hyphen), got ${shown(hostname)}`,
    },
  ];
}

export function checkInstanceId(instanceId: unknown, path = 'instanceId'): Issue[] {
  if (typeof instanceId === 'string' && INSTANCE_ID.test(instanceId)) return [];
  return [
    {
      path,
      message: `expected 1-128 printable ASCII characters other than space and "/" (cloud-init makes it a directory name), got ${shown(instanceId)}`,
    },
  ];
}

export function checkFqdn(fqdn: unknown, hostname: unknown, path = 'fqdn'): Issue[] {
  const ok =
    typeof fqdn === 'string' &&
    fqdn.length <= 253 &&
    fqdn.split('.').length >= 2 &&
    fqdn.split('.').every((label) => LABEL.test(label));
  if (!ok) {
    return [
      {
        path,
        message: `expected "<hostname>.<domain>": dot-separated RFC 1123 labels, at most 253 characters, got ${shown(fqdn)}`,
      },
    ];
  }
  if (isLabel(hostname) && fqdn.split('.')[0]?.toLowerCase() !== hostname.toLowerCase()) {
    return [{ path, message: `expected a name starting with the hostname "${hostname}.", got ${shown(fqdn)}` }];
  }
  return [];
}

/** One OpenSSH public key line: `<type> <base64 blob> [comment]`, the blob naming the same type. */
export function checkSshKey(key: unknown, path: string): Issue[] {
  const fail = (why: string): Issue[] => [{ path, message: why }];
  if (typeof key !== 'string') return fail(`expected an OpenSSH public key line, got ${shown(key)}`);
  if (key.includes('PRIVATE KEY')) {
    return fail('expected an OpenSSH public key line, got a private key: pass the public key (the .pub file)');
  }
  const line = key.trim();
  if (/[\r\n]/.test(line)) return fail('expected one OpenSSH public key line, got several lines');
  const [type = '', blob = '', ...comment] = line.split(/[ \t]+/);
  if (!(SSH_KEY_TYPES as readonly string[]).includes(type)) {
    return fail(
      `expected an OpenSSH public key line "<type> <base64> [comment]" with type ${SSH_KEY_TYPES.join(', ')}, got ${shown(line)}`,
    );
  }
  if (!blob.startsWith('AAAA') || !BASE64.test(blob) || embeddedKeyType(blob) !== type) {
    return fail(`expected base64 key data starting "AAAA" and encoding the type ${type}, got ${shown(line)}`);
  }
  if (comment.some((word) => /[\x00-\x1f\x7f]/.test(word))) {
    return fail(`expected a comment of printable characters, got ${shown(line)}`);
  }
  return [];
}

/** The key type string an SSH public key blob starts with (uint32 length, then the name). */
function embeddedKeyType(blob: string): string | undefined {
  const bytes = Buffer.from(blob, 'base64');
  if (bytes.length < 4) return undefined;
  const length = bytes.readUInt32BE(0);
  if (length === 0 || length > 64 || bytes.length < 4 + length) return undefined;
  return bytes.subarray(4, 4 + length).toString('latin1');
}

/** An absolute path cloud-init can write: no `.`, `..` or empty segments, no control characters. */
export function isSafeAbsolutePath(path: unknown): path is string {
  if (typeof path !== 'string' || !path.startsWith('/') || path.length < 2 || path.length > 4096) return false;
  if (/[\x00-\x1f\x7f]/.test(path)) return false;
  return path
    .slice(1)
    .split('/')
    .every((segment) => segment !== '' && segment !== '.' && segment !== '..');
}

function checkUser(user: UserDataOptions['user'], path = 'user'): Issue[] {
  if (user === undefined) return [];
  const issues: Issue[] = [];
  if (typeof user.name !== 'string' || !ACCOUNT.test(user.name)) {
    issues.push({
      path: `${path}.name`,
      message: `expected a user name (a lowercase letter or "_", then up to 31 lowercase letters, digits, "_" or "-"), got ${shown(user.name)}`,
    });
  } else if (user.name === 'root') {
    issues.push({ path: `${path}.name`, message: 'expected a user other than root, got "root"' });
  }
  if (user.shell !== undefined && !isSafeAbsolutePath(user.shell)) {
    issues.push({ path: `${path}.shell`, message: `expected an absolute path, got ${shown(user.shell)}` });
  }
  if (user.sudo !== undefined && user.sudo !== false) {
    if (typeof user.sudo !== 'string' || user.sudo.trim() === '' || /[\x00-\x1f\x7f]/.test(user.sudo)) {
      issues.push({
        path: `${path}.sudo`,
        message: `expected a sudoers rule on one line (e.g. "ALL=(ALL) NOPASSWD:ALL") or false, got ${shown(user.sudo)}`,
      });
    }
  }
  return issues;
}

function checkWriteFile(file: WriteFile, path: string, userName: string): Issue[] {
  const issues: Issue[] = [];
  if (!isSafeAbsolutePath(file.path)) {
    issues.push({
      path: `${path}.path`,
      message: `expected an absolute path without ".", ".." or empty segments, got ${shown(file.path)}`,
    });
  }
  if (typeof file.content !== 'string' && !(file.content instanceof Uint8Array)) {
    issues.push({ path: `${path}.content`, message: `expected a string or bytes (Uint8Array), got ${shown(file.content)}` });
  }
  if (
    file.permissions !== undefined &&
    !(Number.isInteger(file.permissions) && file.permissions >= 0 && file.permissions <= 0o7777)
  ) {
    issues.push({
      path: `${path}.permissions`,
      message: `expected an integer mode from 0 to 0o7777 (e.g. 0o644), got ${String(file.permissions)}`,
    });
  }
  if (file.owner !== undefined && (typeof file.owner !== 'string' || !OWNER.test(file.owner))) {
    issues.push({
      path: `${path}.owner`,
      message: `expected "user" or "user:group" (lowercase names), got ${shown(file.owner)}`,
    });
  } else if (file.defer === false && file.owner !== undefined && file.owner.split(':')[0] === userName) {
    issues.push({
      path: `${path}.defer`,
      message: `expected true (or unset) when the owner is the user cloud-init creates ("${userName}"): write_files runs before users exist`,
    });
  }
  if (file.defer !== undefined && typeof file.defer !== 'boolean') {
    issues.push({ path: `${path}.defer`, message: `expected true or false, got ${shown(file.defer)}` });
  }
  return issues;
}

function checkArgv(argv: unknown, path: string): Issue[] {
  if (!Array.isArray(argv)) {
    return [{ path, message: `expected an argv array of strings (never a shell string), got ${shown(argv)}` }];
  }
  if (argv.length === 0) return [{ path, message: 'expected a non-empty argv array, got []' }];
  const issues: Issue[] = [];
  argv.forEach((arg: unknown, j) => {
    if (typeof arg !== 'string' || arg.includes('\0')) {
      issues.push({ path: `${path}[${j}]`, message: `expected a string without NUL characters, got ${shown(arg)}` });
    } else if (j === 0 && arg === '') {
      issues.push({ path: `${path}[0]`, message: 'expected a program name, got ""' });
    }
  });
  return issues;
}

function checkAgent(agent: UserDataOptions['agent'], path = 'agent'): Issue[] {
  if (agent === undefined) return [];
  const issues: Issue[] = [];
  if (!(agent.bundle instanceof Uint8Array) || agent.bundle.length === 0) {
    issues.push({
      path: `${path}.bundle`,
      message: `expected the agent bundle bytes (a non-empty Uint8Array), got ${shown(agent.bundle)}`,
    });
  }
  if (typeof agent.unit !== 'string' || !/^\[Service\]\s*$/m.test(agent.unit)) {
    issues.push({
      path: `${path}.unit`,
      message: `expected the text of a systemd unit with a [Service] section, got ${shown(agent.unit)}`,
    });
  }
  for (const key of ['start', 'setup'] as const) {
    if (typeof agent[key] !== 'string' || !agent[key].startsWith('#!/bin/sh\n')) {
      issues.push({ path: `${path}.${key}`, message: `expected the text of a sh script (#!/bin/sh), got ${shown(agent[key])}` });
    }
  }
  return issues;
}

export function validateMetaData(opts: MetaDataOptions): Issue[] {
  return [...checkInstanceId(opts.instanceId), ...checkHostname(opts.hostname)];
}

export function validateUserData(opts: UserDataOptions): Issue[] {
  const issues: Issue[] = [...checkHostname(opts.hostname)];
  if (opts.fqdn !== undefined) issues.push(...checkFqdn(opts.fqdn, opts.hostname));
  issues.push(...checkUser(opts.user));

  if (!Array.isArray(opts.sshKeys)) {
    issues.push({ path: 'sshKeys', message: `expected an array of OpenSSH public key lines, got ${shown(opts.sshKeys)}` });
  } else {
    opts.sshKeys.forEach((key, i) => issues.push(...checkSshKey(key, `sshKeys[${i}]`)));
  }

  const userName = opts.user?.name ?? DEFAULT_USER;
  const writtenBy = new Map<string, string>();
  if (opts.agent !== undefined) {
    writtenBy.set(AGENT_BUNDLE_PATH, 'the agent install');
    writtenBy.set(AGENT_UNIT_PATH, 'the agent install');
    writtenBy.set(AGENT_START_PATH, 'the agent install');
    writtenBy.set(AGENT_SETUP_PATH, 'the agent install');
  }
  (opts.writeFiles ?? []).forEach((file, i) => {
    const path = `writeFiles[${i}]`;
    issues.push(...checkWriteFile(file, path, userName));
    if (typeof file.path !== 'string') return;
    const earlier = writtenBy.get(file.path);
    if (earlier !== undefined) {
      issues.push({ path: `${path}.path`, message: `expected each path once, got ${shown(file.path)} again (also written by ${earlier})` });
    } else {
      writtenBy.set(file.path, path);
    }
  });

  if (opts.runcmd !== undefined && !Array.isArray(opts.runcmd)) {
    issues.push({ path: 'runcmd', message: `expected an array of argv arrays, got ${shown(opts.runcmd)}` });
  } else {
    (opts.runcmd ?? []).forEach((argv, i) => issues.push(...checkArgv(argv, `runcmd[${i}]`)));
  }
  issues.push(...checkAgent(opts.agent));
  return issues;
}

function isCidr(value: unknown): boolean {
  if (typeof value !== 'string') return false;
  const [address = '', prefix, ...rest] = value.split('/');
  if (prefix === undefined || rest.length > 0 || !/^\d{1,3}$/.test(prefix)) return false;
  const family = isIP(address);
  const bits = Number(prefix);
  return (family === 4 && bits <= 32) || (family === 6 && bits <= 128);
}

export function validateNetwork(network: NetworkOptions | undefined, path = 'network'): Issue[] {
  if (network === undefined) return [];
  const issues: Issue[] = [];
  if (network.match !== undefined && network.interface !== undefined) {
    issues.push({ path: `${path}.interface`, message: `expected either ${path}.match or ${path}.interface, got both` });
  }
  if (network.match !== undefined && (typeof network.match !== 'string' || !IFNAME.test(network.match))) {
    issues.push({
      path: `${path}.match`,
      message: `expected an interface name glob (1-15 characters, no whitespace, "/" or ":"; e.g. "e*"), got ${shown(network.match)}`,
    });
  }
  if (
    network.interface !== undefined &&
    (typeof network.interface !== 'string' || !IFNAME.test(network.interface) || /[*?[\]]/.test(network.interface))
  ) {
    issues.push({
      path: `${path}.interface`,
      message: `expected an interface name (1-15 characters, no whitespace, "/", ":" or glob characters), got ${shown(network.interface)}`,
    });
  }
  (network.addresses ?? []).forEach((address, i) => {
    if (!isCidr(address)) {
      issues.push({
        path: `${path}.addresses[${i}]`,
        message: `expected an IP address with a prefix length (e.g. "10.0.2.15/24"), got ${shown(address)}`,
      });
    }
  });
  if (network.gateway !== undefined) {
    if (typeof network.gateway !== 'string' || isIP(network.gateway) === 0) {
      issues.push({ path: `${path}.gateway`, message: `expected an IP address, got ${shown(network.gateway)}` });
    } else if ((network.addresses ?? []).length === 0) {
      issues.push({
        path: `${path}.gateway`,
        message: `expected ${path}.addresses with it (with DHCP the gateway comes from the DHCP server)`,
      });
    }
  }
  (network.nameservers ?? []).forEach((server, i) => {
    if (typeof server !== 'string' || isIP(server) === 0) {
      issues.push({ path: `${path}.nameservers[${i}]`, message: `expected an IP address, got ${shown(server)}` });
    }
  });
  return issues;
}
