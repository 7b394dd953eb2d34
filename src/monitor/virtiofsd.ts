/**
 * Where a shared folder's virtiofsd is spawned: one per folder before each
 * QEMU (a virtiofsd serves one QEMU and exits when it goes), by the words of
 * launch.json (src/jail/virtiofsd.ts), in the directory of its socket. The
 * socket is there before QEMU starts: QEMU connects to it as a client.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, openSync } from 'node:fs';
import { chmod, chown, lchown, lstat, mkdir, rm } from 'node:fs/promises';
import { dirname } from 'node:path';
import type { Launch } from './launch.ts';
import { logTail } from '../qemu/index.ts';

/** How long a virtiofsd may take to make its socket (~40 ms here). */
export const VIRTIOFSD_SOCKET_TIMEOUT_MS = 10_000;

export type FsSpec = NonNullable<Launch['filesystems']>[number];

export interface FsDaemon {
  tag: string;
  pid: number;
  kill(): void;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/**
 * Starts the virtiofsd of `fs` and returns once its socket is QEMU's to
 * connect to; throws with the daemon's own last words when it could not.
 * Its output goes to `log` (made anew).
 */
export async function startVirtiofsd(fs: FsSpec, log: string): Promise<FsDaemon> {
  const dir = dirname(fs.socket);
  // A stale socket of an earlier daemon would look ready.
  await rm(dir, { recursive: true, force: true });
  await mkdir(dir, { mode: 0o700 });
  if (fs.dirOwner) {
    // The daemon (the folder's owner) makes its socket here; QEMU's group may pass through to it.
    await chown(dir, fs.dirOwner.uid, fs.socketOwner?.gid ?? fs.dirOwner.gid);
    await chmod(dir, 0o710);
  }
  const fd = openSync(log, 'w', 0o600);
  let child: ChildProcess;
  try {
    const [binary, ...args] = fs.exec;
    // Detached: a monitor that dies leaves it to its QEMU, as it leaves QEMU running.
    child = spawn(binary!, args, { cwd: dir, stdio: ['ignore', fd, fd], detached: true, env: { PATH: '/usr/sbin:/usr/bin:/sbin:/bin' } });
  } finally {
    closeSync(fd);
  }
  child.unref();
  let gone: string | undefined;
  child.once('exit', (code, signal) => (gone = signal ? `was killed by ${signal}` : `exited with code ${code}`));
  child.once('error', (err) => (gone = err.message));
  const daemon: FsDaemon = { tag: fs.tag, pid: child.pid ?? 0, kill: () => void child.kill('SIGKILL') };
  const deadline = Date.now() + VIRTIOFSD_SOCKET_TIMEOUT_MS;
  for (;;) {
    // lstat: the daemon (another user) owns the directory; a link it put there is never followed.
    if ((await lstat(fs.socket).catch(() => undefined))?.isSocket()) break;
    if (gone !== undefined || Date.now() > deadline) {
      daemon.kill();
      const words = (await logTail(log)).split('\n').filter(Boolean).slice(-3).join(' | ');
      throw new Error(`the virtiofsd of shared folder ${fs.tag} ${gone ?? `made no socket within ${VIRTIOFSD_SOCKET_TIMEOUT_MS} ms`}${words ? `: ${words}` : ''}`);
    }
    await sleep(10);
  }
  // lchown: root acts on the entry itself, whatever the daemon has swapped in since.
  if (fs.socketOwner) await lchown(fs.socket, fs.socketOwner.uid, fs.socketOwner.gid);
  return daemon;
}
