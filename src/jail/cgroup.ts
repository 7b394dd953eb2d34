/**
 * A cgroup per VM (pure): which hierarchy the host has, where the VM's
 * cgroup goes, and what is written there. src/jail/cgroup-io.ts applies it.
 *
 * - cgroup v1 (this project's test host, hybrid systemd): one directory per
 *   controller, `memory`, `cpu`, `pids`, each `…/goship/VMID` below the
 *   cgroup the starting process is in (so an outer limit, a session's or a
 *   service's, still holds): `memory.limit_in_bytes`, `cpu.cfs_period_us` +
 *   `cpu.cfs_quota_us`, `pids.max`.
 * - cgroup v2: one directory, `goship/VMID` at the top of the hierarchy as
 *   root (the controllers enabled in `cgroup.subtree_control` on the way), or
 *   below a cgroup systemd delegated to the user (`user@UID.service`):
 *   `memory.max`, `cpu.max` ("QUOTA PERIOD"), `pids.max`.
 * - neither (or nothing writable): no limit, and the reason says why.
 */
import { join } from 'node:path';
import { TCG_TB_SIZE_MIB } from '../qemu/index.ts';

export const CONTROLLERS = ['memory', 'cpu', 'pids'] as const;
export type Controller = (typeof CONTROLLERS)[number];

/** The cgroup hierarchies the host mounts. */
export type CgroupHost =
  | { version: 1; mounts: Partial<Record<Controller, string>> }
  | { version: 2; mount: string }
  | { version: 0 };

/**
 * Pure: the hierarchies from /proc/self/mountinfo. A v1 hierarchy that holds
 * the memory controller wins (on a hybrid host the v2 one holds none).
 */
export function parseCgroupMounts(mountinfo: string): CgroupHost {
  const v1: Partial<Record<Controller, string>> = {};
  let v2: string | undefined;
  for (const line of mountinfo.split('\n')) {
    const [left, right] = line.split(' - ');
    if (!left || !right) continue;
    const mountPoint = unescapeMount(left.split(' ')[4] ?? '');
    const [fstype, , superOpts = ''] = right.split(' ');
    if (fstype === 'cgroup2') v2 ??= mountPoint;
    if (fstype !== 'cgroup') continue;
    const opts = superOpts.split(',');
    for (const c of CONTROLLERS) if (opts.includes(c)) v1[c] ??= mountPoint;
  }
  if (v1.memory) return { version: 1, mounts: v1 };
  if (v2) return { version: 2, mount: v2 };
  return { version: 0 };
}

/** mountinfo escapes space, tab, newline and backslash as octal. */
function unescapeMount(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
}

/** Pure: the cgroup of this process in each hierarchy, from /proc/self/cgroup (`v2` for the unified one). */
export function parseOwnCgroups(procSelfCgroup: string): Partial<Record<Controller | 'v2', string>> {
  const out: Partial<Record<Controller | 'v2', string>> = {};
  for (const line of procSelfCgroup.split('\n')) {
    const m = /^(\d+):([^:]*):(.*)$/.exec(line.trim());
    if (!m) continue;
    const [, hier, controllers, path] = m as unknown as [string, string, string, string];
    if (hier === '0' && controllers === '') out.v2 = path;
    for (const c of controllers.split(',')) if ((CONTROLLERS as readonly string[]).includes(c)) out[c as Controller] = path;
  }
  return out;
}

/** What a VM's cgroup allows. */
export interface CgroupLimits {
  /**
   * The group's CPU weight, relative to a single task's (1): a cgroup weighs
   * as one task against the rest of the host, so a VM's QEMU (its vCPU
   * threads and its I/O beside them) would get one task's share next to its
   * monitor or any other busy process. vCPUs + 1 by default.
   */
  cpuWeight: number;
  memoryBytes: number;
  /** Microseconds of CPU time per period (`cpus × period`). */
  cpuQuotaUs: number;
  cpuPeriodUs: number;
  pids: number;
}

/** The CPU accounting period (the kernel's default). */
export const CPU_PERIOD_US = 100_000;
/** QEMU's own memory beside the guest's, by default: its code, devices, buffers, I/O threads. */
export const QEMU_OVERHEAD_BYTES = 256 * 1024 * 1024;
/**
 * Under TCG, QEMU's translation buffer on top: the size the argv gives it
 * (`tb-size`); the pages it has filled stay charged to the VM.
 */
export const TCG_BUFFER_BYTES = TCG_TB_SIZE_MIB * 1024 * 1024;
/**
 * Under TCG, per vCPU on top: its software TLBs, which grow with the guest's
 * working set (a 2-vCPU guest of 1.5 GiB building Docker images had QEMU at
 * 2.74 GiB of anonymous memory, 240 MiB beyond the guest and the buffer).
 */
export const TCG_VCPU_BYTES = 256 * 1024 * 1024;
/** Tasks (threads) QEMU may have beyond one per vCPU: its main loop, RCU, and a worker pool of up to 64. */
export const QEMU_BASE_PIDS = 128;

/** Pure: the limits of a VM from its spec: memory = guest + overhead (+ the TCG buffer and TLBs), CPU = `cpus` host CPUs (default vCPUs + 1), pids. */
export function limitsFor(c: { memoryBytes: number; vcpus: number; accel: 'kvm' | 'tcg'; limits?: { cpus?: number; memoryOverheadBytes?: number; pids?: number } }): CgroupLimits {
  const overhead = c.limits?.memoryOverheadBytes ?? QEMU_OVERHEAD_BYTES + (c.accel === 'tcg' ? TCG_BUFFER_BYTES + c.vcpus * TCG_VCPU_BYTES : 0);
  const cpus = c.limits?.cpus ?? c.vcpus + 1;
  return {
    cpuWeight: c.vcpus + 1,
    memoryBytes: c.memoryBytes + overhead,
    cpuQuotaUs: Math.round(cpus * CPU_PERIOD_US),
    cpuPeriodUs: CPU_PERIOD_US,
    pids: c.limits?.pids ?? QEMU_BASE_PIDS + c.vcpus,
  };
}

export interface CgroupWrite {
  path: string;
  value: string;
}

/** Where a VM's cgroup is and what is written to make it. */
export interface CgroupPlan {
  version: 1 | 2;
  /** Directories to make, in order (GoShip's parent ones included). */
  dirs: string[];
  /** The VM's own directories: removed when the VM is done. */
  vmDirs: string[];
  writes: CgroupWrite[];
  /** Where QEMU's PID is written (src/jail/command.ts). */
  procs: string[];
  limits: CgroupLimits;
}

/** No cgroup for this VM, and why. */
export interface NoCgroup {
  version: 0;
  reason: string;
}

export interface PlanInput {
  host: CgroupHost;
  own: Partial<Record<Controller | 'v2', string>>;
  vmId: string;
  limits: CgroupLimits;
  root: boolean;
  /** Not root, cgroup v2: a cgroup systemd delegated to this user, if there is one (an absolute directory). */
  delegated?: string;
  /** The host's CPUs: GoShip's parent cgroup weighs as that many tasks. */
  hostCpus: number;
}

/**
 * Pure: the CPU weight of GoShip's parent cgroup (`goship`, every VM's), in
 * tasks. A cgroup weighs as one task against its siblings, the host's own
 * processes included, however many VMs it holds: at the default, all VMs
 * together would get one task's share of the host next to any busy process
 * (docs/decisions.md has the figure). As many tasks as the host has CPUs lets
 * them have the whole host when it is free and an even share of each CPU when
 * it is not, as QEMUs outside any cgroup would; inside, each VM weighs by its
 * own vCPUs.
 */
export function parentCpuWeight(hostCpus: number): number {
  return Math.max(1, Math.floor(hostCpus));
}

/** Pure: the VM's cgroup on this host. */
export function cgroupPlan(p: PlanInput): CgroupPlan | NoCgroup {
  const { host, limits } = p;
  if (host.version === 0) return { version: 0, reason: 'the host mounts no cgroup hierarchy' };
  if (host.version === 1) {
    if (!p.root) return { version: 0, reason: 'cgroup v1 cannot be delegated to a user: run GoShip as root for limits' };
    const missing = CONTROLLERS.filter((c) => host.mounts[c] === undefined);
    if (missing.length > 0) return { version: 0, reason: `the host mounts no cgroup v1 ${missing.join(', ')} controller` };
    const dir = (c: Controller): string => join(host.mounts[c]!, p.own[c] ?? '/', 'goship', p.vmId);
    const parentOf = (c: Controller): string => join(host.mounts[c]!, p.own[c] ?? '/', 'goship');
    return {
      version: 1,
      dirs: CONTROLLERS.flatMap((c) => [parentOf(c), dir(c)]),
      vmDirs: CONTROLLERS.map(dir),
      writes: [
        { path: join(parentOf('cpu'), 'cpu.shares'), value: String(1024 * parentCpuWeight(p.hostCpus)) },
        { path: join(dir('memory'), 'memory.limit_in_bytes'), value: String(limits.memoryBytes) },
        // A task weighs 1024 shares.
        { path: join(dir('cpu'), 'cpu.shares'), value: String(1024 * limits.cpuWeight) },
        { path: join(dir('cpu'), 'cpu.cfs_period_us'), value: String(limits.cpuPeriodUs) },
        { path: join(dir('cpu'), 'cpu.cfs_quota_us'), value: String(limits.cpuQuotaUs) },
        { path: join(dir('pids'), 'pids.max'), value: String(limits.pids) },
      ],
      procs: CONTROLLERS.map((c) => join(dir(c), 'cgroup.procs')),
      limits,
    };
  }
  const base = p.root ? join(host.mount, 'goship') : p.delegated ? join(p.delegated, 'goship') : undefined;
  if (base === undefined) return { version: 0, reason: 'GoShip does not run as root and systemd delegated no cgroup to this user' };
  const dir = join(base, p.vmId);
  const enable = '+memory +cpu +pids';
  return {
    version: 2,
    dirs: [base, dir],
    vmDirs: [dir],
    writes: [
      { path: join(p.root ? host.mount : p.delegated!, 'cgroup.subtree_control'), value: enable },
      { path: join(base, 'cgroup.subtree_control'), value: enable },
      { path: join(base, 'cpu.weight'), value: String(Math.min(10_000, 100 * parentCpuWeight(p.hostCpus))) },
      { path: join(dir, 'memory.max'), value: String(limits.memoryBytes) },
      // A task weighs 100 (cpu.weight's default).
      { path: join(dir, 'cpu.weight'), value: String(Math.min(10_000, 100 * limits.cpuWeight)) },
      { path: join(dir, 'cpu.max'), value: `${limits.cpuQuotaUs} ${limits.cpuPeriodUs}` },
      { path: join(dir, 'pids.max'), value: String(limits.pids) },
    ],
    procs: [join(dir, 'cgroup.procs')],
    limits,
  };
}

/** Pure: how many times the kernel's OOM killer killed in the VM's cgroup, from `memory.oom_control` (v1) or `memory.events` (v2). */
export function parseOomKills(text: string): number {
  const m = /^oom_kill (\d+)$/m.exec(text);
  return m ? Number(m[1]) : 0;
}
