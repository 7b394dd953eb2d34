/**
 * OpenSSH into a project's VM (`goshipctl ssh`, `goshipctl ssh-config`),
 * with no network and no forwarded port: ssh's ProxyCommand is `goshipctl vm
 * tunnel NAME 22`, one stream over the VM's agent channel to the guest's
 * sshd on its loopback. Why not a forwarded port: it needs no port on the
 * host (nothing to collide, nothing reachable from another user or host),
 * works for a VM without network, and the agent channel is already
 * authenticated by the monitor socket's owner-only mode.
 *
 * Each project has a key pair of its own (`vms/ID/ssh_key`, owner-only):
 * made at create and put in the guest with the user's keys; `access` also
 * authorizes it through the agent, so a project made before, moved here or
 * restored from elsewhere works too. The guest's host keys are read through
 * the agent and pinned (`ssh_known_hosts`, `StrictHostKeyChecking yes`): ssh
 * never asks, and a VM never poses as another.
 */
import { existsSync } from 'node:fs';
import { mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { newKeyPair } from './host-keys.ts';
import { DEFAULT_USER } from '../cloudinit/index.ts';
import type { Layout } from '../layout.ts';
import type { AgentClient } from '../serial/index.ts';
import { staleWorkDirs, workDirName } from '../proc.ts';
import { tailCollector } from './bounded.ts';
import { RuntimeError } from './errors.ts';

export const SSH_PORT = 22;
/** The most of the guest's answer (its host keys) taken: a few lines. */
const HOST_KEYS_MAX = 16 * 1024;

/** Pure: the ssh_config host name of a project. */
export function sshAlias(name: string): string {
  return `goship-${name}`;
}

/** Pure: a path as an ssh_config argument: double-quoted, `%` doubled (ssh expands `%` tokens). */
function configPath(path: string): string {
  if (/["\r\n]/.test(path)) throw new RuntimeError('EINVALID', `${JSON.stringify(path)}: ssh_config cannot quote a path with a double quote or a line break`);
  return `"${path.replaceAll('%', '%%')}"`;
}

/** Pure: one word of ProxyCommand, which ssh gives to `sh -c` after expanding `%` tokens. */
function proxyWord(word: string): string {
  const quoted = /^[A-Za-z0-9_@+=:,./-]+$/.test(word) ? word : `'${word.replace(/'/g, `'\\''`)}'`;
  return quoted.replaceAll('%', '%%');
}

/** Pure: the `Host goship-NAME` block that `ssh -F`, `scp -F`, `rsync -e 'ssh -F …'` and VS Code use as it is. */
export function sshConfigText(o: { alias: string; user: string; key: string; knownHosts: string; proxy: readonly string[] }): string {
  return [
    `Host ${o.alias}`,
    `  HostName ${o.alias}`,
    `  User ${o.user}`,
    `  IdentityFile ${configPath(o.key)}`,
    '  IdentitiesOnly yes',
    `  UserKnownHostsFile ${configPath(o.knownHosts)}`,
    '  StrictHostKeyChecking yes',
    `  HostKeyAlias ${o.alias}`,
    `  ProxyCommand ${o.proxy.map(proxyWord).join(' ')}`,
    '',
  ].join('\n');
}

/**
 * Pure: the known_hosts lines of the guest's host keys, from what the agent
 * printed (`cat /etc/ssh/ssh_host_*_key.pub`). The guest is untrusted: only
 * whole `TYPE BASE64` lines of known types are kept, the comment dropped.
 */
export function knownHostsText(alias: string, printed: string): string {
  const lines: string[] = [];
  for (const line of printed.split('\n')) {
    const m = /^(ssh-ed25519|ecdsa-sha2-nistp(?:256|384|521)|ssh-rsa) ([A-Za-z0-9+/]{16,8192}={0,2})(?: .*)?$/.exec(line.trim());
    if (m) lines.push(`${alias} ${m[1]} ${m[2]}`);
  }
  return lines.length > 0 ? `${lines.join('\n')}\n` : '';
}

/**
 * Authorizes `key` for `user` in the guest (once; `~/.ssh` made as ssh wants
 * it) and prints the guest's host keys. Positional arguments, never
 * interpolated into the script.
 */
export const AUTHORIZE_SCRIPT = [
  'set -eu',
  'user="$1"; key="$2"',
  'home=$(getent passwd "$user" | cut -d: -f6)',
  '[ -n "$home" ] || { echo "no user $user in the guest" >&2; exit 3; }',
  'install -d -m 0700 -o "$user" -g "$user" "$home/.ssh"',
  'f="$home/.ssh/authorized_keys"',
  '[ -e "$f" ] || install -m 0600 -o "$user" -g "$user" /dev/null "$f"',
  'grep -qxF -- "$key" "$f" || printf "%s\\n" "$key" >> "$f"',
  'cat /etc/ssh/ssh_host_*_key.pub',
].join('\n');

export interface SshFiles {
  key: string;
  knownHosts: string;
  config: string;
  alias: string;
  user: string;
}

export function sshFiles(layout: Layout, id: string, name: string): SshFiles {
  return { key: layout.vmFile(id, 'sshKey'), knownHosts: layout.vmFile(id, 'sshKnownHosts'), config: layout.vmFile(id, 'sshConfig'), alias: sshAlias(name), user: DEFAULT_USER };
}

/** The project's public key line, the pair made first when it has none (ed25519, no passphrase, the private key owner-only; src/runtime/host-keys.ts). */
export async function ensureProjectKey(files: Pick<SshFiles, 'key' | 'alias'>): Promise<string> {
  if (!existsSync(files.key) || !existsSync(`${files.key}.pub`)) {
    await rm(files.key, { force: true });
    await rm(`${files.key}.pub`, { force: true });
    const pair = newKeyPair(files.alias);
    await writeFile(files.key, pair.privateKey, { mode: 0o600, flag: 'wx' });
    await writeFile(`${files.key}.pub`, pair.publicKey, { mode: 0o644, flag: 'wx' });
  }
  return (await readFile(`${files.key}.pub`, 'utf8')).trim();
}

/**
 * A project's key pair made before its VM's directory exists (the public key
 * goes into the VM's seed, or a clone's identity), in a private work
 * directory; `keep` moves it into the VM's directory once the project is
 * made, `discard` drops it. What a killed create left is swept here.
 */
export async function newProjectKey(layout: Layout, alias: string): Promise<{ pub: string; keep: (files: SshFiles) => Promise<void>; discard: () => Promise<void> }> {
  await mkdir(layout.vmsDir, { recursive: true, mode: 0o700 });
  for (const stale of await staleWorkDirs(layout.vmsDir, 'keygen')) await rm(stale, { recursive: true, force: true });
  const dir = join(layout.vmsDir, workDirName('keygen'));
  await mkdir(dir, { mode: 0o700 });
  const discard = () => rm(dir, { recursive: true, force: true });
  const key = join(dir, 'key');
  try {
    const pub = await ensureProjectKey({ key, alias });
    return {
      pub,
      keep: async (files) => {
        await rename(`${key}.pub`, `${files.key}.pub`);
        await rename(key, files.key);
        await discard();
      },
      discard,
    };
  } catch (err) {
    await discard();
    throw err;
  }
}

/**
 * Makes the project reachable with ssh: its key pair, the key authorized in
 * the guest, the guest's host keys pinned, the config written (and returned).
 * `proxy` is how ssh runs goshipctl (`vm tunnel NAME 22` is appended).
 */
export async function sshAccess(agent: Pick<AgentClient, 'exec'>, files: SshFiles, o: { name: string; proxy: readonly string[] }): Promise<string> {
  const pub = await ensureProjectKey(files);
  const out = tailCollector(HOST_KEYS_MAX);
  const err = tailCollector(4096);
  const r = await agent.exec(['sh', '-c', AUTHORIZE_SCRIPT, 'sh', files.user, pub], { stdout: out.stream, stderr: err.stream, timeoutMs: 60_000 });
  if (r.exitCode !== 0) throw new RuntimeError('EGUEST', `VM ${o.name}: its SSH key could not be authorized in the guest (exit ${r.exitCode ?? r.signal}): ${err.bytes().toString('utf8').trim().slice(0, 400)}`);
  const known = knownHostsText(files.alias, out.bytes().toString('utf8'));
  if (!known) throw new RuntimeError('EGUEST', `VM ${o.name}: the guest has no SSH host key (/etc/ssh/ssh_host_*_key.pub)`, { hint: 'is openssh-server installed in the image? (the default image has it)' });
  await writeFile(files.knownHosts, known, { mode: 0o600 });
  const config = sshConfigText({ alias: files.alias, user: files.user, key: files.key, knownHosts: files.knownHosts, proxy: [...o.proxy, 'vm', 'tunnel', o.name, String(SSH_PORT)] });
  await writeFile(files.config, config, { mode: 0o600 });
  return config;
}
