/**
 * Root's file operations in places a VM can write, done so that nothing a VM
 * made is followed: every file is opened with O_NOFOLLOW (a symbolic link is
 * refused, never followed) and O_NONBLOCK (a FIFO does not hang), checked by
 * fstat on what was opened, and changed through that descriptor (fchown,
 * fchmod), never by path again.
 */
import { constants } from 'node:fs';
import { lstat, mkdir, open, readdir, readFile, realpath, rm, stat, type FileHandle } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import { JailError } from './errors.ts';
import { HEADER_READ_BYTES, parseQcow2Header, type Qcow2Header } from './qcow2.ts';
import { runDirIssue, type DirFacts, type PathFacts } from './policy.ts';

const NOFOLLOW = constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK;

async function openNoFollow(path: string, flags = NOFOLLOW): Promise<FileHandle> {
  try {
    return await open(path, flags);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ELOOP') throw new JailError(`${path} is a symbolic link: GoShip follows none in a VM's files`, { hint: 'the file was replaced outside GoShip; destroy the VM', cause: err });
    throw err;
  }
}

/** At most the first `max` bytes of a regular file a VM could have written, opened without following a link. */
export async function readHead(path: string, max: number): Promise<Buffer> {
  const f = await openNoFollow(path);
  try {
    const st = await f.stat();
    if (!st.isFile()) throw new JailError(`${path} is not a regular file`, { hint: 'the file was replaced outside GoShip; destroy the VM' });
    const buf = Buffer.alloc(Math.min(max, st.size));
    const { bytesRead } = await f.read(buf, 0, buf.length, 0);
    return buf.subarray(0, bytesRead);
  } finally {
    await f.close();
  }
}

/** The first bytes of a file (not through a link), parsed as a qcow2 header; undefined: not qcow2. */
export async function readQcow2Header(path: string): Promise<Qcow2Header | undefined> {
  return parseQcow2Header(await readHead(path, HEADER_READ_BYTES), path);
}

/**
 * A file GoShip made, given to `uid:gid` with `mode`: a regular file (with one
 * name, unless `shared`: an image's file may be linked from a cache), changed
 * through its descriptor.
 */
export async function giveFile(path: string, owner: { uid: number; gid: number }, mode: number, opts: { shared?: boolean } = {}): Promise<void> {
  const f = await openNoFollow(path);
  try {
    const st = await f.stat();
    if (!st.isFile() || (st.nlink !== 1 && !opts.shared)) throw new JailError(`${path} is not a regular file with one name: GoShip gives a VM only the files it made`, { hint: 'the file was replaced outside GoShip; destroy the VM' });
    await f.chown(owner.uid, owner.gid);
    await f.chmod(mode);
  } finally {
    await f.close();
  }
}

/**
 * One of GoShip's directories (made if missing, its parent must exist), given
 * to `uid:gid` with `mode`. An existing one must be a real directory that
 * this process's user owns (or already the owner given): never one another
 * user made for us.
 */
export async function ownDir(path: string, owner: { uid: number; gid: number }, mode: number): Promise<void> {
  await mkdir(path, { mode: 0o700 }).catch((err: NodeJS.ErrnoException) => {
    if (err.code !== 'EEXIST') throw err;
  });
  const d = await openNoFollow(path, NOFOLLOW | constants.O_DIRECTORY);
  try {
    const st = await d.stat();
    const me = process.getuid?.() ?? 0;
    if (st.uid !== me && st.uid !== owner.uid) throw new JailError(`${path} belongs to uid ${st.uid}, not to GoShip (uid ${me})`, { hint: `remove it, or choose another GOSHIP_HOME / GOSHIP_RUN` });
    await d.chown(owner.uid, owner.gid);
    await d.chmod(mode);
  } finally {
    await d.close();
  }
}

/** The facts of a directory without following a link (undefined: it does not exist). */
export async function dirFacts(path: string): Promise<DirFacts | undefined> {
  try {
    const s = await lstat(path);
    return { isDirectory: s.isDirectory(), isSymbolicLink: s.isSymbolicLink(), uid: s.uid, mode: s.mode };
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
}

/**
 * GoShip's run directory, checked before it is used: one that exists must be
 * this user's own private directory (a squatted /tmp/goship-UID is refused,
 * never reused). Made when missing (its parent must exist: /run, /tmp or
 * XDG_RUNTIME_DIR).
 */
export async function privateRunDir(path: string, root = process.getuid?.() === 0): Promise<void> {
  const me = process.getuid?.() ?? 0;
  const issue = runDirIssue(await dirFacts(path), me, root);
  if (issue) {
    throw new JailError(`GoShip's run directory ${path} ${issue}: it holds the VMs' sockets and is never shared`, {
      hint: `remove it if it is yours to remove (rm -r ${path}), or point GOSHIP_RUN (or XDG_RUNTIME_DIR) at a directory of your own, mode 0700`,
    });
  }
  await mkdir(path, { recursive: true, mode: 0o700 });
  // Made just now, or checked above: ours. Another process may have made it between the check and mkdir: look again.
  const again = runDirIssue(await dirFacts(path), me, root);
  if (again) throw new JailError(`GoShip's run directory ${path} ${again}`, { hint: `point GOSHIP_RUN at a directory of your own, mode 0700` });
}

async function facts(path: string): Promise<PathFacts> {
  const s = await stat(path);
  return { path, uid: s.uid, gid: s.gid, mode: s.mode };
}

function dirsAbove(path: string): string[] {
  const parts: string[] = [];
  for (let p = dirname(path); ; p = dirname(p)) {
    parts.unshift(p);
    if (p === '/') break;
  }
  return parts;
}

/**
 * The facts of every directory the kernel passes through to open `path`, and
 * of the file itself last: the directories of the path as written (a link
 * among them is followed to the directory it names, whose mode counts) and
 * those of its real path (where the links lead).
 */
export async function pathChain(path: string): Promise<PathFacts[]> {
  const real = await realpath(path);
  const dirs = [...new Set([...dirsAbove(resolve(path)), ...dirsAbove(real)])];
  return Promise.all([...dirs, real].map(facts));
}

/** The real path of a path a spec names (resolved as given when it does not exist yet). */
export async function realOrResolved(path: string): Promise<string> {
  return realpath(path).catch(() => resolve(path));
}

/** The PIDs of every process whose real uid is `uid`. */
export async function processesOf(uid: number): Promise<number[]> {
  const out: number[] = [];
  for (const name of await readdir('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    const status = await readFile(`/proc/${name}/status`, 'latin1').catch(() => '');
    const m = /^Uid:\s+(\d+)/m.exec(status);
    if (m && Number(m[1]) === uid) out.push(Number(name));
  }
  return out;
}

/**
 * Removes directories a VM's identity could write in. First nothing of that
 * identity may run (every process of it is killed: a QEMU that escaped its
 * guest cannot swap a directory for a link while root removes it), then the
 * tree goes; links in it are removed, never followed.
 */
export async function removeVmTree(dirs: string | readonly string[], identity?: { uid: number }): Promise<void> {
  if (identity) {
    for (let i = 0; i < 50; i++) {
      const pids = await processesOf(identity.uid);
      if (pids.length === 0) break;
      for (const pid of pids) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          // gone meanwhile
        }
      }
      await new Promise((r) => setTimeout(r, 20));
    }
  }
  for (const dir of typeof dirs === 'string' ? [dirs] : dirs) await rm(dir, { recursive: true, force: true, maxRetries: 3 });
}
