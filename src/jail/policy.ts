/**
 * What the jail allows (pure): which paths a spec may name, which backing
 * chain a VM's overlay may have, which run directory GoShip may use, and
 * whether a VM's identity can reach what QEMU opens. Facts come in (realpaths,
 * stat results, a parsed qcow2 header); issues come out. src/jail/files.ts
 * gathers the facts.
 */
import { sep } from 'node:path';
import type { Issue } from '../errors.ts';
import type { Qcow2Header } from './qcow2.ts';

/** Pure: is `path` `dir` itself or inside it? */
export function within(path: string, dir: string): boolean {
  return path === dir || path.startsWith(dir.endsWith(sep) ? dir : `${dir}${sep}`);
}

/** GoShip's own places, as real paths. */
export interface OwnPlaces {
  home: string;
  run: string;
  /** This VM's directory: its files are its own. */
  vmDir: string;
  /** The image catalogue's directory (images/NAME/…): read-only to every VM. */
  imagesDir: string;
}

/** A path a spec names, as its real path, and how QEMU opens it. */
export interface NamedPath {
  at: string;
  path: string;
  access: 'r' | 'rw';
}

/**
 * Pure: the spec fields that name GoShip's own files. A spec may name this
 * VM's own files, a catalogued image's files to read, and anything outside
 * GoShip's home and run directory; never the state file, another VM's disk
 * or socket, or an image's file to write.
 */
export function specPathIssues(paths: readonly NamedPath[], own: OwnPlaces): Issue[] {
  const issues: Issue[] = [];
  for (const p of paths) {
    if (within(p.path, own.vmDir)) continue;
    if (within(p.path, own.imagesDir)) {
      const image = p.path.slice(own.imagesDir.length + 1).split(sep)[0] || '?';
      if (p.access === 'rw') issues.push({ path: p.at, message: `${p.path} is a file of image ${image}, shared by every VM on it: a VM may only read it (readOnly: true)` });
      continue;
    }
    const place = within(p.path, own.home) ? `GoShip's home (${own.home})` : within(p.path, own.run) ? `GoShip's run directory (${own.run})` : undefined;
    if (place) issues.push({ path: p.at, message: `${p.path} is one of GoShip's own files, in ${place}: a spec may name its own VM's files, an image's files (read-only) and files outside GoShip's directories` });
  }
  return issues;
}

/** The base a VM was created on, as GoShip recorded it (never as the VM's files say). */
export interface TrustedBase {
  path: string;
  format: string;
  /** The one file the base itself stands on (a template's disk stands on its image's base); absent: the base stands alone. */
  backing?: { path: string; format: string };
}

/**
 * Pure: why an overlay's header is not one GoShip made for this VM, or
 * undefined when it is: qcow2, no external data file, and either no backing
 * file or exactly the recorded base, with its format named (a missing format
 * would make QEMU probe the base's bytes).
 */
export function chainIssue(overlay: string, header: Qcow2Header | undefined, base: TrustedBase | undefined): string | undefined {
  if (header === undefined) return `${overlay} is not a qcow2 file`;
  if (header.dataFile !== undefined) return `${overlay} names an external data file, ${JSON.stringify(header.dataFile)}: GoShip makes none`;
  if (header.backingFile === undefined) return undefined;
  if (base === undefined) return `${overlay} names a backing file, ${JSON.stringify(header.backingFile)}, but the VM was created on no base image`;
  if (header.backingFile !== base.path) return `${overlay} names ${JSON.stringify(header.backingFile)} as its backing file, not the image it was created on (${base.path})`;
  if (header.backingFormat !== base.format) return `${overlay} names its backing file's format as ${JSON.stringify(header.backingFormat ?? '(none)')}, not ${base.format}`;
  return undefined;
}

/** The facts of a directory as lstat gives them (undefined: it does not exist). */
export interface DirFacts {
  isDirectory: boolean;
  isSymbolicLink: boolean;
  uid: number;
  mode: number;
}

function octal(mode: number): string {
  return (mode & 0o7777).toString(8).padStart(4, '0');
}

/**
 * Pure: why an existing run directory may not be used, or undefined. It must
 * be a real directory of this user's that nobody else may write in; when
 * GoShip is not root, nobody else may enter it either (0700). As root the
 * search bit for others stays: the VMs' identities pass through it to their
 * own directories.
 */
export function runDirIssue(facts: DirFacts | undefined, me: number, root: boolean): string | undefined {
  if (facts === undefined) return undefined;
  if (facts.isSymbolicLink) return 'is a symbolic link';
  if (!facts.isDirectory) return 'is not a directory';
  if (facts.uid !== me) return `belongs to uid ${facts.uid}, not to uid ${me} (who runs GoShip)`;
  const open = root ? facts.mode & 0o066 : facts.mode & 0o077;
  if (open !== 0) return `is mode ${octal(facts.mode)}: ${root ? 'others may read or write it' : 'others may enter it'} (GoShip's own must be ${root ? '0711' : '0700'})`;
  return undefined;
}

/** One path as the kernel checks it: its owner, group and mode. */
export interface PathFacts {
  path: string;
  uid: number;
  gid: number;
  mode: number;
}

/** Whom the kernel checks: a VM's identity and its groups. */
export interface Who {
  name: string;
  uid: number;
  groups: readonly number[];
}

/** Pure: may `who` do `need` (`r`, `w`, `x`, or several) on a path with these facts? Root's bypass is not modelled: `who` is never root. */
export function permits(f: PathFacts, who: Pick<Who, 'uid' | 'groups'>, need: string): boolean {
  const bits = f.uid === who.uid ? (f.mode >> 6) & 7 : who.groups.includes(f.gid) ? (f.mode >> 3) & 7 : f.mode & 7;
  const want = (need.includes('r') ? 4 : 0) | (need.includes('w') ? 2 : 0) | (need.includes('x') ? 1 : 0);
  return (bits & want) === want;
}

/**
 * Pure: the issues that keep `who` from `need` on a file, given the facts of
 * every directory above it (root first) and of the file itself (last).
 */
export function reachIssues(chain: readonly PathFacts[], who: Who, need: 'r' | 'rw', at: string): Issue[] {
  const dirs = chain.slice(0, -1);
  const file = chain.at(-1);
  for (const d of dirs) {
    if (!permits(d, who, 'x')) {
      return [{ path: at, message: `${who.name} cannot reach ${file?.path ?? '?'}: ${d.path} is mode ${octal(d.mode)} (${d.uid}:${d.gid}) and lets it not pass` }];
    }
  }
  if (file && !permits(file, who, need)) {
    return [{ path: at, message: `${who.name} cannot ${need === 'rw' ? 'read and write' : 'read'} ${file.path}: mode ${octal(file.mode)} (${file.uid}:${file.gid})` }];
  }
  return [];
}
