/**
 * Projects: one VM per project per node; every workload of a project runs in
 * its VM. `create` makes the VM (overlay on the image, cloud-init seed), boots
 * it and waits until it is usable: the agent answers, the network is online,
 * cloud-init has finished (src/runtime/guest-boot.ts).
 */
import { existsSync } from 'node:fs';
import { readFile, stat } from 'node:fs/promises';
import { ValidationError, type Issue } from '../errors.ts';
import { RuntimeError } from './errors.ts';
import { checkSshKey } from '../cloudinit/index.ts';
import { MIN_CONSOLE_MAX_BYTES, NAME_PATTERN, NAME_RULE, RESTART_POLICIES, parseSize, privilegedPortIssue, type HostFacts, type RestartPolicy } from '../qemu/index.ts';
import { DEFAULT_HOST_ADDR, parsePort, portKey, takenPorts } from './ports.ts';
import type { Forward, MonitorClient } from '../monitor/index.ts';
import {
  type App,
  type PendingOp,
  type PortForward,
  type Project,
  type State,
  type Store,
  type Vm,
  type VmSaved,
  type VmSnapshot,
  LOCAL_NODE,
  assertNameFree,
  findRecord,
  requireRecord,
} from '../store/index.ts';
import { bootTrack, waitGuestBoot, type BootProgress, type BootStep, type WaitLevel } from './guest-boot.ts';
import type { ImageSource, ResolvedImage } from './images.ts';
import { randomBytes } from 'node:crypto';
import { GoshipError } from '../errors.ts';
import type { Layout } from '../layout.ts';
import { within } from '../jail/index.ts';
import { IMAGE_HOSTNAME, giveIdentity, growDisk, listTemplates, saveTemplate, usableTemplate, type TemplateInfo } from './templates.ts';
import { trace } from './trace.ts';
import { newProjectKey, sshAccess, sshAlias, sshFiles } from './ssh.ts';
import { mountArgv, mountTag, parseMounts, resolveMountSources, type SharedFolder } from './mounts.ts';
import { setGuestClock } from './saved-state.ts';
import { VmSnapshots } from './snapshots.ts';
import { VmStateError } from '../vmstate/index.ts';
import { PortTakenError, busyError, stateError } from './errors.ts';
import { LIVE_STATES, opAbandoned, type CreateVmOptions, type StopVmResult, type VmService } from './vms.ts';
import type { StopTimeouts } from '../monitor/index.ts';

export const PROJECT_DEFAULTS = { cpus: 1, memory: '1G', disk: '10G', image: 'default' } as const;

export interface CreateProjectOptions extends StartProjectOptions {
  name: string;
  cpus?: number;
  /** A size: '2G', '512M' or bytes. */
  memory?: string | number;
  /** Virtual size of the project's disk (default 10G; at least the image's). */
  disk?: string | number;
  image?: string;
  /** OpenSSH public key lines. */
  sshKeys?: string[];
  /** `HOST:GUEST` or `udp:HOST:GUEST` strings, or parsed forwards. */
  ports?: (string | PortForward)[];
  /** What the VM's monitor does when QEMU crashes: `no` (default) or `on-crash` (start it again, with backoff). */
  restart?: RestartPolicy;
  /** console.log is rotated at this size (one older file kept); default 8M. */
  consoleMaxSize?: string;
  /** Shared folders, `HOST_DIR:GUEST_DIR[:ro]` (mounts.ts). */
  mounts?: string[];
  /** Create the records, the overlay and the seed, but do not boot. */
  noStart?: boolean;
  /** Boot from the image even when a template of this shape exists. */
  cold?: boolean;
  /** A clone's memory is a copy of its template's of its own: no page shared with another clone (docs/templates.md). */
  privateMemory?: boolean;
  /** The project's creation time when it is made again elsewhere (`project move`): its cloud-init instance id follows from it, so the guest does not provision itself anew. */
  createdAt?: string;
  /**
   * With noStart: the create's op stays on the project for the caller to
   * clear (`project receive` fills the project in first), so a caller killed
   * meanwhile leaves it `broken`, never a project that looks whole.
   */
  holdOp?: boolean;
}

/** Where a created project's VM came from: a template restored, or a boot (and why no template served). */
export type ProjectOrigin = { from: 'template'; template: string } | { from: 'boot'; reason: string };

export interface WarmOptions {
  image?: string;
  cpus?: number;
  memory?: string | number;
  disk?: string | number;
  timeoutMs?: number;
  onProgress?: (p: BootProgress) => void;
}

export interface StartProjectOptions {
  /** A suspended project boots from its disk instead, its saved state removed (its memory is lost, as in a power cut). */
  discardState?: boolean;
  /** `boot` (default): the agent, then network-online.target, then cloud-init's end; `agent`: its hello only. */
  wait?: WaitLevel;
  /** For all of it, from the command's start. Default 300 s. */
  timeoutMs?: number;
  /** Each step as it begins and ends (a TTY's progress line). */
  onProgress?: (p: BootProgress) => void;
}

/** How long a project's VM may take to be ready, by default. */
export const DEFAULT_READY_TIMEOUT_MS = 300_000;

export interface ProjectView {
  project: Project;
  vm: Vm | undefined;
}

/** A project's start: what was waited for and when each step was reached. */
export interface BootReport {
  wait: WaitLevel;
  steps: BootStep[];
  totalMs: number;
}

/** Every project of a state with its VM, by name. Pure. */
export function projectViews(s: State): ProjectView[] {
  return Object.values(s.projects)
    .sort((a, b) => a.name.localeCompare(b.name))
    .map((project) => ({ project, vm: s.vms[project.vmId] }));
}

/**
 * Pure: the state a project takes from its VM, or undefined when it keeps its
 * own. Only a project no command is working on (no `op`) follows: `ready`
 * whose VM crashed becomes `crashed` (with the VM's end and what to run),
 * `ready` whose VM stopped by itself becomes `stopped`; a `stopped` or
 * `crashed` project whose VM runs again is `ready`; a project follows its
 * VM into and out of `suspended`.
 */
export function projectStateFor(p: Project, vm: Vm | undefined): { state: Project['state']; lastError?: string } | undefined {
  if (p.op || !vm || vm.op) return undefined;
  if (p.state === 'ready' && vm.state === 'crashed') {
    return { state: 'crashed', lastError: `its VM crashed: ${vm.end?.summary ?? 'it ended unseen'}; start it again: goshipctl project start ${p.name} (the VM's logs: goshipctl vm status ${vm.name})` };
  }
  if (p.state === 'ready' && vm.state === 'stopped') return { state: 'stopped', lastError: `its VM stopped: ${vm.end?.summary ?? 'it ended'}; start it: goshipctl project start ${p.name}` };
  // A suspend whose goshipctl died after the save, finished by reconcile.
  if (p.state === 'ready' && vm.state === 'suspended') return { state: 'suspended' };
  if ((p.state === 'stopped' || p.state === 'crashed' || p.state === 'suspended') && (vm.state === 'ready' || vm.state === 'running')) return { state: 'ready' };
  if (p.state === 'suspended' && (vm.state === 'stopped' || vm.state === 'crashed')) return { state: 'stopped', lastError: `its VM's saved state is gone: ${vm.end?.summary ?? 'it was started and stopped'}` };
  return undefined;
}

/** Pure: what an app says after a goshipctl working on it was killed. */
export function appOpInterrupted(op: PendingOp): string {
  const what = op.kind === 'create' || op.kind === 'start' ? 'deploy' : op.kind === 'delete' ? 'remove' : 'stop';
  return `${what} was interrupted (goshipctl pid ${op.pid} is gone); what runs in the VM is as that command left it: run it again, or remove the app`;
}

/** A project's forwards: as recorded (applied at every start) and as QEMU has them now (null while stopped). */
export interface PortsView {
  recorded: PortForward[];
  live: Forward[] | null;
}

/** The VM's argv forwards follow the project's ports. */
function setForwards(vm: Vm, ports: PortForward[]): void {
  const network = (vm.config.network ?? { mode: 'user' }) as Record<string, unknown>;
  vm.config = { ...vm.config, network: { ...network, forwards: ports.map((p) => ({ proto: p.proto, host: p.host, guest: p.guest })) } };
}

export interface ProjectInfo extends ProjectView {
  diskUsageBytes: number | undefined;
  /** The project's apps, as recorded. */
  apps: App[];
}

export interface ValidatedProject {
  name: string;
  cpus: number;
  memoryBytes: number;
  diskBytes: number;
  image: string;
  sshKeys: string[];
  ports: PortForward[];
  restart: RestartPolicy;
  mounts: SharedFolder[];
}

/** Pure: checks every option at once against the host; each problem names its flag. */
export function validateProjectOptions(o: CreateProjectOptions, host: HostFacts): ValidatedProject {
  const issues: Issue[] = [];
  if (typeof o.name !== 'string' || !NAME_PATTERN.test(o.name)) {
    issues.push({ path: 'name', message: `expected ${NAME_RULE}, got ${JSON.stringify(o.name)}` });
  }
  const cpus = o.cpus ?? PROJECT_DEFAULTS.cpus;
  if (!Number.isInteger(cpus) || cpus < 1 || cpus > host.cpuCount) {
    issues.push({ path: '--cpus', message: `expected a whole number from 1 to ${host.cpuCount} (this host's logical CPUs), got ${cpus}` });
  }
  const mem = parseSize(o.memory ?? PROJECT_DEFAULTS.memory);
  let memoryBytes = 0;
  if (!mem.ok) issues.push({ path: '--memory', message: mem.message });
  else if (mem.bytes < 64 * 1024 * 1024) issues.push({ path: '--memory', message: `expected at least 64M, got ${o.memory}` });
  else if (mem.bytes > host.memTotalBytes) {
    issues.push({ path: '--memory', message: `${o.memory} is more than this host has (${Math.floor(host.memTotalBytes / 1024 / 1024)}M)` });
  } else memoryBytes = mem.bytes;
  let diskBytes = 0;
  const d = parseSize(o.disk ?? PROJECT_DEFAULTS.disk);
  if (!d.ok) issues.push({ path: '--disk', message: d.message });
  else if (d.bytes < 1024 * 1024 * 1024) issues.push({ path: '--disk', message: `expected at least 1G, got ${o.disk}` });
  else diskBytes = d.bytes;
  const image = o.image ?? PROJECT_DEFAULTS.image;
  if (!NAME_PATTERN.test(image)) issues.push({ path: '--image', message: `expected ${NAME_RULE}, got ${JSON.stringify(image)}` });
  const ports: PortForward[] = [];
  (o.ports ?? []).forEach((p, i) => {
    const r = typeof p === 'string' ? parsePort(p, `--port[${i}]`) : p;
    if ('message' in r) return issues.push(r);
    const low = privilegedPortIssue(r.host, host, `--port[${i}]`);
    if (low) return issues.push(low);
    const dup = ports.find((q) => q.proto === r.proto && q.host === r.host);
    if (dup) issues.push({ path: `--port[${i}]`, message: `host port ${r.proto}:${r.host} is already forwarded (to guest port ${dup.guest})` });
    else ports.push(r);
  });
  const sshKeys = (o.sshKeys ?? []).map((k) => k.trim());
  sshKeys.forEach((k, i) => issues.push(...checkSshKey(k, `--ssh-key[${i}]`)));
  if (o.consoleMaxSize !== undefined) {
    const c = parseSize(o.consoleMaxSize);
    if (!c.ok) issues.push({ path: '--console-max-size', message: c.message });
    else if (c.bytes < MIN_CONSOLE_MAX_BYTES) issues.push({ path: '--console-max-size', message: `expected at least 64K, got ${o.consoleMaxSize}` });
  }
  const mounts = parseMounts(o.mounts ?? [], issues);
  const restart = o.restart ?? 'no';
  if (!(RESTART_POLICIES as readonly string[]).includes(restart)) {
    issues.push({ path: '--restart', message: `expected ${RESTART_POLICIES.map((r) => `"${r}"`).join(' or ')}, got ${JSON.stringify(restart)}` });
  }
  if (issues.length > 0) throw new ValidationError(issues, { subject: 'invalid project', hint: 'goshipctl project create --help' });
  return { name: o.name, cpus, memoryBytes, diskBytes, image, sshKeys, ports, restart, mounts };
}

export interface ProjectContext {
  store: Store;
  vms: VmService;
  images: ImageSource;
  host: () => Promise<HostFacts>;
  now: () => string;
  layout: Layout;
  qemuBinary: string;
}

export class ProjectService {
  private readonly snapshots: VmSnapshots;

  constructor(private readonly ctx: ProjectContext) {
    this.snapshots = new VmSnapshots({ store: ctx.store, layout: ctx.layout, vms: ctx.vms, now: ctx.now });
  }

  private op(kind: 'create' | 'delete' | 'start' | 'stop') {
    return { kind, pid: process.pid, startedAt: this.ctx.now() };
  }

  /**
   * VM reconcile, then projects left half-made by a killed goshipctl become
   * `broken`, and a project's state follows its VM's where the VM ended
   * without the project being told (crashed, powered off) or was started
   * again (`projectStateFor`).
   */
  async reconcile(): Promise<void> {
    await this.ctx.vms.reconcile();
    const snap = await this.ctx.store.read();
    const follows = (s: State): boolean => Object.values(s.projects).some((p) => projectStateFor(p, s.vms[p.vmId]) !== undefined);
    const abandoned = (s: State): boolean => [...Object.values(s.projects), ...Object.values(s.apps)].some((r) => opAbandoned(r.op));
    if (!abandoned(snap) && !follows(snap)) return;
    await this.ctx.store.update((draft) => {
      // An app whose deploy, start or stop was killed half-way: no longer busy; what Docker or systemd runs is the truth, the next deploy replaces it.
      for (const a of Object.values(draft.apps)) {
        if (!opAbandoned(a.op)) continue;
        a.lastError = appOpInterrupted(a.op!);
        delete a.op;
      }
      for (const p of Object.values(draft.projects)) {
        const next = projectStateFor(p, draft.vms[p.vmId]);
        if (next) {
          p.state = next.state;
          if (next.lastError === undefined) delete p.lastError;
          else p.lastError = next.lastError;
        }
        if (!opAbandoned(p.op)) continue;
        const op = p.op!;
        delete p.op;
        if (op.kind === 'create' || op.kind === 'delete') {
          p.state = 'broken';
          p.lastError = `${op.kind} was interrupted (goshipctl pid ${op.pid} is gone); delete the project and create it again${op.kind === 'create' ? ' (or move it here again)' : ''}`;
        }
        const vm = findRecord(draft, 'vm', p.vmId);
        if (vm?.op && opAbandoned(vm.op)) delete vm.op;
      }
    });
  }

  async list(): Promise<ProjectView[]> {
    await this.reconcile();
    return projectViews(await this.ctx.store.read());
  }

  async info(name: string): Promise<ProjectInfo> {
    await this.reconcile();
    const s = await this.ctx.store.read();
    const project = requireRecord(s, 'project', name);
    const vm = s.vms[project.vmId];
    let diskUsageBytes: number | undefined;
    if (vm?.paths.overlay) {
      try {
        diskUsageBytes = (await stat(vm.paths.overlay)).blocks * 512;
      } catch {
        diskUsageBytes = undefined;
      }
    }
    return { project, vm, diskUsageBytes, apps: Object.values(s.apps).filter((a) => a.project === name).sort((x, y) => x.name.localeCompare(y.name)) };
  }

  /** Creates the project and (unless noStart) starts it: `boot` says what was waited for. */
  async create(o: CreateProjectOptions): Promise<ProjectView & { boot?: BootReport; origin?: ProjectOrigin }> {
    const began = Date.now();
    const host = await this.ctx.host();
    const v = validateProjectOptions(o, host);
    v.mounts = await resolveMountSources(v.mounts, [this.ctx.layout.home, this.ctx.layout.run]);
    const image = await this.ctx.images.resolve(v.image);
    const found = o.cold
      ? { reason: '--cold' }
      : v.mounts.length > 0
        ? { reason: 'its shared folders need the guest memory shared with virtiofsd, which a template restore does not give: it boots' }
      : o.noStart
        ? { reason: '--no-start' }
        : image.agentInstall
          ? { reason: `image ${v.image} has no agent baked in: its VMs are not templated` }
          : await usableTemplate(this.ctx.layout, { image: v.image, cpus: v.cpus, memoryBytes: v.memoryBytes, diskBytes: v.diskBytes, imageKey: image.key, qemuBinary: this.ctx.qemuBinary });
    const template = 'template' in found ? found.template : undefined;
    const now = o.createdAt ?? this.ctx.now();
    const project: Project = {
      name: v.name,
      createdAt: now,
      node: LOCAL_NODE,
      vmId: v.name,
      spec: { cpus: v.cpus, memoryBytes: v.memoryBytes, diskBytes: v.diskBytes, image: v.image, ports: v.ports, sshKeys: v.sshKeys, restart: v.restart, ...(v.mounts.length > 0 ? { mounts: v.mounts } : {}) },
      state: 'creating',
      op: this.op('create'),
    };
    await this.ctx.store.update(async (draft) => {
      assertNameFree(draft, 'project', v.name);
      assertNameFree(draft, 'vm', v.name);
      await assertPortsFree(draft, v.ports);
      draft.projects[v.name] = project;
    });
    const fail = async (err: unknown): Promise<never> => {
      await this.ctx.store.update((draft) => {
        const p = findRecord(draft, 'project', v.name);
        if (!p) return;
        p.state = 'broken';
        p.lastError = err instanceof Error ? err.message : String(err);
        delete p.op;
      });
      throw err;
    };
    // The project's own SSH key pair (`goshipctl ssh`): its public key goes in with the user's.
    let key: Awaited<ReturnType<typeof newProjectKey>>;
    try {
      key = await newProjectKey(this.ctx.layout, sshAlias(v.name));
    } catch (err) {
      await this.ctx.store.update((draft) => {
        delete draft.projects[v.name];
      });
      throw err;
    }
    const guestKeys = [...v.sshKeys, key.pub];
    const makeVm = async (on: TemplateInfo | undefined): Promise<void> => {
      try {
        // A clone's overlay is of its template's size, as the restored guest knows it; it grows after (growDisk).
        await this.ctx.vms.create(await projectVmOptions({ ...v, sshKeys: guestKeys, ...(on ? { diskBytes: on.diskBytes } : {}) }, image, now, { project: v.name, consoleMaxSize: o.consoleMaxSize, ...(on ? { templateDisk: on.disk } : {}) }));
      } catch (err) {
        // Nothing of the VM stays: the project record goes too.
        await this.ctx.store.update((draft) => {
          delete draft.projects[v.name];
        });
        throw err;
      }
    };
    try {
      await makeVm(template);
    } catch (err) {
      await key.discard();
      throw err;
    }
    const keepKey = () => key.keep(sshFiles(this.ctx.layout, v.name, v.name));
    if (o.noStart) {
      await keepKey();
      return this.settle(v.name, 'stopped', { keepOp: o.holdOp === true });
    }
    let boot: BootReport;
    let origin: ProjectOrigin = template ? { from: 'template', template: template.name } : { from: 'boot', reason: 'reason' in found ? found.reason : '' };
    try {
      try {
        boot = await this.bootUp(v.name, began, o, template ? { template, hostname: v.name, sshKeys: guestKeys, diskBytes: v.diskBytes, ...(o.privateMemory ? { privateMemory: true } : {}) } : undefined);
      } catch (err) {
        if (!template || !(err instanceof GoshipError && err.code === 'EVMSTATE')) throw err;
        // The template could not be restored (QEMU refused its state, another argv): the project boots instead, and says why.
        trace(`project ${v.name}: template ${template.name} not restored (${err.message}); booting`);
        await this.ctx.vms.destroy(v.name, { force: true, ofProject: v.name });
        await makeVm(undefined);
        origin = { from: 'boot', reason: `template ${template.name} could not be restored: ${err.message}` };
        boot = await this.bootUp(v.name, began, o);
      }
      await keepKey();
    } catch (err) {
      await key.discard();
      await this.ctx.vms.stop(v.name, { force: true }).catch(() => undefined);
      return fail(err);
    }
    return { ...(await this.settle(v.name, 'ready')), boot, origin };
  }

  /** The templates on this host (the newest generation of each), of one image or all. */
  async templates(image?: string): Promise<TemplateInfo[]> {
    return (await listTemplates(this.ctx.layout)).filter((t) => image === undefined || t.image === image);
  }

  /**
   * Boots a throwaway VM of a project's shape (image, cpus, memory, disk) to a
   * settled guest and saves it as the template of that shape (templates.ts);
   * the VM goes, whatever happens.
   */
  async warm(o: WarmOptions = {}): Promise<TemplateInfo> {
    const began = Date.now();
    const host = await this.ctx.host();
    const name = `warm-${randomBytes(3).toString('hex')}`;
    const v = validateProjectOptions({ name, ...(o.image ? { image: o.image } : {}), ...(o.cpus !== undefined ? { cpus: o.cpus } : {}), ...(o.memory !== undefined ? { memory: o.memory } : {}), ...(o.disk !== undefined ? { disk: o.disk } : {}) }, host);
    const image = await this.ctx.images.resolve(v.image);
    if (image.agentInstall || image.key === undefined) {
      throw new RuntimeError('ENOTSUP', `image ${v.image} has no agent baked in (an imported image): GoShip makes templates of its own built images only`, { hint: 'build one: goshipctl image build' });
    }
    await this.ctx.vms.create(await projectVmOptions(v, image, this.ctx.now(), {}));
    try {
      const boot = await this.bootUp(name, began, { wait: 'boot', sharedRam: true, ...(o.timeoutMs !== undefined ? { timeoutMs: o.timeoutMs } : {}), ...(o.onProgress ? { onProgress: o.onProgress } : {}) });
      // The throwaway VM's name goes (a clone's agent says its host name before the clone has its own:
      // the image's, as a booted VM's agent does), and the disk is synced. The page cache stays: clones share it.
      const agent = await this.ctx.vms.agent(name, 30_000);
      try {
        await agent.exec(['sh', '-c', `hostname ${IMAGE_HOSTNAME} && echo ${IMAGE_HOSTNAME} > /etc/hostname && sync`], { timeoutMs: 60_000 });
      } finally {
        await agent.close();
      }
      const vm = await this.ctx.vms.get(name);
      return await saveTemplate({
        layout: this.ctx.layout,
        vm,
        shape: { image: v.image, cpus: v.cpus, memoryBytes: v.memoryBytes, diskBytes: v.diskBytes },
        imageKey: image.key,
        qemuBinary: this.ctx.qemuBinary,
        bootMs: boot.totalMs,
        stopVm: async () => void (await this.ctx.vms.stop(name, { force: true })),
        inUse: async (dir) => Object.values((await this.ctx.store.read()).vms).some((x) => x.base !== undefined && within(x.base.path, dir)),
      });
    } finally {
      await this.ctx.vms.destroy(name, { force: true }).catch((err: unknown) => trace(`warm: removing VM ${name}: ${(err as Error).message}`));
    }
  }

  /**
   * Starts a project's VM and waits for what `o.wait` asks, timing each step
   * from `began`: QEMU running, the agent's hello, then (wait `boot`) the
   * network online and cloud-init done.
   */
  private async bootUp(
    vmId: string,
    began: number,
    o: StartProjectOptions & { loadvm?: string; sharedRam?: boolean },
    clone?: { template: TemplateInfo; hostname: string; sshKeys: readonly string[]; diskBytes: number; privateMemory?: boolean },
  ): Promise<BootReport> {
    const wait = o.wait ?? 'boot';
    const deadline = began + (o.timeoutMs ?? DEFAULT_READY_TIMEOUT_MS);
    const track = bootTrack(began, o.onProgress);
    // A guest that goes on from a saved moment (a suspend, a snapshot with memory): its clock is set after.
    const resuming = o.loadvm !== undefined || (!o.discardState && (await this.ctx.vms.get(vmId)).saved !== undefined);
    await this.ctx.vms.start(vmId, {
      ...(clone
        ? {
            restore: {
              state: clone.template.state,
              bytes: clone.template.stateBytes,
              argvShape: clone.template.argvShape,
              ram: { file: clone.template.memory, bytes: clone.template.memoryBytes, key: clone.template.memoryKey, ...(clone.privateMemory ? { private: true as const } : {}) },
            },
          }
        : {}),
      ...(o.sharedRam ? { sharedRam: true } : {}),
      ...(o.discardState ? { discardSaved: true } : {}),
      ...(o.loadvm !== undefined ? { loadvm: o.loadvm } : {}),
      waitAgent: true,
      agentTimeoutMs: Math.max(1000, deadline - Date.now()),
      onAgentProgress: (p) => {
        if (p.phase === 'syncing') {
          track.reach('qemu');
          track.waiting('agent');
        } else if (p.phase === 'ready') track.reach('agent');
      },
    });
    if (clone || resuming || wait === 'boot') {
      const agent = await this.ctx.vms.agent(vmId, 30_000);
      try {
        // A clone is its template's guest until it has its own identity: that comes before anything else it does.
        if (clone) await giveIdentity(agent, { name: vmId, hostname: clone.hostname, sshKeys: clone.sshKeys, track });
        if (clone && clone.diskBytes > clone.template.diskBytes) {
          await growDisk({ name: vmId, diskBytes: clone.diskBytes, agent, track, qmp: (execute, args) => this.ctx.vms.qmpRaw(vmId, { execute, arguments: args }) });
        }
        // A resumed guest's clock stood still while it was saved.
        if (resuming) await setGuestClock(agent, { name: vmId, track });
        if (wait === 'boot') await waitGuestBoot(agent, { name: vmId, deadline, track });
      } finally {
        await agent.close();
      }
    }
    return { wait, steps: track.steps, totalMs: Date.now() - began };
  }

  private async settle(name: string, state: Project['state'], o: { keepOp?: boolean } = {}): Promise<ProjectView> {
    return this.ctx.store.update((draft) => {
      const p = requireRecord(draft, 'project', name);
      p.state = state;
      if (!o.keepOp) delete p.op;
      delete p.lastError;
      return { project: structuredClone(p), vm: structuredClone(draft.vms[p.vmId]) };
    });
  }

  private async ownVm(name: string): Promise<Project> {
    await this.reconcile();
    const p = requireRecord(await this.ctx.store.read(), 'project', name);
    if (p.op) throw busyError(`project ${name}`, p.op);
    if (p.state === 'broken') throw stateError(`project ${name} is broken: ${p.lastError ?? 'unknown error'}`, `delete it: goshipctl project delete ${name}`);
    return p;
  }

  /** Starts the project's VM: a suspended one is resumed (its saved state restored), unless `discardState`. */
  async start(name: string, opts: StartProjectOptions = {}): Promise<ProjectView & { boot: BootReport; resumed: boolean }> {
    const began = Date.now();
    const p = await this.ownVm(name);
    const resumed = p.state === 'suspended' && !opts.discardState;
    let boot: BootReport;
    try {
      boot = await this.bootUp(p.vmId, began, opts);
    } catch (err) {
      if (resumed && err instanceof GoshipError && err.code === 'EVMSTATE') {
        throw new VmStateError(`project ${name} stays suspended: ${err.message}`, { cause: err, hint: `start it from its disk instead (what ran in its memory is lost): goshipctl project start ${name} --discard-state` });
      }
      throw err;
    }
    return { ...(await this.settle(name, 'ready')), boot, resumed };
  }

  /** Resumes a suspended project: its VM restored from its saved state, processes and apps as they were. */
  async resume(name: string, opts: StartProjectOptions = {}): Promise<ProjectView & { boot: BootReport; resumed: boolean }> {
    const p = await this.ownVm(name);
    if (p.state !== 'suspended') throw stateError(`project ${name} is not suspended (state: ${p.state})`, p.state === 'ready' ? `suspend it first: goshipctl project suspend ${name}` : `start it: goshipctl project start ${name}`);
    return this.start(name, { ...opts, discardState: false });
  }

  /**
   * Suspends a ready project: its VM's memory and devices are saved while the
   * guest runs, then its QEMU ends (vms.suspend). `project resume` (or
   * `start`) restores it, processes and all.
   */
  async suspend(name: string): Promise<ProjectView & { saved: VmSaved; totalMs: number }> {
    const began = Date.now();
    const p = await this.ownVm(name);
    if (p.state !== 'ready') {
      throw stateError(`project ${name} is ${p.state}: only a running project is suspended`, p.state === 'suspended' ? `resume it: goshipctl project resume ${name}` : `start it: goshipctl project start ${name}`);
    }
    refuseSavedMemory(p, 'suspended');
    const vm = await this.ctx.vms.suspend(p.vmId);
    return { ...(await this.settle(name, 'suspended')), saved: vm.saved, totalMs: Date.now() - began };
  }

  /** Takes snapshot `tag` of the project's disk (while it runs, `memory`: with its memory and devices). */
  async snapshotCreate(name: string, tag: string, o: { memory?: boolean } = {}): Promise<VmSnapshot> {
    const p = await this.ownVm(name);
    if (o.memory) refuseSavedMemory(p, 'snapshotted with its memory');
    return this.snapshots.create(p.vmId, tag, { memory: Boolean(o.memory) });
  }

  async snapshotList(name: string): Promise<VmSnapshot[]> {
    const p = await this.ownVm(name);
    return this.snapshots.list(p.vmId);
  }

  async snapshotDelete(name: string, tag: string): Promise<void> {
    const p = await this.ownVm(name);
    await this.snapshots.delete(p.vmId, tag);
  }

  /**
   * Brings the project back to snapshot `tag`: with memory, its VM starts on
   * it (processes as they were, the clock set after); a disk snapshot is
   * applied to the stopped disk and the VM boots. What ran is dropped.
   */
  async snapshotRestore(name: string, tag: string, opts: StartProjectOptions = {}): Promise<ProjectView & { boot: BootReport; snapshot: VmSnapshot }> {
    const began = Date.now();
    const p = await this.ownVm(name);
    const snapshot = await this.snapshots.prepareRestore(p.vmId, tag);
    const boot = await this.bootUp(p.vmId, began, { ...opts, discardState: true, ...(snapshot.memory ? { loadvm: tag } : {}) });
    return { ...(await this.settle(name, 'ready')), boot, snapshot };
  }


  /** The project, whose VM must be running: otherwise ESTATE saying `why`. */
  private async running(name: string, why: string): Promise<Project> {
    const p = requireRecord(await this.ctx.store.read(), 'project', name);
    const vm = await this.ctx.vms.get(p.vmId);
    if (vm.state !== 'ready' && vm.state !== 'running') throw stateError(`project ${name} is ${p.state}: ${why}`, `start it: goshipctl project start ${name}`);
    return p;
  }

  /**
   * Makes the project reachable with OpenSSH (runtime/ssh.ts): its key pair,
   * the key authorized in the guest, the guest's host keys pinned; returns
   * the `Host goship-NAME` block, also written to its VM's `ssh_config`.
   * `proxy` runs goshipctl (ssh's ProxyCommand appends `vm tunnel NAME 22`).
   */
  async ssh(name: string, proxy: readonly string[], o: { agentTimeoutMs?: number } = {}): Promise<{ config: string; configFile: string; alias: string }> {
    const p = await this.running(name, 'ssh needs its VM running');
    const files = sshFiles(this.ctx.layout, p.vmId, name);
    const agent = await this.ctx.vms.agent(p.vmId, 10_000, o.agentTimeoutMs !== undefined ? { agentWaitMs: o.agentTimeoutMs } : {});
    try {
      return { config: await sshAccess(agent, files, { name, proxy }), configFile: files.config, alias: files.alias };
    } finally {
      await agent.close();
    }
  }

  /**
   * The host socket whose connections the project's VM monitor relays to
   * dockerd in the guest (`RUN/ID/docker.sock`, owner-only): for DOCKER_HOST.
   */
  async dockerSocket(name: string): Promise<string> {
    const p = await this.running(name, 'its Docker socket is relayed while its VM runs');
    const socket = this.ctx.layout.vmSocket(p.vmId, 'dockerSocket');
    if (!existsSync(socket)) throw stateError(`project ${name}: its VM's monitor has no Docker socket (${socket}); a monitor started by an older GoShip has none`, `restart the VM: goshipctl project stop ${name} && goshipctl project start ${name}`);
    return socket;
  }

  async stop(name: string, opts: { force?: boolean; timeouts?: Partial<StopTimeouts> } = {}): Promise<ProjectView & { stop: StopVmResult }> {
    const p = await this.ownVm(name);
    if (p.state === 'suspended') {
      throw stateError(`project ${name} is suspended: no QEMU runs, and its memory is saved`, `resume it (goshipctl project resume ${name}), or start it from its disk and drop the saved memory (goshipctl project start ${name} --discard-state)`);
    }
    const stop = await this.ctx.vms.stop(p.vmId, opts);
    return { ...(await this.settle(name, 'stopped')), stop };
  }

  /**
   * Forwards a host port to the project's VM, at once if it runs (QMP
   * `hostfwd_add` through its monitor) and at every start (its VM's argv). A
   * host port another project or VM forwards, or another program has bound,
   * is refused under the store lock, before anything changes.
   */
  async portAdd(name: string, port: string | PortForward): Promise<PortsView> {
    const p = await this.ownVm(name);
    const parsed = typeof port === 'string' ? parsePort(port, 'port') : port;
    const f = 'message' in parsed ? parsed : (privilegedPortIssue(parsed.host, await this.ctx.host(), 'port') ?? parsed);
    if ('message' in f) throw new ValidationError([f], { subject: 'invalid port', hint: 'goshipctl project port add NAME [udp:]HOST:GUEST' });
    await this.withLiveMonitor(p, (monitor) =>
      this.ctx.store.update(async (draft) => {
        const rec = requireRecord(draft, 'project', name);
        const vm = requireRecord(draft, 'vm', rec.vmId);
        const mine = rec.spec.ports.find((q) => portKey(q) === portKey(f));
        if (mine) throw new PortTakenError([{ path: 'port', message: `host port ${portKey(f)} is already forwarded by project ${name} (to guest port ${mine.guest})` }]);
        await assertPortsFree(draft, [f]);
        await monitor?.portAdd({ proto: f.proto, host: f.host, guest: f.guest, hostAddr: DEFAULT_HOST_ADDR });
        rec.spec.ports = [...rec.spec.ports, f];
        setForwards(vm, rec.spec.ports);
      }),
    );
    return this.ports(p.name);
  }

  /**
   * Runs `fn` with a client of the project VM's monitor while the VM runs
   * (undefined otherwise). The client is made before `fn` takes the store
   * lock: making it may start a monitor, which needs the lock itself.
   */
  private async withLiveMonitor<T>(p: Project, fn: (monitor: MonitorClient | undefined) => Promise<T>): Promise<T> {
    const vm = findRecord(await this.ctx.store.read(), 'vm', p.vmId);
    const monitor = vm && LIVE_STATES.has(vm.state) ? await this.ctx.vms.monitor(vm.id) : undefined;
    try {
      return await fn(monitor);
    } finally {
      await monitor?.close();
    }
  }

  /** Stops forwarding a host port: at once if the VM runs, and from the next start on. */
  async portRemove(name: string, host: number, proto: 'tcp' | 'udp' = 'tcp'): Promise<PortsView> {
    const p = await this.ownVm(name);
    await this.withLiveMonitor(p, (monitor) =>
      this.ctx.store.update(async (draft) => {
        const rec = requireRecord(draft, 'project', name);
        const vm = requireRecord(draft, 'vm', rec.vmId);
        const key = portKey({ proto, host });
        if (!rec.spec.ports.some((q) => portKey(q) === key)) {
          throw new RuntimeError('ENOTFOUND', `project ${name} does not forward host port ${key}`, { hint: `goshipctl project port list ${name}` });
        }
        await monitor?.portRemove({ proto, host, hostAddr: DEFAULT_HOST_ADDR });
        rec.spec.ports = rec.spec.ports.filter((q) => portKey(q) !== key);
        setForwards(vm, rec.spec.ports);
      }),
    );
    return this.ports(name);
  }

  /** What the project forwards (recorded), and, while its VM runs, what QEMU really forwards. */
  async ports(name: string): Promise<PortsView> {
    await this.reconcile();
    const p = requireRecord(await this.ctx.store.read(), 'project', name);
    const live = await this.ctx.vms.livePorts(p.vmId).catch(() => undefined);
    return { recorded: p.spec.ports, live: live ?? null };
  }

  /** Deletes the project: its VM (stopped first with --force), overlay, seed, sockets, apps and records. */
  async delete(name: string, opts: { force?: boolean } = {}): Promise<void> {
    await this.reconcile();
    const p = await this.ctx.store.update((draft) => {
      const rec = requireRecord(draft, 'project', name);
      if (rec.op && !opts.force) throw busyError(`project ${name}`, rec.op, 'wait for it, or use --force');
      const vm = findRecord(draft, 'vm', rec.vmId);
      if (vm && LIVE_STATES.has(vm.state) && !opts.force) {
        throw stateError(`project ${name} is running`, `stop it first (goshipctl project stop ${name}) or delete it with --force`);
      }
      rec.state = 'deleting';
      rec.op = this.op('delete');
      return structuredClone(rec);
    });
    const s = await this.ctx.store.read();
    if (s.vms[p.vmId]) await this.ctx.vms.destroy(p.vmId, { force: true, ofProject: name });
    await this.ctx.store.update((draft) => {
      delete draft.projects[name];
      for (const [k, app] of Object.entries(draft.apps)) if (app.project === name) delete draft.apps[k];
    });
  }
}

/** Under the store lock: refuses host ports another project or VM forwards, or another program has bound. */
async function assertPortsFree(draft: State, ports: PortForward[], self?: string): Promise<void> {
  const issues = await takenPorts(draft, ports, self);
  if (issues.length > 0) throw new PortTakenError(issues);
}

/** Reads OpenSSH public key files (`--ssh-key FILE`). */
export async function readSshKeys(files: string[]): Promise<string[]> {
  const keys: string[] = [];
  for (const f of files) {
    let text: string;
    try {
      text = await readFile(f, 'utf8');
    } catch (cause) {
      throw new RuntimeError('EINVALID', `--ssh-key: cannot read ${f}: ${(cause as Error).message}`, { cause });
    }
    keys.push(...text.split('\n').map((l) => l.trim()).filter((l) => l && !l.startsWith('#')));
  }
  return keys;
}

/**
 * QEMU 7.2 cannot save a VM with a vhost-user-fs device (its state is the
 * daemon's): a project with shared folders keeps running instead of failing
 * half-way through a save.
 */
export function refuseSavedMemory(p: Project, what: string): void {
  if ((p.spec.mounts ?? []).length === 0) return;
  throw new RuntimeError('ENOTSUP', `project ${p.name} has shared folders: it cannot be ${what} (QEMU 7.2 cannot save the state of a virtio-fs device)`, {
    hint: `stop it instead (goshipctl project stop ${p.name}), or take a snapshot of its disk alone`,
  });
}

/** The VM of a project of this shape: every project's VM (and a template's) is made by this, so a template's VM and its clones have one argv shape. */
export async function projectVmOptions(
  v: ValidatedProject,
  image: ResolvedImage,
  now: string,
  o: { project?: string; consoleMaxSize?: string | undefined; templateDisk?: string },
): Promise<CreateVmOptions> {
  return {
    ...(o.project !== undefined ? { project: o.project } : {}),
    spec: {
      name: v.name,
      cpu: { count: v.cpus },
      memory: v.memoryBytes,
      network: { mode: 'user', forwards: v.ports.map((p) => ({ proto: p.proto, host: p.host, guest: p.guest })) },
      restart: v.restart,
      ...(o.consoleMaxSize !== undefined ? { console: { maxSize: o.consoleMaxSize } } : {}),
      ...(v.mounts.length > 0 ? { filesystems: v.mounts.map((m, i) => ({ tag: mountTag(i), source: m.host, readOnly: m.readOnly })) } : {}),
    },
    // A clone's overlay stands on its template's disk, which stands on the image's base.
    base: { path: o.templateDisk ?? image.base, name: v.image, ...image.boot, ...(o.templateDisk ? { backing: { path: image.base, format: 'qcow2' } } : {}) },
    diskBytes: v.diskBytes,
    seed: {
      instanceId: `iid-${v.name}-${Date.parse(now).toString(36)}`,
      hostname: v.name,
      sshKeys: v.sshKeys,
      ...(v.mounts.length > 0 ? { runcmd: v.mounts.map(mountArgv) } : {}),
      ...(image.agentInstall ? { agent: await image.agentInstall() } : {}),
    },
  };
}
