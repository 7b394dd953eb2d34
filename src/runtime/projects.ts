/**
 * Projects: one VM per project per node; every workload of a project runs in
 * its VM. `create` makes the VM (overlay on the image, cloud-init seed), boots
 * it and waits for the agent.
 */
import { readFile, stat } from 'node:fs/promises';
import { ValidationError, type Issue } from '../errors.ts';
import { RuntimeError } from './errors.ts';
import { checkSshKey } from '../cloudinit/index.ts';
import { NAME_PATTERN, NAME_RULE, parseSize, type HostFacts } from '../qemu/index.ts';
import {
  type PortForward,
  type Project,
  type Store,
  type Vm,
  LOCAL_NODE,
  assertNameFree,
  findRecord,
  requireRecord,
} from '../store/index.ts';
import type { ConnectProgress } from '../serial/index.ts';
import type { ImageSource } from './images.ts';
import { busyError, stateError } from './errors.ts';
import { LIVE_STATES, opAbandoned, type StopVmResult, type VmService } from './vms.ts';
import type { StopTimeouts } from '../monitor/index.ts';

export const PROJECT_DEFAULTS = { cpus: 1, memory: '1G', disk: '10G', image: 'default' } as const;

export interface CreateProjectOptions {
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
  /** Create the records, the overlay and the seed, but do not boot. */
  noStart?: boolean;
  agentTimeoutMs?: number;
  onAgentProgress?: (p: ConnectProgress) => void;
}

export interface ProjectView {
  project: Project;
  vm: Vm | undefined;
}

export interface ProjectInfo extends ProjectView {
  diskUsageBytes: number | undefined;
}

/** Pure: `8080:80`, `tcp:8080:80`, `udp:5353:53` → a forward, or an issue. */
export function parsePort(text: string, path: string): PortForward | Issue {
  const m = /^(?:(tcp|udp):)?(\d{1,5}):(\d{1,5})$/.exec(text);
  const bad = (why: string): Issue => ({ path, message: `${why}; expected HOST:GUEST with ports 1-65535, optionally prefixed tcp: or udp:, got "${text}"` });
  if (!m) return bad('not a port mapping');
  const host = Number(m[2]);
  const guest = Number(m[3]);
  if (host < 1 || host > 65535) return bad(`host port ${host} is out of range`);
  if (guest < 1 || guest > 65535) return bad(`guest port ${guest} is out of range`);
  return { proto: (m[1] as 'tcp' | 'udp' | undefined) ?? 'tcp', host, guest };
}

export interface ValidatedProject {
  name: string;
  cpus: number;
  memoryBytes: number;
  diskBytes: number;
  image: string;
  sshKeys: string[];
  ports: PortForward[];
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
    const dup = ports.find((q) => q.proto === r.proto && q.host === r.host);
    if (dup) issues.push({ path: `--port[${i}]`, message: `host port ${r.proto}:${r.host} is already forwarded (to guest port ${dup.guest})` });
    else ports.push(r);
  });
  const sshKeys = (o.sshKeys ?? []).map((k) => k.trim());
  sshKeys.forEach((k, i) => issues.push(...checkSshKey(k, `--ssh-key[${i}]`)));
  if (issues.length > 0) throw new ValidationError(issues, { subject: 'invalid project', hint: 'goshipctl project create --help' });
  return { name: o.name, cpus, memoryBytes, diskBytes, image, sshKeys, ports };
}

/** Pure: host ports another project already forwards (each host port serves one project). */
export function portClashes(projects: Record<string, Project>, ports: PortForward[]): Issue[] {
  const issues: Issue[] = [];
  ports.forEach((p, i) => {
    const owner = Object.values(projects).find((o) => o.spec.ports.some((q) => q.proto === p.proto && q.host === p.host));
    if (owner) issues.push({ path: `--port[${i}]`, message: `host port ${p.proto}:${p.host} is already forwarded by project ${owner.name}` });
  });
  return issues;
}

export interface ProjectContext {
  store: Store;
  vms: VmService;
  images: ImageSource;
  host: () => Promise<HostFacts>;
  now: () => string;
}

export class ProjectService {
  constructor(private readonly ctx: ProjectContext) {}

  private op(kind: 'create' | 'delete' | 'start' | 'stop') {
    return { kind, pid: process.pid, startedAt: this.ctx.now() };
  }

  /** VM reconcile, then projects left half-made by a killed goshipctl become `broken`. */
  async reconcile(): Promise<void> {
    await this.ctx.vms.reconcile();
    const snap = await this.ctx.store.read();
    if (!Object.values(snap.projects).some((p) => opAbandoned(p.op))) return;
    await this.ctx.store.update((draft) => {
      for (const p of Object.values(draft.projects)) {
        if (!opAbandoned(p.op)) continue;
        const op = p.op!;
        delete p.op;
        if (op.kind === 'create' || op.kind === 'delete') {
          p.state = 'broken';
          p.lastError = `${op.kind} was interrupted (goshipctl pid ${op.pid} is gone); delete the project and create it again`;
        }
        const vm = findRecord(draft, 'vm', p.vmId);
        if (vm?.op && opAbandoned(vm.op)) delete vm.op;
      }
    });
  }

  async list(): Promise<ProjectView[]> {
    await this.reconcile();
    const s = await this.ctx.store.read();
    return Object.values(s.projects)
      .sort((a, b) => a.name.localeCompare(b.name))
      .map((project) => ({ project, vm: s.vms[project.vmId] }));
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
    return { project, vm, diskUsageBytes };
  }

  async create(o: CreateProjectOptions): Promise<ProjectView> {
    const host = await this.ctx.host();
    const v = validateProjectOptions(o, host);
    const image = await this.ctx.images.resolve(v.image);
    const now = this.ctx.now();
    const project: Project = {
      name: v.name,
      createdAt: now,
      node: LOCAL_NODE,
      vmId: v.name,
      spec: { cpus: v.cpus, memoryBytes: v.memoryBytes, diskBytes: v.diskBytes, image: v.image, ports: v.ports, sshKeys: v.sshKeys },
      state: 'creating',
      op: this.op('create'),
    };
    await this.ctx.store.update((draft) => {
      assertNameFree(draft, 'project', v.name);
      assertNameFree(draft, 'vm', v.name);
      const clashes = portClashes(draft.projects, v.ports);
      if (clashes.length > 0) throw new ValidationError(clashes, { subject: 'invalid project', hint: 'pick other host ports' });
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
    try {
      await this.ctx.vms.create({
        project: v.name,
        spec: {
          name: v.name,
          cpu: { count: v.cpus },
          memory: v.memoryBytes,
          network: { mode: 'user', forwards: v.ports.map((p) => ({ proto: p.proto, host: p.host, guest: p.guest })) },
        },
        base: { path: image.base, name: v.image, ...image.boot },
        diskBytes: v.diskBytes,
        seed: {
          instanceId: `iid-${v.name}-${Date.parse(now).toString(36)}`,
          hostname: v.name,
          sshKeys: v.sshKeys,
          ...(image.agentInstall ? { agent: await image.agentInstall() } : {}),
        },
      });
    } catch (err) {
      // Nothing of the VM stays: the project record goes too.
      await this.ctx.store.update((draft) => {
        delete draft.projects[v.name];
      });
      throw err;
    }
    if (o.noStart) {
      return this.settle(v.name, 'stopped');
    }
    try {
      await this.ctx.vms.start(v.name, {
        waitAgent: true,
        ...(o.agentTimeoutMs ? { agentTimeoutMs: o.agentTimeoutMs } : {}),
        ...(o.onAgentProgress ? { onAgentProgress: o.onAgentProgress } : {}),
      });
    } catch (err) {
      await this.ctx.vms.stop(v.name, { force: true }).catch(() => undefined);
      return fail(err);
    }
    return this.settle(v.name, 'ready');
  }

  private async settle(name: string, state: Project['state']): Promise<ProjectView> {
    return this.ctx.store.update((draft) => {
      const p = requireRecord(draft, 'project', name);
      p.state = state;
      delete p.op;
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

  async start(name: string, opts: { agentTimeoutMs?: number; onAgentProgress?: (p: ConnectProgress) => void } = {}): Promise<ProjectView> {
    const p = await this.ownVm(name);
    await this.ctx.vms.start(p.vmId, { waitAgent: true, ...opts });
    return this.settle(name, 'ready');
  }

  async stop(name: string, opts: { force?: boolean; timeouts?: Partial<StopTimeouts> } = {}): Promise<ProjectView & { stop: StopVmResult }> {
    const p = await this.ownVm(name);
    const stop = await this.ctx.vms.stop(p.vmId, opts);
    return { ...(await this.settle(name, 'stopped')), stop };
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
