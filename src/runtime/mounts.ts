/**
 * Shared folders of a project (`project create --mount HOST:GUEST[:ro]`): a
 * host directory the guest mounts with virtio-fs. Pure parsing and rules
 * here; the VM's side is `filesystems` in its spec (src/qemu), the daemon's
 * src/jail/virtiofsd.ts. docs/host-tools.md, "Shared folders".
 */
import { realpath, stat } from 'node:fs/promises';
import { posix } from 'node:path';
import type { Issue } from '../errors.ts';
import { ValidationError } from '../errors.ts';
import { within } from '../jail/index.ts';
import { MAX_FILESYSTEMS } from '../qemu/index.ts';
import type { SharedFolder } from '../store/index.ts';

export type { SharedFolder };

export const MOUNT_RULE = 'HOST_DIR:GUEST_DIR or HOST_DIR:GUEST_DIR:ro, two absolute paths without ":", "," or white space';

/** Guest directories a shared folder may not cover: the guest's own system. */
const GUEST_RESERVED = ['/bin', '/boot', '/dev', '/etc', '/lib', '/lib64', '/proc', '/run', '/sbin', '/sys', '/usr', '/var/lib/goship'];

function pathIssue(p: string, side: 'HOST_DIR' | 'GUEST_DIR'): string | undefined {
  if (!p.startsWith('/')) return `${side} must be an absolute path, got ${JSON.stringify(p)}`;
  if (/[\s,\0]/.test(p)) return `${side} must not contain a comma or white space, got ${JSON.stringify(p)}`;
  if (posix.normalize(p) !== p || (p.length > 1 && p.endsWith('/'))) return `${side} must be a plain path (no "..", ".", "//" or trailing "/"), got ${JSON.stringify(p)}`;
  if (p === '/') return `${side} must not be "/"`;
  return undefined;
}

/** Pure: one `--mount` value, or the issue with it. */
export function parseMount(value: string, at: string): SharedFolder | Issue {
  const parts = value.split(':');
  if (parts.length < 2 || parts.length > 3 || (parts.length === 3 && parts[2] !== 'ro' && parts[2] !== 'rw')) return { path: at, message: `expected ${MOUNT_RULE}, got ${JSON.stringify(value)}` };
  const [host, guest] = parts as [string, string];
  const why = pathIssue(host, 'HOST_DIR') ?? pathIssue(guest, 'GUEST_DIR');
  if (why) return { path: at, message: why };
  // virtiofsd's private /run covers anything under it.
  if (within(host, '/run')) return { path: at, message: `HOST_DIR must not be under /run, got ${JSON.stringify(host)}` };
  const reserved = GUEST_RESERVED.find((d) => within(guest, d));
  if (reserved) return { path: at, message: `GUEST_DIR must not be in the guest's system directory ${reserved}, got ${JSON.stringify(guest)}` };
  return { host, guest, readOnly: parts[2] === 'ro' };
}

/** Pure: every `--mount`, each issue naming its flag; no two on one guest directory. */
export function parseMounts(values: readonly string[], issues: Issue[]): SharedFolder[] {
  if (values.length > MAX_FILESYSTEMS) issues.push({ path: '--mount', message: `at most ${MAX_FILESYSTEMS} shared folders, got ${values.length}` });
  const out: SharedFolder[] = [];
  values.forEach((value, i) => {
    const r = parseMount(value, `--mount[${i}]`);
    if ('message' in r) return issues.push(r);
    const clash = out.find((m) => within(m.guest, r.guest) || within(r.guest, m.guest));
    if (clash) return issues.push({ path: `--mount[${i}]`, message: `GUEST_DIR ${r.guest} overlaps ${clash.guest}, which another --mount shares` });
    out.push(r);
  });
  return out;
}

/** The tag of a project's `i`th shared folder (what its guest mounts). */
export function mountTag(i: number): string {
  return `goship-${i}`;
}

/**
 * Each HOST_DIR must be a directory now; it is recorded as its real path,
 * so the share does not follow a link that is changed later. GoShip's own
 * directories (`own`: its home and run directory) are never shared, nor
 * anything that holds them.
 */
export async function resolveMountSources(mounts: readonly SharedFolder[], own: readonly string[]): Promise<SharedFolder[]> {
  const ownReal = await Promise.all(own.map((d) => realpath(d).catch(() => d)));
  const issues: Issue[] = [];
  const out: SharedFolder[] = [];
  for (const [i, m] of mounts.entries()) {
    const real = await realpath(m.host).catch((err: NodeJS.ErrnoException) => {
      issues.push({ path: `--mount[${i}]`, message: `HOST_DIR ${m.host}: ${err.code === 'ENOENT' ? 'no such directory' : (err.code ?? err.message)}` });
      return undefined;
    });
    if (real === undefined) continue;
    const s = await stat(real);
    if (!s.isDirectory()) issues.push({ path: `--mount[${i}]`, message: `HOST_DIR ${m.host} is not a directory` });
    // As root the folder's virtiofsd runs as its owner (src/jail/virtiofsd.ts); root's own, it would be root's files the guest writes.
    else if (s.uid === 0 && !m.readOnly && process.getuid?.() === 0) {
      issues.push({ path: `--mount[${i}]`, message: `HOST_DIR ${m.host} is owned by root: shared read-write, the guest's root could leave setuid-root files on this host; share it read-only (:ro), or a folder owned by another user` });
    } else if (ownReal.some((d) => within(real, d) || within(d, real))) {
      issues.push({ path: `--mount[${i}]`, message: `HOST_DIR ${m.host} holds or is in GoShip's own files (${ownReal.join(', ')}): never shared with a guest` });
    } else if (real.includes(',') || within(real, '/run')) issues.push({ path: `--mount[${i}]`, message: `HOST_DIR ${m.host} is ${real}, which cannot be shared (a comma, or under /run)` });
    else out.push({ ...m, host: real });
  }
  if (issues.length > 0) throw new ValidationError(issues, { subject: 'invalid project', hint: 'goshipctl project create --help' });
  return out;
}

/**
 * Mounts a shared folder in the guest, now and at every boot (an fstab line,
 * `nofail`: a missing daemon does not stop the boot). Run by cloud-init's
 * runcmd at the first boot. A fixed text: tag, directory and options are its
 * arguments.
 */
export const MOUNT_SCRIPT = `set -eu
tag=$1 dir=$2 opts=$3
mkdir -p "$dir"
grep -q "^$tag " /etc/fstab || printf '%s %s virtiofs %s 0 0\\n' "$tag" "$dir" "$opts" >> /etc/fstab
mountpoint -q "$dir" || mount "$dir"
`;

/** Pure: the runcmd argv that mounts the `i`th shared folder. */
export function mountArgv(m: SharedFolder, i: number): string[] {
  return ['/bin/sh', '-c', MOUNT_SCRIPT, 'goship-mount', mountTag(i), m.guest, m.readOnly ? 'ro,nofail' : 'defaults,nofail'];
}
