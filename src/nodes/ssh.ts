/**
 * Nodes are other hosts' GoShips, reached with the OpenSSH client, the way
 * `virsh -c qemu+ssh://` and `docker -H ssh://` reach theirs: no new
 * listening port on any node, the user's own keys and known_hosts.
 *
 * The pure part: a node's address, the ssh argv, the remote command line.
 * ssh hands the remote side one command string for its login shell, so the
 * remote argv is quoted word by word (POSIX sh single quotes): never a string
 * a caller put together.
 */
import type { Issue } from '../errors.ts';

export interface NodeAddress {
  user: string;
  host: string;
  port: number;
}

const USER = /^[a-z_][a-z0-9_.-]{0,31}$/i;
const HOSTNAME = /^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/;
const IPV6 = /^[0-9A-Fa-f:.]{2,45}$/;

/** `ssh://USER@HOST[:PORT]` (HOST a name, an IPv4 address or `[IPv6]`) → the address, or an issue. Pure. */
export function parseNodeUrl(text: string, path = 'url'): NodeAddress | Issue {
  const bad = (why: string): Issue => ({ path, message: `${why}; expected ssh://USER@HOST[:PORT], got ${JSON.stringify(text)}` });
  const m = /^ssh:\/\/([^@/]+)@(\[[^\]]+\]|[^:/]+)(?::(\d{1,5}))?\/?$/.exec(text);
  if (!m) return bad('not an ssh:// address');
  const user = m[1]!;
  const rawHost = m[2]!;
  if (!USER.test(user)) return bad(`the user ${JSON.stringify(user)} is not a user name`);
  const host = rawHost.startsWith('[') ? rawHost.slice(1, -1) : rawHost;
  if (rawHost.startsWith('[') ? !IPV6.test(host) || !host.includes(':') : !HOSTNAME.test(host)) return bad(`${JSON.stringify(rawHost)} is not a host name or address`);
  const port = m[3] === undefined ? 22 : Number(m[3]);
  if (port < 1 || port > 65535) return bad(`port ${port} is out of range`);
  return { user, host, port };
}

/** The address back as text (what `node list` shows). */
export function nodeUrl(a: NodeAddress): string {
  const host = a.host.includes(':') ? `[${a.host}]` : a.host;
  return `ssh://${a.user}@${host}${a.port === 22 ? '' : `:${a.port}`}`;
}

/** One word for a POSIX shell: single-quoted unless plainly safe. Pure. */
export function shQuote(word: string): string {
  if (word !== '' && /^[A-Za-z0-9_@%+=:,./-]+$/.test(word)) return word;
  return `'${word.replace(/'/g, `'\\''`)}'`;
}

/** The remote command line for an argv: every word quoted, joined by spaces. Pure. */
export function remoteCommand(argv: readonly string[]): string {
  if (argv.length === 0) throw new Error('remoteCommand: empty argv');
  return argv.map(shQuote).join(' ');
}

export interface SshOptions {
  /** The connection-sharing socket (ControlPath): one TCP connection and login reused by every command for a while. */
  controlPath: string;
  /** Seconds a shared connection stays open after its last command. */
  persistSec?: number;
  identity?: string;
  /** A known_hosts file instead of the user's (`~/.ssh/known_hosts`). */
  knownHosts?: string;
  /** First contact (node add into GoShip's own known_hosts): an unknown host key is recorded (`StrictHostKeyChecking=accept-new`); a changed one is still refused. */
  acceptNewHostKey?: boolean;
  /** Seconds to wait for the TCP connection and the login. */
  connectTimeoutSec?: number;
  /**
   * false: a connection of its own, not the shared one. A shared connection
   * was verified once, with the settings of whoever opened it: a check of a
   * node's host key or login (node add) must make its own.
   */
  share?: boolean;
}

/**
 * The ssh argv that runs `remoteArgv` on the node. Batch mode (no password or
 * passphrase prompt, no "accept this host key?" question: an unknown or
 * changed host key fails, as ssh's own StrictHostKeyChecking decides), a
 * bounded connect, keep-alives that notice a dead peer, and connection reuse.
 * No TTY is requested (`-T`): bytes pass through unchanged. Pure.
 */
export function sshArgv(a: NodeAddress, o: SshOptions, remoteArgv: readonly string[]): string[] {
  return [
    'ssh',
    '-T',
    '-o', 'BatchMode=yes',
    '-o', `ConnectTimeout=${o.connectTimeoutSec ?? 10}`,
    '-o', 'ServerAliveInterval=5',
    '-o', 'ServerAliveCountMax=3',
    ...(o.share === false
      ? ['-o', 'ControlMaster=no', '-o', 'ControlPath=none']
      : ['-o', 'ControlMaster=auto', '-o', `ControlPath=${o.controlPath}`, '-o', `ControlPersist=${o.persistSec ?? 60}`]),
    ...(o.identity !== undefined ? ['-o', `IdentityFile=${o.identity}`, '-o', 'IdentitiesOnly=yes'] : []),
    ...(o.knownHosts !== undefined ? ['-o', `UserKnownHostsFile=${o.knownHosts}`] : []),
    ...(o.acceptNewHostKey ? ['-o', 'StrictHostKeyChecking=accept-new'] : []),
    '-p', String(a.port),
    '-l', a.user,
    a.host,
    '--',
    remoteCommand(remoteArgv),
  ];
}

/**
 * The ssh argv that asks the node's shared connection (its ControlMaster) to
 * forward the local unix socket `local` to `remote` on the node (`-O forward
 * -L LOCAL:REMOTE`): no login, no process on the node. Neither path may hold
 * a `:` (ssh's separator). `cancel` takes the forward back. Pure.
 */
export function sshForwardArgv(a: NodeAddress, o: Pick<SshOptions, 'controlPath'>, local: string, remote: string, op: 'forward' | 'cancel' = 'forward'): string[] {
  if (local.includes(':') || remote.includes(':')) throw new Error('sshForwardArgv: a socket path holds ":"');
  return ['ssh', '-o', 'BatchMode=yes', '-o', `ControlPath=${o.controlPath}`, '-O', op, '-L', `${local}:${remote}`, '-p', String(a.port), '-l', a.user, a.host];
}

/**
 * What ssh's own failure (exit 255) means, from its stderr: the node cannot
 * be reached, refused the login, or its host key is not the one known. Pure.
 */
export function sshFailure(stderr: string): { kind: 'unreachable' | 'auth' | 'hostkey' | 'hostkey-changed' | 'other'; text: string } {
  const text = stderr
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '' && !/^Warning: Permanently added/.test(l))
    .join('; ')
    .slice(0, 500);
  if (/REMOTE HOST IDENTIFICATION HAS CHANGED/i.test(stderr)) return { kind: 'hostkey-changed', text };
  if (/Host key verification failed|No .* host key is known/i.test(stderr)) return { kind: 'hostkey', text };
  if (/Permission denied|Too many authentication failures|no such identity/i.test(stderr)) return { kind: 'auth', text };
  if (/Connection refused|Connection timed out|timed out|No route to host|Could not resolve|Network is unreachable|Connection closed|Connection reset|not known/i.test(stderr)) return { kind: 'unreachable', text };
  return { kind: 'other', text };
}
