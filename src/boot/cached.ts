/**
 * Loads a CommonJS bundle with V8's code cache, so that a short-lived
 * goshipctl (or a monitor on its way to QEMU) does not compile a megabyte of
 * JavaScript at every start. Node 20 has no compile cache of its own
 * (`module.enableCompileCache` is Node 22), so this is the classic way of
 * v8-compile-cache: `vm.Script` with `cachedData`.
 *
 * The cache is `FILE.cache`, beside the bundle, written at the process's exit
 * (then it holds every function that run compiled) when there was none, it
 * was made for another build of the bundle, or V8 rejected it (another Node).
 * Its first line names the bundle it was made from (size, mtime, inode, Node
 * version): V8 itself checks only the source's length, and a rebuilt bundle of
 * the same length must not run another one's bytecode. It is read only when it belongs
 * to this user or to the bundle's owner: whoever may write it may write the
 * bundle too. A cache that cannot be read or written costs nothing but the
 * compile. Node built-ins only: this runs before anything else is loaded.
 */
import { closeSync, fstatSync, openSync, readFileSync, renameSync, unlinkSync, writeFileSync, type BigIntStats } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname } from 'node:path';
import { Script } from 'node:vm';

/** What became of the cache: used, none there, made for another bundle or Node, refused (owner, mode), or rejected by V8. */
export type CacheStatus = 'hit' | 'none' | 'stale' | 'untrusted' | 'rejected';

function readCache(path: string, key: string, bundleOwner: number): { data?: Buffer; status: CacheStatus } {
  let fd: number | undefined;
  try {
    fd = openSync(path, 'r');
    const st = fstatSync(fd);
    const me = process.getuid?.() ?? -1;
    if (!st.isFile() || (st.uid !== me && st.uid !== bundleOwner) || (st.mode & 0o022) !== 0) return { status: 'untrusted' };
    const bytes = readFileSync(fd);
    const nl = bytes.indexOf(10);
    if (nl < 0 || bytes.toString('latin1', 0, nl) !== key) return { status: 'stale' };
    return { data: bytes.subarray(nl + 1), status: 'hit' };
  } catch {
    return { status: 'none' };
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
}

/** Runs the CommonJS bundle `file` (an absolute path) and returns its exports; `status` hears what became of the cache. */
export function loadCached(file: string, status?: (s: CacheStatus) => void): unknown {
  const cachePath = `${file}.cache`;
  // Source and key from one open file: a bundle replaced in between cannot pair one build's text with another's key.
  const fd = openSync(file, 'r');
  let source: string;
  let st: BigIntStats;
  try {
    st = fstatSync(fd, { bigint: true });
    source = readFileSync(fd, 'utf8');
  } finally {
    closeSync(fd);
  }
  const key = `goship-code-cache ${process.version} ${st.size} ${st.mtimeNs} ${st.ino}`;
  const cache = readCache(cachePath, key, Number(st.uid));
  const script = new Script(`(function (exports, require, module, __filename, __dirname) {${source}\n})`, {
    filename: file,
    ...(cache.data ? { cachedData: cache.data } : {}),
  });
  const rejected = cache.data !== undefined && script.cachedDataRejected === true;
  status?.(rejected ? 'rejected' : cache.status);
  // An untrusted cache is not replaced either: its owner may be someone else.
  if (cache.status === 'none' || cache.status === 'stale' || rejected) {
    process.once('exit', () => {
      const tmp = `${cachePath}.${process.pid}.tmp`;
      try {
        writeFileSync(tmp, Buffer.concat([Buffer.from(`${key}\n`, 'latin1'), script.createCachedData()]), { mode: 0o644 });
        renameSync(tmp, cachePath);
      } catch {
        // A read-only install: compiled again next time, nothing else.
        try {
          unlinkSync(tmp);
        } catch {
          // never created
        }
      }
    });
  }
  const module = { exports: {} as unknown };
  const wrapper = script.runInThisContext() as (e: unknown, r: NodeJS.Require, m: { exports: unknown }, f: string, d: string) => void;
  wrapper(module.exports, createRequire(file), module, file, dirname(file));
  return module.exports;
}
