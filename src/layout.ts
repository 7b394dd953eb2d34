/**
 * Every directory and per-instance file name GoShip uses, in one place.
 *
 * Root: state in /var/lib/goship, sockets in /run/goship.
 * Other users: $XDG_DATA_HOME/goship (default ~/.local/share/goship) and
 * $XDG_RUNTIME_DIR/goship (fallback /tmp/goship-UID).
 * GOSHIP_HOME and GOSHIP_RUN override both. Directories are created 0700.
 */
import { homedir } from 'node:os';
import { join } from 'node:path';

/** Linux `sun_path` is 108 bytes including the terminating NUL. */
export const UNIX_SOCKET_PATH_MAX = 107;

export const FILES = {
  overlay: 'disk.qcow2',
  seed: 'seed.iso',
  consoleLog: 'console.log',
  qemuLog: 'qemu.log',
  pidfile: 'qemu.pid',
  argv: 'argv.json',
  /** GoShip's QMP monitor: only the VM's monitor process connects to it. */
  qmpSocket: 'qmp.sock',
  /** A second QMP monitor for people (`vm qmp`, qmp-shell, socat): holding it never blocks GoShip. */
  qmpUserSocket: 'qmp-user.sock',
  /** The agent's virtio-serial chardev: the VM's monitor holds the one session. */
  agentSocket: 'agent.sock',
  /** A suspended VM's memory and devices (root's, 0600, in its directory, where its QEMU cannot create or rename). */
  savedState: 'saved.state',
  /** A template's VM's RAM, mapped shared (`image warm`): it becomes the template's memory. */
  sharedRam: 'memory',
  /** Where QEMU sends a VM's state on a save (the other end is GoShip's). */
  saveSocket: 'save.sock',
  /** Where a QEMU started on a saved state listens for it (`-incoming defer`); the monitor sends the state file there. */
  incomingSocket: 'incoming.sock',
  /** The serial console's chardev: the VM's monitor reads it into console.log. */
  consoleSocket: 'console.sock',
  /** The VM's monitor serves GoShip's clients here (owner-only). */
  monitorSocket: 'monitor.sock',
  /** What the monitor process writes about itself. */
  monitorLog: 'monitor.log',
  /** The project's own SSH key pair (`goshipctl ssh`): the private key owner-only, `.pub` beside it. */
  sshKey: 'ssh_key',
  /** The guest's SSH host keys as the agent read them: ssh checks them against this, never asks. */
  sshKnownHosts: 'ssh_known_hosts',
  /** `Host goship-NAME`, as `goshipctl ssh-config NAME` prints it (`ssh -F`). */
  sshConfig: 'ssh_config',
  /** The VM's monitor relays each connection here to dockerd's socket in the guest (`goshipctl project docker`). */
  dockerSocket: 'docker.sock',
  imageBase: 'base.qcow2',
  imageKernel: 'vmlinuz',
  imageInitrd: 'initrd.img',
  imageManifest: 'manifest.json',
  state: 'state.json',
} as const;

export interface Env {
  [key: string]: string | undefined;
}

function isRoot(): boolean {
  return typeof process.getuid === 'function' && process.getuid() === 0;
}

/** Where state, images and VM disks live. */
export function homeDir(env: Env = process.env, root = isRoot()): string {
  if (env.GOSHIP_HOME) return env.GOSHIP_HOME;
  if (root) return '/var/lib/goship';
  const data = env.XDG_DATA_HOME || join(env.HOME || homedir(), '.local', 'share');
  return join(data, 'goship');
}

/** Where sockets live: kept short, since a unix socket path has at most 107 bytes. */
export function runDir(env: Env = process.env, root = isRoot()): string {
  if (env.GOSHIP_RUN) return env.GOSHIP_RUN;
  if (root) return '/run/goship';
  if (env.XDG_RUNTIME_DIR) return join(env.XDG_RUNTIME_DIR, 'goship');
  const uid = typeof process.getuid === 'function' ? process.getuid() : 0;
  return `/tmp/goship-${uid}`;
}

export class Layout {
  constructor(
    readonly home: string,
    readonly run: string,
  ) {}

  static fromEnv(env: Env = process.env): Layout {
    return new Layout(homeDir(env), runDir(env));
  }

  get stateFile(): string {
    return join(this.home, FILES.state);
  }
  get imagesDir(): string {
    return join(this.home, 'images');
  }
  imageDir(name: string): string {
    return join(this.imagesDir, name);
  }
  get vmsDir(): string {
    return join(this.home, 'vms');
  }
  vmDir(id: string): string {
    return join(this.vmsDir, id);
  }
  vmFile(id: string, file: keyof typeof FILES): string {
    return join(this.vmDir(id), FILES[file]);
  }
  vmRunDir(id: string): string {
    return join(this.run, id);
  }
  /** Who holds which template's memory (src/vmstate/memory.ts): `.memory/KEY/MONITORPID.json`, owner-only. Not a VM name. */
  memoryRegistry(key: string): string {
    return join(this.run, '.memory', key);
  }
  /** A socket in the VM's run directory. */
  vmSocket(id: string, file: 'qmpSocket' | 'qmpUserSocket' | 'agentSocket' | 'consoleSocket' | 'monitorSocket' | 'saveSocket' | 'incomingSocket' | 'dockerSocket'): string {
    return join(this.vmRunDir(id), FILES[file]);
  }
  qmpSocket(id: string): string {
    return this.vmSocket(id, 'qmpSocket');
  }
  agentSocket(id: string): string {
    return this.vmSocket(id, 'agentSocket');
  }
}
