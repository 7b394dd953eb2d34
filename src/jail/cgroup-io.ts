/** The VM's cgroup on this host: read the hierarchies, make the cgroup, read its OOM kills, remove it. */
import { access, constants, mkdir, readFile, rmdir, writeFile } from 'node:fs/promises';
import { availableParallelism } from 'node:os';
import { join } from 'node:path';
import { cgroupPlan, parseCgroupMounts, parseOomKills, parseOwnCgroups, type CgroupLimits, type CgroupPlan, type NoCgroup } from './cgroup.ts';

/** A cgroup v2 directory systemd delegated to this user (`user@UID.service`), if this process may write in it. */
async function delegatedCgroup(mount: string, uid: number): Promise<string | undefined> {
  const dir = join(mount, 'user.slice', `user-${uid}.slice`, `user@${uid}.service`);
  try {
    await access(dir, constants.W_OK);
    return dir;
  } catch {
    return undefined;
  }
}

/** The plan for VM `vmId` on this host. */
export async function planCgroup(vmId: string, limits: CgroupLimits): Promise<CgroupPlan | NoCgroup> {
  const [mountinfo, own] = await Promise.all([readFile('/proc/self/mountinfo', 'utf8').catch(() => ''), readFile('/proc/self/cgroup', 'utf8').catch(() => '')]);
  const host = parseCgroupMounts(mountinfo);
  const uid = process.getuid?.() ?? 0;
  const root = uid === 0;
  const delegated = host.version === 2 && !root ? await delegatedCgroup(host.mount, uid) : undefined;
  return cgroupPlan({ host, own: parseOwnCgroups(own), vmId, limits, root, hostCpus: availableParallelism(), ...(delegated ? { delegated } : {}) });
}

/** Makes the cgroup and sets its limits. A failure says which file and why; the caller decides what it means. */
export async function applyCgroup(plan: CgroupPlan): Promise<void> {
  for (const d of plan.dirs) {
    await mkdir(d, { mode: 0o755 }).catch((err: NodeJS.ErrnoException) => {
      if (err.code !== 'EEXIST') throw err;
    });
  }
  for (const w of plan.writes) await writeFile(w.path, w.value);
}

/** Removes the VM's cgroup directories (each must be empty: its processes gone). */
export async function removeCgroup(vmDirs: readonly string[]): Promise<void> {
  for (const d of vmDirs) {
    await rmdir(d).catch((err: NodeJS.ErrnoException) => {
      if (err.code !== 'ENOENT') throw err;
    });
  }
}

/** How many processes the OOM killer killed in the VM's memory cgroup so far (0 where the cgroup is gone). */
export async function oomKills(plan: Pick<CgroupPlan, 'version' | 'vmDirs'>): Promise<number> {
  const file = plan.version === 1 ? 'memory.oom_control' : 'memory.events';
  // v1: the memory controller's directory is the first; v2: the only one.
  const dir = plan.vmDirs[0];
  if (dir === undefined) return 0;
  return parseOomKills(await readFile(join(dir, file), 'utf8').catch(() => ''));
}
