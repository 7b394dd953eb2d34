/**
 * Host readers over fixtures, for the kvm-probe tests and for reproducing a
 * report sent in by a user (docs/host-probe.md, "Fixtures"): a directory laid
 * out like `/` (its `proc/cpuinfo` is read as `/proc/cpuinfo`), or a plain map
 * of absolute path → text. A device such as `/dev/kvm` is an ordinary (empty)
 * file in a fixture.
 */
import { statSync } from 'node:fs';
import { readFile, readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { AccessMode, HostReader } from '../../src/kvm-probe/index.ts';

export interface FixtureOptions {
  /** Paths that exist but are not read-write for "this user" (e.g. `['/dev/kvm']`). */
  denied?: readonly string[];
}

function isMissing(e: unknown): boolean {
  const code = (e as NodeJS.ErrnoException | undefined)?.code;
  return code === 'ENOENT' || code === 'ENOTDIR' || code === 'EISDIR';
}

/** A reader over a directory tree laid out like `/`. */
export function fixtureReaderFromDir(root: string, options: FixtureOptions = {}): HostReader {
  let isDir = false;
  try {
    isDir = statSync(root).isDirectory();
  } catch {
    throw new Error(`host fixture ${root}: no such directory`);
  }
  if (!isDir) throw new Error(`host fixture ${root}: not a directory`);
  const denied = new Set(options.denied ?? []);
  const local = (path: string): string => join(root, path);
  return {
    async readFile(path) {
      try {
        return await readFile(local(path), 'utf8');
      } catch (e) {
        if (isMissing(e)) return undefined;
        throw e;
      }
    },
    async readDir(path) {
      try {
        return await readdir(local(path));
      } catch (e) {
        if (isMissing(e)) return undefined;
        throw e;
      }
    },
    async access(path: string, mode: AccessMode) {
      try {
        await stat(local(path));
      } catch {
        return false;
      }
      return mode === 'exists' || !denied.has(path);
    },
  };
}

/** A reader over `{ '/proc/cpuinfo': '…', '/dev/kvm': '' }`; directories are implied by the paths. */
export function fixtureReaderFromMap(files: Readonly<Record<string, string>>, options: FixtureOptions = {}): HostReader {
  const denied = new Set(options.denied ?? []);
  const children = (path: string): string[] | undefined => {
    const prefix = path.endsWith('/') ? path : `${path}/`;
    const names = new Set<string>();
    for (const key of Object.keys(files)) {
      if (key.startsWith(prefix)) names.add(key.slice(prefix.length).split('/')[0] as string);
    }
    return names.size > 0 ? [...names] : undefined;
  };
  return {
    async readFile(path) {
      return Object.hasOwn(files, path) ? files[path] : undefined;
    },
    async readDir(path) {
      return children(path);
    },
    async access(path: string, mode: AccessMode) {
      const exists = Object.hasOwn(files, path) || children(path) !== undefined;
      return exists && (mode === 'exists' || !denied.has(path));
    },
  };
}
