/**
 * Where the test guests (the fast guest, the Debian image, downloaded .debs)
 * are cached between runs: `$XDG_CACHE_HOME/goship-test`, else, as root,
 * `/var/cache/goship-test` (QEMU runs as each VM's own unprivileged identity
 * and must reach the kernel and disks: root's home is closed to it), else
 * `~/.cache/goship-test`.
 */
import { chmod, readdir, stat } from 'node:fs/promises';
import { homedir } from 'node:os';
import { join, relative, sep } from 'node:path';

export function testCacheBase(env: NodeJS.ProcessEnv = process.env): string {
  if (env.XDG_CACHE_HOME) return join(env.XDG_CACHE_HOME, 'goship-test');
  if (process.getuid?.() === 0) return '/var/cache/goship-test';
  return join(env.HOME || homedir(), '.cache', 'goship-test');
}

/**
 * Opens a cached tree to other users (QEMU's): every directory from the cache
 * base down to `path` 0755, and below `path` directories 0755, files 0644.
 */
export async function openToQemu(path: string, base = testCacheBase()): Promise<void> {
  const rel = relative(base, path);
  if (rel.startsWith('..')) throw new Error(`${path} is not under the test cache ${base}`);
  let dir = base;
  await chmod(dir, 0o755);
  for (const part of rel.split(sep).filter(Boolean).slice(0, -1)) {
    dir = join(dir, part);
    await chmod(dir, 0o755);
  }
  await openTree(path);
}

async function openTree(path: string): Promise<void> {
  const s = await stat(path);
  if (!s.isDirectory()) {
    await chmod(path, 0o644);
    return;
  }
  await chmod(path, 0o755);
  for (const e of await readdir(path, { withFileTypes: true })) {
    if (e.isDirectory() || e.isFile()) await openTree(join(path, e.name));
  }
}
