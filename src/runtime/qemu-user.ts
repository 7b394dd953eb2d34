/**
 * QEMU as an unprivileged user. When GoShip runs as root, QEMU does not: the
 * VM's monitor spawns it as the system user `goship-qemu` (its own group;
 * `/dev/kvm` through the `kvm` group where there is one), so a guest that
 * breaks out of QEMU lands in an account that owns nothing. QEMU's seccomp
 * sandbox stays fully on (`elevateprivileges=deny`): the monitor starts QEMU
 * with the user's uid and gid already set, QEMU never changes them itself
 * (`-runas` would need `elevateprivileges=allow`).
 *
 * What QEMU opens by path must be reachable by that user. GoShip's own
 * directories and files are given to its group (the state directory and the
 * VMs' and images' directories traverse-only or read-only, a VM's overlay
 * read-write, the VM's run directory writable with the sticky bit, so QEMU can
 * create its sockets and pidfile but not touch the monitor's socket). Paths
 * outside them (a disk a spec names, a kernel) are checked, and refused with
 * the path that stops the user, before QEMU starts.
 */
import { chmod, chown, readFile, realpath, stat } from 'node:fs/promises';
import { dirname } from 'node:path';
import type { Issue } from '../errors.ts';
import { RuntimeError } from './errors.ts';

/** The system user QEMU runs as when GoShip runs as root (`GOSHIP_QEMU_USER` overrides; `root` keeps QEMU as root). */
export const QEMU_USER = 'goship-qemu';

export interface QemuUser {
  name: string;
  uid: number;
  gid: number;
  /** Every group the user is in (its primary group first). */
  groups: number[];
}

/** Pure: the user `name` in /etc/passwd and its groups in /etc/group. */
export function findUser(passwd: string, group: string, name: string): QemuUser | undefined {
  for (const line of passwd.split('\n')) {
    const f = line.split(':');
    if (f[0] !== name || f.length < 4) continue;
    const uid = Number(f[2]);
    const gid = Number(f[3]);
    if (!Number.isInteger(uid) || !Number.isInteger(gid)) return undefined;
    const groups = [gid];
    for (const g of group.split('\n')) {
      const gf = g.split(':');
      const members = (gf[3] ?? '').split(',').map((m) => m.trim());
      const id = Number(gf[2]);
      if (members.includes(name) && Number.isInteger(id) && !groups.includes(id)) groups.push(id);
    }
    return { name, uid, gid, groups };
  }
  return undefined;
}

/** One path as the kernel checks it: its owner, group and mode. */
export interface PathFacts {
  path: string;
  uid: number;
  gid: number;
  mode: number;
}

/** Pure: may `who` do `need` (`r`, `w`, `x`, or several) on a path with these facts? Root's bypass is not modelled: `who` is never root. */
export function permits(f: PathFacts, who: Pick<QemuUser, 'uid' | 'groups'>, need: string): boolean {
  const bits = f.uid === who.uid ? (f.mode >> 6) & 7 : who.groups.includes(f.gid) ? (f.mode >> 3) & 7 : f.mode & 7;
  const want = (need.includes('r') ? 4 : 0) | (need.includes('w') ? 2 : 0) | (need.includes('x') ? 1 : 0);
  return (bits & want) === want;
}

/**
 * Pure: the issues that keep `who` from `need` on a file, given the facts of
 * every directory above it (root first) and of the file itself (last).
 */
export function reachIssues(chain: readonly PathFacts[], who: Pick<QemuUser, 'name' | 'uid' | 'groups'>, need: 'r' | 'rw', at: string): Issue[] {
  const dirs = chain.slice(0, -1);
  const file = chain.at(-1);
  for (const d of dirs) {
    if (!permits(d, who, 'x')) {
      return [{ path: at, message: `${who.name} cannot reach ${file?.path ?? '?'}: ${d.path} is mode ${(d.mode & 0o7777).toString(8).padStart(4, '0')} (${d.uid}:${d.gid}) and lets it not pass` }];
    }
  }
  if (file && !permits(file, who, need)) {
    return [{ path: at, message: `${who.name} cannot ${need === 'rw' ? 'read and write' : 'read'} ${file.path}: mode ${(file.mode & 0o7777).toString(8).padStart(4, '0')} (${file.uid}:${file.gid})` }];
  }
  return [];
}

/** The user QEMU runs as, when GoShip runs as root; undefined: QEMU runs as GoShip's own user. */
export async function qemuUser(env: NodeJS.ProcessEnv = process.env, root = process.getuid?.() === 0): Promise<QemuUser | undefined> {
  if (!root) return undefined;
  const name = env.GOSHIP_QEMU_USER ?? QEMU_USER;
  if (name === 'root' || name === '') return undefined;
  const [passwd, group] = await Promise.all([readFile('/etc/passwd', 'utf8'), readFile('/etc/group', 'utf8').catch(() => '')]);
  const user = findUser(passwd, group, name);
  if (!user) {
    throw new RuntimeError('EQEMU_USER', `the user QEMU runs as, ${name}, does not exist`, {
      hint: `create it (scripts/bootstrap.sh does): useradd --system --user-group --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin ${name}; or set GOSHIP_QEMU_USER=root to run QEMU as root`,
    });
  }
  if (user.uid === 0) return undefined;
  return user;
}

async function facts(path: string): Promise<PathFacts> {
  const s = await stat(path);
  return { path, uid: s.uid, gid: s.gid, mode: s.mode };
}

/** The facts of every directory from `/` down to `path`, and of `path` itself (symlinks resolved). */
export async function chainOf(path: string): Promise<PathFacts[]> {
  const real = await realpath(path);
  const parts: string[] = [];
  for (let p = dirname(real); ; p = dirname(p)) {
    parts.unshift(p);
    if (p === '/') break;
  }
  return Promise.all([...parts, real].map(facts));
}

/** What a VM's QEMU opens by path, and how. */
export interface QemuPaths {
  /** GoShip's own directories (state, VMs, images, runs): traversed only. */
  traverse: string[];
  /** GoShip's own directories QEMU reads in (a VM's, an image's). */
  readDirs: string[];
  /** The VM's run directory: QEMU creates its sockets and pidfile there. */
  runDir: string;
  /** Files QEMU reads: GoShip's own get its group; others are checked. */
  read: Array<{ path: string; own: boolean; at: string }>;
  /** Files QEMU writes: GoShip's own get its group; others are checked. */
  write: Array<{ path: string; own: boolean; at: string }>;
}

/**
 * Gives GoShip's own paths to the QEMU user's group, and checks the rest:
 * one EQEMU_USER error listing everything that would stop QEMU, before it runs.
 */
export async function prepareQemuAccess(user: QemuUser, p: QemuPaths): Promise<void> {
  const give = async (path: string, mode: number): Promise<void> => {
    await chown(path, 0, user.gid);
    await chmod(path, mode);
  };
  for (const d of p.traverse) await give(d, 0o710);
  for (const d of p.readDirs) await give(d, 0o750);
  // Sticky: QEMU may create here, and remove only what it created (never the monitor's socket).
  await give(p.runDir, 0o1770);
  const issues: Issue[] = [];
  // Every path is checked from / down, GoShip's own too: the state directory may sit under a closed one.
  issues.push(...reachIssues(await chainOf(p.runDir), user, 'rw', 'paths.runDir'));
  for (const f of p.read) {
    if (f.own) await give(f.path, 0o640);
    issues.push(...reachIssues(await chainOf(f.path), user, 'r', f.at));
  }
  for (const f of p.write) {
    if (f.own) await give(f.path, 0o660);
    issues.push(...reachIssues(await chainOf(f.path), user, 'rw', f.at));
  }
  const unique = [...new Map(issues.map((i) => [i.message, i])).values()];
  if (unique.length > 0) {
    throw new RuntimeError('EQEMU_USER', `QEMU runs as ${user.name} and could not open what it needs: ${unique.map((i) => `${i.path}: ${i.message}`).join('; ')}`, {
      hint: `give ${user.name} access (chmod o+x on the directories named, chgrp ${user.name} and g+r on the files), or set GOSHIP_QEMU_USER=root`,
    });
  }
}
