/**
 * A second GoShip node on this machine, for the nodes tests and benchmark:
 * Debian's sshd on a loopback port with its own config and host key, and an
 * unprivileged user (GoShip as a non-root user) whose GoShip state lives in
 * its own XDG directories, logging in with a key made here and checked
 * against a known_hosts file written here. Needs root (useradd, sshd).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { chmod, chown, mkdir, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { connect } from 'node:net';
import { join } from 'node:path';
import { execa } from 'execa';
import { freePort } from '../helpers/net.ts';

export const NODE_USER = 'goship-node-test';

export interface SshNode {
  user: string;
  home: string;
  port: number;
  /** `ssh://USER@127.0.0.1:PORT` */
  url: string;
  identity: string;
  knownHosts: string;
  /** `--identity … --known-hosts …` for node add. */
  keyArgs: string[];
  start(): Promise<void>;
  /** Kills sshd and every session it forked, as a host going down would (a shared connection dies too). */
  stop(): Promise<void>;
  /** Stops sshd, kills the user's processes (its QEMUs), removes its GoShip state. */
  cleanup(): Promise<void>;
}

/** sshd answers on the port with its banner. */
function banner(port: number): Promise<boolean> {
  return new Promise((res) => {
    const s = connect(port, '127.0.0.1');
    s.once('data', (d) => {
      s.destroy();
      res(d.toString().startsWith('SSH-'));
    });
    s.once('error', () => res(false));
  });
}

async function descendants(root: number): Promise<Set<number>> {
  const parent = new Map<number, number>();
  for (const e of await readdir('/proc')) {
    if (!/^\d+$/.test(e)) continue;
    const stat = await readFile(`/proc/${e}/stat`, 'utf8').catch(() => '');
    const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
    if (ppid) parent.set(Number(e), ppid);
  }
  const out = new Set([root]);
  for (let grew = true; grew; ) {
    grew = false;
    for (const [pid, ppid] of parent) {
      if (out.has(ppid) && !out.has(pid)) {
        out.add(pid);
        grew = true;
      }
    }
  }
  return out;
}

/** Makes the user, keys and sshd config under `dir` (owner-only) and starts sshd. */
export async function startSshNode(dir: string, user = NODE_USER): Promise<SshNode> {
  await mkdir(dir, { recursive: true, mode: 0o700 });
  await chmod(dir, 0o700);
  if ((await execa('id', ['-u', user], { reject: false })).exitCode !== 0) await execa('useradd', ['--create-home', '--shell', '/bin/sh', user]);
  // No password, but not locked either ('!'): sshd without PAM refuses a locked account even with a key.
  await execa('usermod', ['-p', '*', user]);
  const home = (await execa('getent', ['passwd', user])).stdout.split(':')[5]!;
  const uid = Number((await execa('id', ['-u', user])).stdout);
  const gid = Number((await execa('id', ['-g', user])).stdout);
  const clean = async (): Promise<void> => {
    await execa('pkill', ['-KILL', '-u', user], { reject: false });
    await rm(join(home, '.local'), { recursive: true, force: true });
    await rm(`/tmp/goship-${uid}`, { recursive: true, force: true });
  };
  await clean();

  const identity = join(dir, 'id');
  await rm(identity, { force: true });
  await rm(join(dir, 'host'), { force: true });
  await execa('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'goship-test-client', '-f', identity]);
  await execa('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'goship-test-host', '-f', join(dir, 'host')]);
  await mkdir(join(home, '.ssh'), { recursive: true, mode: 0o700 });
  await writeFile(join(home, '.ssh', 'authorized_keys'), await readFile(`${identity}.pub`), { mode: 0o600 });
  await chown(join(home, '.ssh'), uid, gid);
  await chown(join(home, '.ssh', 'authorized_keys'), uid, gid);

  const port = await freePort();
  await mkdir('/run/sshd', { recursive: true, mode: 0o755 });
  const config = join(dir, 'sshd_config');
  await writeFile(
    config,
    [
      `Port ${port}`,
      'ListenAddress 127.0.0.1',
      `HostKey ${join(dir, 'host')}`,
      `PidFile ${join(dir, 'sshd.pid')}`,
      'AuthorizedKeysFile .ssh/authorized_keys',
      'PasswordAuthentication no',
      'KbdInteractiveAuthentication no',
      'UsePAM no',
      'PermitRootLogin no',
      `AllowUsers ${user}`,
      '',
    ].join('\n'),
    { mode: 0o600 },
  );
  const knownHosts = join(dir, 'known_hosts');
  const hostKey = (await readFile(join(dir, 'host.pub'), 'utf8')).trim().split(' ').slice(0, 2).join(' ');
  await writeFile(knownHosts, `[127.0.0.1]:${port} ${hostKey}\n`, { mode: 0o600 });

  let sshd: ChildProcess | undefined;
  const node: SshNode = {
    user,
    home,
    port,
    url: `ssh://${user}@127.0.0.1:${port}`,
    identity,
    knownHosts,
    keyArgs: ['--identity', identity, '--known-hosts', knownHosts],
    async start() {
      sshd = spawn('/usr/sbin/sshd', ['-D', '-e', '-f', config], { stdio: ['ignore', 'ignore', 'pipe'] });
      let log = '';
      sshd.stderr?.on('data', (d: Buffer) => (log += d.toString()));
      const deadline = Date.now() + 30_000;
      while (!(await banner(port))) {
        if (Date.now() > deadline || sshd.exitCode !== null) throw new Error(`sshd did not come up on port ${port}: ${log}`);
        await new Promise((r) => setTimeout(r, 100));
      }
    },
    async stop() {
      if (!sshd?.pid) return;
      for (const pid of await descendants(sshd.pid)) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          /* gone */
        }
      }
      sshd = undefined;
    },
    async cleanup() {
      await node.stop();
      await clean();
    },
  };
  await node.start();
  return node;
}
