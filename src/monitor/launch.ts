/**
 * What the runtime hands a VM's monitor: `vms/ID/launch.json`, written before
 * the monitor starts (and read again by a monitor that adopts a running
 * QEMU): the argv to run, the restart policy, how to keep the console log.
 */
import { readFile, writeFile } from 'node:fs/promises';
import * as v from 'valibot';
import { FILES } from '../layout.ts';
import { RESTART_POLICIES } from '../qemu/index.ts';
import { jailedCommand } from '../jail/index.ts';
import { join } from 'node:path';

/** The file the runtime hands a VM's monitor (vms/ID/launch.json). */
export const LAUNCH_FILE = 'launch.json';

export const LaunchSchema = v.object({
  /** The exact QEMU argv, binary first. */
  argv: v.pipe(v.array(v.string()), v.minLength(1)),
  restart: v.picklist(RESTART_POLICIES),
  console: v.object({ maxBytes: v.pipe(v.number(), v.integer(), v.minValue(1)), keep: v.pipe(v.number(), v.integer(), v.minValue(1)) }),
  /** The words that run QEMU in its jail (src/jail/command.ts): the argv above behind the cgroup, environment, session and identity. Every QEMU of the VM is started with them. */
  exec: v.optional(v.pipe(v.array(v.string()), v.minLength(1))),
  /** Written by a GoShip before the jail (a VM running across an upgrade): QEMU's user. Read only to make `exec`. */
  user: v.optional(v.object({ uid: v.pipe(v.number(), v.integer(), v.minValue(0)), gid: v.pipe(v.number(), v.integer(), v.minValue(0)) })),
  /**
   * Start the first QEMU on this saved state (memory and devices, src/vmstate) instead of booting:
   * QEMU gets `-incoming defer` and the monitor sends it the file. A reboot or a restart boots as usual.
   */
  restore: v.optional(
    v.object({
      state: v.pipe(v.string(), v.minLength(1)),
      bytes: v.pipe(v.number(), v.integer(), v.minValue(1)),
      /** The state is the VM's own (a suspend): once loaded, and before the guest runs, it is spent: the record's `saved` and the file go. */
      consume: v.optional(v.literal(true)),
      /**
       * A template's clone: its state holds no RAM (`x-ignore-shared`). The first QEMU maps the template's memory
       * privately, from a sealed memfd (src/vmstate/memory.ts) the monitor holds, shared with the other clones'
       * monitors through the run directory's registry `.memory/KEY` unless `private`.
       */
      ram: v.optional(
        v.object({
          file: v.pipe(v.string(), v.minLength(1)),
          bytes: v.pipe(v.number(), v.integer(), v.minValue(1)),
          key: v.pipe(v.string(), v.regex(/^[a-z0-9][a-z0-9.-]{0,127}$/)),
          private: v.optional(v.literal(true)),
        }),
      ),
    }),
  ),
  /**
   * A template's VM: the first QEMU's RAM is this file (made by the runtime and given to the VM's identity),
   * mapped shared, so that the template's save leaves it out and its clones map it.
   */
  sharedRam: v.optional(v.object({ path: v.pipe(v.string(), v.minLength(1)), bytes: v.pipe(v.number(), v.integer(), v.minValue(1)) })),
  /**
   * Shared folders: before each QEMU, the monitor starts one virtiofsd per folder with `exec`
   * (src/jail/virtiofsd.ts) in the socket's directory, which it makes for `dirOwner` first;
   * once the socket is there, it gives it to `socketOwner` (QEMU's identity), and starts QEMU.
   */
  filesystems: v.optional(
    v.array(
      v.object({
        tag: v.pipe(v.string(), v.regex(/^[a-z0-9][a-z0-9-]{0,35}$/)),
        socket: v.pipe(v.string(), v.minLength(2)),
        exec: v.pipe(v.array(v.string()), v.minLength(1)),
        dirOwner: v.optional(v.object({ uid: v.pipe(v.number(), v.integer(), v.minValue(0)), gid: v.pipe(v.number(), v.integer(), v.minValue(0)) })),
        socketOwner: v.optional(v.object({ uid: v.pipe(v.number(), v.integer(), v.minValue(0)), gid: v.pipe(v.number(), v.integer(), v.minValue(0)) })),
      }),
    ),
  ),
  /** Start the first QEMU on this internal snapshot of its disk, memory included (`-loadvm TAG`): a snapshot restored. A reboot or a restart boots as usual. */
  loadvm: v.optional(v.pipe(v.string(), v.regex(/^[a-z0-9][a-z0-9-]{0,62}$/))),
  /** The VM's identity (GoShip runs as root) and its cgroup's directories: the monitor reads the memory cgroup's OOM kills and removes the cgroup at the end. */
  jail: v.optional(
    v.object({
      uid: v.optional(v.pipe(v.number(), v.integer(), v.minValue(1))),
      cgroup: v.optional(v.object({ version: v.picklist([1, 2]), vmDirs: v.array(v.string()), memoryBytes: v.pipe(v.number(), v.integer(), v.minValue(1)) })),
    }),
  ),
});
export type Launch = v.InferOutput<typeof LaunchSchema> & { exec: string[] };

export function launchFile(vmDir: string): string {
  return join(vmDir, LAUNCH_FILE);
}

/** The runtime writes it; the argv also goes to argv.json, where people look for it. */
export async function writeLaunch(vmDir: string, launch: Launch): Promise<void> {
  await writeFile(launchFile(vmDir), `${JSON.stringify(launch, null, 2)}\n`, { mode: 0o600 });
  await writeFile(join(vmDir, FILES.argv), `${JSON.stringify(launch.argv, null, 2)}\n`, { mode: 0o600 });
}

export async function readLaunch(vmDir: string): Promise<Launch> {
  const text = await readFile(launchFile(vmDir), 'utf8');
  return withExec(v.parse(LaunchSchema, JSON.parse(text)));
}

/** Pure: a launch.json from before the jail (no `exec`) gets the jailed command of its argv and user, so a reboot of a VM that ran across an upgrade starts QEMU the one way. */
export function withExec(l: v.InferOutput<typeof LaunchSchema>): Launch {
  return { ...l, exec: l.exec ?? jailedCommand({ qemuArgv: l.argv, ...(l.user && l.user.uid !== 0 ? { identity: { uid: l.user.uid, gid: l.user.gid } } : {}) }) };
}
