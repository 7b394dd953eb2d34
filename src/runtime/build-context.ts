/**
 * What of a build directory goes to the VM's dockerd: everything but what its
 * `.dockerignore` excludes, in Docker's syntax (`@balena/dockerignore`, the
 * matcher Docker's own rules are ported to: `**`, `!` exceptions, the last
 * matching rule wins). As Docker does, the Dockerfile and `.dockerignore`
 * themselves always go. A secret a `.dockerignore` excludes (`.env`, `.git`)
 * never leaves the host.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import dockerignore from '@balena/dockerignore';

// A CommonJS module whose module.exports is the factory: what a default import gives at run time.
const ignore = dockerignore as unknown as (typeof dockerignore)['default'];

/** Pure: the filter of a context's paths (relative, `./`-prefixed as tar gives them) from its `.dockerignore` text. */
export function contextFilter(dockerignore: string): (path: string, isDirectory: boolean) => boolean {
  const rules = dockerignore
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '' && !l.startsWith('#'));
  if (rules.length === 0) return () => true;
  const ig = ignore().add(rules);
  // A directory an exception may reach into is walked; its files are judged one by one.
  const exceptions = rules.some((r) => r.startsWith('!'));
  return (path, isDirectory) => {
    const rel = path.replace(/^\.\/?/, '').replace(/\/$/, '');
    if (rel === '' || rel === 'Dockerfile' || rel === '.dockerignore') return true;
    if (!ig.ignores(rel)) return true;
    return isDirectory && exceptions;
  };
}

/** The filter of the build directory `dir`, from its `.dockerignore` if it has one. */
export async function buildContextFilter(dir: string): Promise<(path: string, isDirectory: boolean) => boolean> {
  const text = await readFile(join(dir, '.dockerignore'), 'utf8').catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT') return '';
    throw err;
  });
  return contextFilter(text);
}

/** A build directory as the tar stream dockerd takes (portable, mtimes kept), without what its `.dockerignore` excludes. */
export async function buildContextStream(dir: string): Promise<Readable> {
  const tar = await import('tar');
  const keep = await buildContextFilter(dir);
  return Readable.from(
    tar.c({ cwd: dir, portable: true, noMtime: false, filter: (path, st) => keep(path, 'isDirectory' in st && st.isDirectory()) }, ['.']) as unknown as AsyncIterable<Buffer>,
  );
}
