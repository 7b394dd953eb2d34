/**
 * Apps: the workloads of a project, run inside its VM, never on the host.
 * A container app is a Docker container in the VM (the agent speaks dockerd's
 * Engine API there); its record (the spec as deployed) lives in the store,
 * and Docker is the truth about how it runs: listings merge the two and show
 * drift instead of hiding it.
 *
 * A deploy replaces an app only once the new version can start: the new image
 * is built, loaded or pulled first; a new container (the next generation) is
 * created; the old one is stopped only then; if the new one does not start
 * (or exits at once), the old one is started again and the error says why.
 *
 * Ports: host port → live QEMU forward (through the VM's monitor) → the same
 * port number in the guest → the container's port. One owner per host port
 * across every project, VM and app.
 */
import { createReadStream, existsSync } from 'node:fs';
import { stat } from 'node:fs/promises';
import { basename } from 'node:path';
import { Readable, Writable } from 'node:stream';
import * as v from 'valibot';
import { ValidationError, type Issue } from '../errors.ts';
import type { MonitorClient } from '../monitor/index.ts';
import {
  APP_LABEL,
  APP_METHODS,
  AppExecResultSchema,
  ContainerInfoSchema,
  ContainerListSchema,
  GENERATION_LABEL,
  ImageResultSchema,
  PROC_METHODS,
  PROJECT_LABEL,
  REMOTE_CODES,
  ProcApplyResultSchema,
  ProcInfoSchema,
  ProcListSchema,
  ProcStageResultSchema,
  type ContainerInfo,
  type ProcInfo,
} from '../protocol/index.ts';
import { privilegedPortIssue } from '../qemu/index.ts';
import { AgentProtocolError, AgentRemoteError, type AgentClient } from '../serial/index.ts';
import { type App, type AppKind, type AppSpecRecord, type Project, type State, type Store, appKey, findRecord, requireRecord } from '../store/index.ts';
import { checkAppOptions, type AppPort, type AppSource, type DeployOptions, type ValidatedApp } from './app-options.ts';
import { PortTakenError, RuntimeError, busyError, stateError } from './errors.ts';
import { trace } from './trace.ts';
import { lineWriter, tailCollector } from './bounded.ts';
import { buildContextStream } from './build-context.ts';
import { DEFAULT_HOST_ADDR, takenPorts } from './ports.ts';
import { LIVE_STATES } from './reconcile.ts';
import type { VmService } from './vms.ts';

/** How long a new container must keep running after its start to count as started. */
export const START_SETTLE_MS = 1500;

export interface AppContext {
  store: Store;
  vms: VmService;
  now: () => string;
  reconcile: () => Promise<void>;
}

/** One row of `app list`: the record and what Docker says, merged. */
export interface AppView {
  project: string;
  name: string;
  kind: App['kind'];
  /** Docker's state (running, restarting, exited…), `missing` (recorded, gone from Docker), `unmanaged` (in Docker, not recorded), `vm-stopped`. */
  state: string;
  image: string | null;
  ports: AppPort[];
  restarts: number | null;
  startedAt: string | null;
  container: ContainerInfo | null;
  /** A process app as the guest's systemd reports it. */
  process: ProcInfo | null;
  record: App | null;
}

/** Pure: a recorded process app as shown, from what the guest's systemd reports (`x`), or why there is nothing (`live` false: the VM does not run). */
function processView(project: string, r: App, live: boolean, x: ProcInfo | undefined): AppView {
  return {
    project,
    name: r.name,
    kind: r.kind,
    image: r.image ?? null,
    ports: r.spec?.ports ?? [],
    record: r,
    state: !live ? 'vm-stopped' : x ? x.state : r.op ? 'deploying' : 'missing',
    restarts: x?.restarts ?? null,
    startedAt: x?.startedAt ?? null,
    container: null,
    process: x ?? null,
  };
}

export interface AppLogsOptions {
  follow?: boolean;
  tail?: number;
  /** Seconds ago. */
  sinceSec?: number;
  timestamps?: boolean;
  stdout?: Writable;
  stderr?: Writable;
  signal?: AbortSignal;
}

export interface AppExecOptions {
  tty?: boolean;
  stdin?: Readable;
  stdout?: Writable;
  stderr?: Writable;
  rows?: number;
  cols?: number;
  /** JSON resize messages (`{"resize":{"rows","cols"}}`), one per chunk. */
  ctl?: Readable;
  signal?: AbortSignal;
}

const containerName = (app: string, generation: number): string => `goship-${app}-${generation}`;

/** Pure: the container spec an app's record becomes. */
/** The tag of the image GoShip builds for a generation of an app. */
export function buildTag(app: string, generation: number): string {
  return `goship/${app}:${generation}`;
}

export function containerSpec(project: string, a: ValidatedApp, image: string, generation: number) {
  return {
    name: containerName(a.app, generation),
    image,
    ...(a.cmd ? { cmd: a.cmd } : {}),
    env: a.env,
    ports: a.ports.map((p) => ({ proto: p.proto, guest: p.host, container: p.container })),
    volumes: a.volumes,
    restart: a.restart.name === 'on-failure' && a.restart.maxRetries !== undefined ? { name: 'on-failure' as const, maxRetries: a.restart.maxRetries } : { name: a.restart.name },
    ...(a.memoryBytes !== undefined ? { memory: a.memoryBytes } : {}),
    ...(a.cpus !== undefined ? { cpus: a.cpus } : {}),
    labels: { [APP_LABEL]: a.app, [PROJECT_LABEL]: project, [GENERATION_LABEL]: String(generation) },
  };
}

/** Whether a file is a `docker save` archive: a tar whose entries include manifest.json. */
export async function isDockerArchive(file: string): Promise<boolean> {
  let found = false;
  const tar = await import('tar');
  try {
    await tar.t({
      file,
      onReadEntry: (e) => {
        if (e.path === 'manifest.json' || e.path === './manifest.json') found = true;
      },
    });
  } catch {
    return false;
  }
  return found;
}

/** The files an app's source names, checked on the host before anything changes. */
async function checkSourceFiles(source: AppSource, issues: Issue[]): Promise<void> {
  const st = async (path: string) => stat(path).catch(() => undefined);
  if (source.kind === 'build') {
    const dir = await st(source.dir);
    if (!dir?.isDirectory()) issues.push({ path: '--build', message: `not a directory: ${source.dir}` });
    else if (!existsSync(`${source.dir}/Dockerfile`)) issues.push({ path: '--build', message: `no Dockerfile in ${source.dir}` });
  } else if (source.kind === 'archive') {
    if (!(await st(source.file))) issues.push({ path: '--image-archive', message: `no such file: ${source.file}` });
    else if (!(await isDockerArchive(source.file))) issues.push({ path: '--image-archive', message: `${source.file} is not a Docker image archive (a tar with manifest.json, as docker save writes)` });
  } else if (source.kind === 'binary') {
    const f = await st(source.file);
    if (!f) issues.push({ path: '--binary', message: `no such file: ${source.file}` });
    else if (!f.isFile()) issues.push({ path: '--binary', message: `not a regular file: ${source.file}` });
    else if ((f.mode & 0o111) === 0) issues.push({ path: '--binary', message: `not executable: ${source.file} (chmod +x it)` });
  }
}

const errorText = (err: unknown): string => (err instanceof Error ? err.message : String(err));

/**
 * Removes a container by name or id; one already gone counts as removed. Tried three times with
 * room to finish: dockerd under load can be slow to remove a container that keeps restarting.
 */
async function removeContainer(agent: AgentClient, container: string): Promise<void> {
  for (let attempt = 1; ; attempt++) {
    try {
      await agent.call(APP_METHODS.remove, { container }, { timeoutMs: 120_000 });
      return;
    } catch (err) {
      if (err instanceof AgentRemoteError && err.remoteCode === 'EDOCKER_NOTFOUND') return;
      if (attempt === 3) throw err;
      await sleep(1000);
    }
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

export class AppService {
  constructor(private readonly ctx: AppContext) {}

  private op(kind: 'create' | 'delete' | 'start' | 'stop') {
    return { kind, pid: process.pid, startedAt: this.ctx.now() };
  }

  private check<S extends v.GenericSchema>(schema: S, raw: unknown, what: string): v.InferOutput<S> {
    const r = v.safeParse(schema, raw);
    if (!r.success) throw new AgentProtocolError(`${what}: the guest's answer is not valid: ${r.issues.map((i) => i.message).join('; ')}`, { received: raw });
    return r.output;
  }

  /** The project, which must exist and run. */
  private async runningProject(name: string): Promise<{ project: Project; vmId: string }> {
    await this.ctx.reconcile();
    const s = await this.ctx.store.read();
    const project = requireRecord(s, 'project', name);
    const vm = findRecord(s, 'vm', project.vmId);
    if (!vm || !LIVE_STATES.has(vm.state)) {
      throw stateError(`project ${name} is not running (VM ${vm?.state ?? 'missing'})`, `start it: goshipctl project start ${name}`);
    }
    return { project, vmId: project.vmId };
  }

  private async withAgent<T>(vmId: string, fn: (agent: AgentClient) => Promise<T>): Promise<T> {
    const agent = await this.ctx.vms.agent(vmId, 30_000);
    try {
      return await fn(agent);
    } finally {
      await agent.close();
    }
  }

  /**
   * Deploys (or replaces) an app. A container: its image first, then the new
   * container; the old one goes only once the new one runs. A process: its
   * program uploaded beside the old one, then the unit swapped (by the agent).
   */
  async deploy(o: DeployOptions): Promise<AppView> {
    const { app: a, issues } = checkAppOptions(o);
    const host = await this.ctx.vms.hostFacts();
    a.ports.forEach((p, i) => {
      const low = privilegedPortIssue(p.host, host, `--port[${i}]`);
      if (low) issues.push(low);
    });
    const kind: AppKind = a.source.kind === 'binary' || a.source.kind === 'command' ? 'process' : 'container';
    await checkSourceFiles(a.source, issues);
    if (issues.length > 0) throw new ValidationError(issues, { subject: 'invalid app', hint: 'goshipctl app deploy --help' });
    const { vmId } = await this.runningProject(a.project);
    const key = appKey(a.project, a.app);

    // Under the store lock: the record (busy, or a new one), and the host ports.
    const before = await this.ctx.store.update(async (draft) => {
      requireRecord(draft, 'project', a.project);
      const old = draft.apps[key];
      if (old?.op) throw busyError(`app ${a.project}/${a.app}`, old.op);
      if (old && old.kind !== kind) {
        throw stateError(`app ${a.project}/${a.app} is a ${old.kind} app: it cannot become a ${kind} app`, `remove it first: goshipctl app remove ${a.project} ${a.app}`);
      }
      const taken = await takenPorts(draft, a.ports, `app ${a.project}/${a.app}`);
      if (taken.length > 0) throw new PortTakenError(taken);
      const now = this.ctx.now();
      const rec: App = old ?? { project: a.project, name: a.app, kind, createdAt: now, state: 'deploying', generation: 0 };
      rec.op = this.op(old ? 'start' : 'create');
      if (!old) draft.apps[key] = rec;
      return structuredClone(old);
    });
    const generation = (before?.generation ?? 0) + 1;
    try {
      const deployed: { container: string; image: string; info?: ProcInfo } = await this.withAgent(vmId, (agent) =>
        kind === 'container' ? this.deployContainer(agent, a, before, generation, o.onProgress ?? (() => undefined)) : this.deployProcess(agent, a, generation, before === undefined),
      );
      const spec: AppSpecRecord = {
        source: a.source.kind === 'command' ? { kind: 'command' } : 'dir' in a.source ? { kind: 'build', dir: a.source.dir } : 'ref' in a.source ? { kind: 'image', ref: a.source.ref } : { kind: a.source.kind, file: a.source.file },
        ports: a.ports,
        env: a.env,
        volumes: a.volumes,
        restart: a.restart,
        ...(a.memoryBytes !== undefined ? { memoryBytes: a.memoryBytes } : {}),
        ...(a.cpus !== undefined ? { cpus: a.cpus } : {}),
        ...(a.cmd ? { cmd: a.cmd } : {}),
        ...(a.workdir !== undefined ? { workdir: a.workdir } : {}),
        ...(a.user !== undefined ? { user: a.user } : {}),
      };
      const recorded = await this.ctx.store.update((draft) => {
        const rec = requireRecord(draft, 'app', key);
        rec.spec = spec;
        rec.generation = generation;
        rec.container = deployed.container;
        rec.image = deployed.image;
        rec.state = 'deployed';
        rec.updatedAt = this.ctx.now();
        delete rec.lastError;
        delete rec.op;
        return structuredClone(rec);
      });
      trace(`app ${a.app}: recorded`);
      await this.syncForwards(a.project, vmId);
      trace(`app ${a.app}: forwards synced`);
      // A process's state came back with the apply: no second round trip to systemd in the guest.
      return deployed.info ? processView(a.project, recorded, true, deployed.info) : this.info(a.project, a.app);
    } catch (err) {
      await this.ctx.store.update((draft) => {
        const rec = findRecord(draft, 'app', key);
        if (!rec) return;
        if (before === undefined) delete draft.apps[key];
        else {
          rec.lastError = errorText(err);
          delete rec.op;
        }
      });
      throw err;
    }
  }

  /** A container app's deploy in the VM: image, new container, the old one stopped, the new one started (or the old one back). */
  private async deployContainer(agent: AgentClient, a: ValidatedApp, before: App | undefined, generation: number, progress: (line: string) => void): Promise<{ container: string; image: string }> {
    const image = await this.acquireImage(agent, a, generation, progress);
    const next = containerName(a.app, generation);
    // A leftover of an interrupted deploy with this name goes first.
    await removeContainer(agent, next);
    await agent.call(APP_METHODS.create, containerSpec(a.project, a, image.imageId, generation), { timeoutMs: 60_000 });
    const old = before?.container;
    if (old) await agent.call(APP_METHODS.stop, { container: old, timeoutSec: 10 }, { timeoutMs: 60_000 }).catch(() => undefined);
    const started = await this.startAndSettle(agent, next);
    if (!started.ok) {
      // Roll back: the new container goes first (it may hold the ports while it restarts), then the old one runs again.
      const left = await removeContainer(agent, next).then(
        () => '',
        (err: unknown) => `; the new container ${next} could not be removed (${errorText(err)}): the next deploy or app remove takes it`,
      );
      let back = 'fix the image or the command and deploy again';
      if (old) {
        const again = await this.startAndSettle(agent, old);
        back = again.ok ? 'the version that ran before runs again' : `the version before did not start again either: ${again.why}`;
      }
      throw new RuntimeError('EAPP_START', `app ${a.project}/${a.app}: the new version did not start: ${started.why}${left}`, { hint: back });
    }
    // Every other container of this app goes: the one before, and strays of deploys cut off or rolled back.
    // The new version runs by now, so one that will not go is a warning (app list shows it unmanaged), not a failed deploy.
    for (const line of await this.removeOthers(agent, a.project, a.app, next)) progress(`warning: ${line}`);
    // The name the user knows: the ref pulled, the tag GoShip built; an archive's own tag.
    const s = a.source;
    const name = s.kind === 'image' ? s.ref : s.kind === 'build' ? buildTag(a.app, generation) : (image.tags[0] ?? image.imageId);
    return { container: next, image: name };
  }

  /**
   * Removes the app's containers other than `keep`: the one before, and strays of deploys cut off or rolled back.
   * Returns what would not go, one line per container with the command that removes it by hand.
   */
  private async removeOthers(agent: AgentClient, project: string, app: string, keep: string): Promise<string[]> {
    const { containers } = this.check(ContainerListSchema, await agent.call(APP_METHODS.list, {}, { timeoutMs: 60_000 }), 'app list');
    const failed: string[] = [];
    for (const c of containers) {
      if (c.labels[APP_LABEL] !== app || c.labels[PROJECT_LABEL] !== project || c.name === keep) continue;
      await removeContainer(agent, c.id).catch((err: unknown) => {
        failed.push(`app ${project}/${app}: the container ${c.name} could not be removed (${errorText(err)}); remove it with: goshipctl vm exec ${project} -- docker rm -f ${c.name}`);
      });
    }
    return failed;
  }

  /**
   * A process app's deploy: the program (--binary) uploaded with its checksum
   * into the generation's own directory, keeping its file name; then the agent
   * swaps the unit and watches the new program (and rolls back when it does not stay up).
   */
  private async deployProcess(agent: AgentClient, a: ValidatedApp, generation: number, first: boolean): Promise<{ container: string; image: string; info: ProcInfo }> {
    let argv: string[];
    if (a.source.kind === 'binary') {
      const staged = await agent.call(PROC_METHODS.stage, { app: a.app, generation, ...(a.user === undefined ? { ownUser: true } : {}) });
      const { dir } = this.check(ProcStageResultSchema, staged, 'proc stage');
      const target = `${dir}/${basename(a.source.file)}`;
      trace(`app ${a.app}: staged ${dir}`);
      try {
        await agent.upload(a.source.file, target, { mode: 0o755 });
      } catch (err) {
        // A first deploy leaves nothing in the guest: the staged directory and the user made for it go.
        if (first) await agent.call(PROC_METHODS.remove, { app: a.app }).catch(() => undefined);
        throw err;
      }
      trace(`app ${a.app}: uploaded ${target}`);
      argv = [target, ...(a.cmd ?? [])];
    } else {
      argv = [...(a.cmd ?? [])];
    }
    const spec = {
      app: a.app,
      generation,
      argv,
      env: a.env,
      ...(a.workdir !== undefined ? { workdir: a.workdir } : {}),
      ...(a.user !== undefined ? { user: a.user } : {}),
      restart: a.restart,
      ...(a.memoryBytes !== undefined ? { memoryBytes: a.memoryBytes } : {}),
      ...(a.cpus !== undefined ? { cpus: a.cpus } : {}),
      settleMs: START_SETTLE_MS,
      readyPorts: a.ports.filter((q) => q.proto === 'tcp').map((q) => q.container),
    };
    const res = this.check(ProcApplyResultSchema, await agent.call(PROC_METHODS.apply, spec, { timeoutMs: 120_000 }), 'proc apply');
    trace(`app ${a.app}: applied (${res.ok ? 'up' : 'not up'})`);
    if (!res.ok) throw new RuntimeError('EAPP_START', `app ${a.project}/${a.app}: the new version did not start: ${res.why}`, { hint: res.back });
    return { container: res.info.unit, image: res.info.argv[0] ?? argv[0]!, info: res.info };
  }

  private async acquireImage(agent: AgentClient, a: ValidatedApp, generation: number, progress: (line: string) => void) {
    const out = lineWriter(progress);
    const s = a.source;
    let raw: unknown;
    if (s.kind === 'build') {
      const context = await buildContextStream(s.dir);
      raw = await agent.callStreaming(APP_METHODS.build, { tag: buildTag(a.app, generation), labels: { [APP_LABEL]: a.app } }, { stdin: context, stdout: out, timeoutMs: 3_600_000 });
    } else if (s.kind === 'archive') {
      raw = await agent.callStreaming(APP_METHODS.load, {}, { stdin: createReadStream(s.file), stdout: out, timeoutMs: 3_600_000 });
    } else {
      raw = await agent.callStreaming(APP_METHODS.pull, { ref: (s as { ref: string }).ref }, { stdout: out, timeoutMs: 3_600_000 });
    }
    return this.check(ImageResultSchema, raw, 'app image');
  }

  /** Starts a container and watches it for a moment: a program that exits at once did not start. */
  private async startAndSettle(agent: AgentClient, container: string): Promise<{ ok: true; info: ContainerInfo } | { ok: false; why: string }> {
    try {
      await agent.call(APP_METHODS.start, { container }, { timeoutMs: 60_000 });
    } catch (err) {
      return { ok: false, why: errorText(err) };
    }
    await sleep(START_SETTLE_MS);
    const info = this.check(ContainerInfoSchema, await agent.call(APP_METHODS.inspect, { container }), 'app inspect');
    if (info.state === 'running' && info.restartCount === 0) return { ok: true, info };
    const tail = await this.logTail(agent, container);
    const how =
      info.state === 'restarting' || info.restartCount > 0
        ? `it keeps restarting (${info.restartCount} restart${info.restartCount === 1 ? '' : 's'} in ${START_SETTLE_MS / 1000} s${info.exitCode ? `, exit code ${info.exitCode}` : ''})`
        : `it ${info.state} with exit code ${info.exitCode ?? '?'}`;
    return { ok: false, why: `${how}${info.error ? `: ${info.error}` : ''}${tail ? `; its last output: ${tail}` : ''}` };
  }

  private async logTail(agent: AgentClient, container: string): Promise<string> {
    // The last 10 lines, as asked of Docker, but one of them may be endless: only the last bytes are kept.
    const tail = tailCollector();
    await agent.callStreaming(APP_METHODS.logs, { container, follow: false, tail: 10, timestamps: false }, { stdout: tail.stream, stderr: tail.stream, timeoutMs: 30_000 }).catch(() => undefined);
    return tail.bytes().toString('utf8').trim().split('\n').slice(-5).join(' | ').slice(-800);
  }

  /**
   * The VM's forwards follow the project's ports and its apps' ports: each app
   * port is a forward of the host port to the same guest port. Recorded in the
   * VM's spec (so every start applies them) and applied live through the
   * monitor.
   */
  private async syncForwards(project: string, vmId: string): Promise<void> {
    const wanted = await this.ctx.store.update((draft) => setProjectForwards(draft, project, vmId));
    const live = await this.ctx.vms.livePorts(vmId);
    if (live === undefined) return;
    const monitor: MonitorClient = await this.ctx.vms.monitor(vmId);
    try {
      const have = new Set(live.map((f) => `${f.proto}:${f.host}`));
      const want = new Set(wanted.map((f) => `${f.proto}:${f.host}`));
      for (const f of wanted) if (!have.has(`${f.proto}:${f.host}`)) await monitor.portAdd({ ...f, hostAddr: DEFAULT_HOST_ADDR });
      for (const f of live) if (!want.has(`${f.proto}:${f.host}`)) await monitor.portRemove({ proto: f.proto, host: f.host, hostAddr: f.hostAddr });
    } finally {
      await monitor.close();
    }
  }

  /** Every app of a project (or of every project), records merged with what Docker reports. */
  async list(project?: string): Promise<AppView[]> {
    await this.ctx.reconcile();
    const s = await this.ctx.store.read();
    const projects = project ? [requireRecord(s, 'project', project)] : Object.values(s.projects).sort((x, y) => x.name.localeCompare(y.name));
    const views: AppView[] = [];
    for (const p of projects) views.push(...(await this.viewsOf(s, p)));
    return views;
  }

  private async viewsOf(s: State, p: Project): Promise<AppView[]> {
    const records = appsOf(s, p.name);
    const vm = findRecord(s, 'vm', p.vmId);
    let containers: ContainerInfo[] | undefined;
    let procs: ProcInfo[] | undefined;
    if (vm && LIVE_STATES.has(vm.state) && (records.length > 0 || vm.state === 'ready')) {
      await this.withAgent(p.vmId, async (agent) => {
        // dockerd is asked only when there are containers to ask about (a VM without apps leaves it asleep).
        const wantDocker = records.length === 0 || records.some((r) => r.kind === 'container');
        containers = wantDocker ? this.check(ContainerListSchema, await agent.call(APP_METHODS.list, {}, { timeoutMs: 60_000 }), 'app list').containers : [];
        // An agent older than process apps (an image built before them) has none to report.
        const hasProcs = records.some((r) => r.kind === 'process');
        procs = await agent.call(PROC_METHODS.list, {}, { timeoutMs: 60_000 }).then(
          (raw) => this.check(ProcListSchema, raw, 'proc list').procs,
          (err: { remoteCode?: string }) => {
            if (!hasProcs && err.remoteCode === REMOTE_CODES.unknownMethod) return [];
            throw err;
          },
        );
      }).catch(() => {
        containers = undefined;
        procs = undefined;
      });
    }
    const live = containers !== undefined && procs !== undefined;
    const views: AppView[] = [];
    const seen = new Set<string>();
    for (const r of records.sort((x, y) => x.name.localeCompare(y.name))) {
      const base = { project: p.name, name: r.name, kind: r.kind, image: r.image ?? null, ports: r.spec?.ports ?? [], record: r };
      if (r.kind === 'process') {
        const x = procs?.find((q) => q.app === r.name);
        if (x) seen.add(`proc:${x.app}`);
        views.push(processView(p.name, r, live, x));
        continue;
      }
      const c = containers?.find((x) => x.name === r.container) ?? containers?.find((x) => x.labels[APP_LABEL] === r.name && x.labels[PROJECT_LABEL] === p.name);
      if (c) seen.add(c.id);
      views.push({
        ...base,
        state: !live ? 'vm-stopped' : c ? c.state : r.op ? 'deploying' : 'missing',
        restarts: c?.restartCount ?? null,
        startedAt: c?.state === 'running' ? c.startedAt : null,
        container: c ?? null,
        process: null,
      });
    }
    for (const c of containers ?? []) {
      // Every container in the project's VM is the project's: those without GoShip's labels were started behind its back.
      if (seen.has(c.id) || (c.labels[PROJECT_LABEL] !== undefined && c.labels[PROJECT_LABEL] !== p.name)) continue;
      views.push({ project: p.name, name: c.labels[APP_LABEL] ?? c.name, kind: 'container', state: `unmanaged (${c.state})`, image: c.image, ports: [], restarts: c.restartCount, startedAt: c.startedAt, container: c, process: null, record: null });
    }
    for (const x of procs ?? []) {
      if (seen.has(`proc:${x.app}`)) continue;
      views.push({ project: p.name, name: x.app, kind: 'process', state: `unmanaged (${x.state})`, image: x.argv[0] ?? null, ports: [], restarts: x.restarts, startedAt: x.startedAt, container: null, process: x, record: null });
    }
    return views;
  }

  async info(project: string, app: string): Promise<AppView> {
    const views = await this.list(project);
    const view = views.find((x) => x.name === app && x.record !== null);
    if (!view) throw new RuntimeError('ENOTFOUND', `app ${project}/${app} does not exist`, { hint: `goshipctl app list ${project}` });
    return view;
  }

  private async recorded(project: string, app: string): Promise<{ rec: App; vmId: string }> {
    const { vmId } = await this.runningProject(project);
    const rec = findRecord(await this.ctx.store.read(), 'app', appKey(project, app));
    if (!rec) throw new RuntimeError('ENOTFOUND', `app ${project}/${app} does not exist`, { hint: `goshipctl app list ${project}` });
    if (rec.op) throw busyError(`app ${project}/${app}`, rec.op);
    if (!rec.container) throw stateError(`app ${project}/${app} has no container yet`, `deploy it: goshipctl app deploy ${project} ${app} …`);
    return { rec, vmId };
  }

  /** start, stop or restart the app's container. */
  async control(project: string, app: string, verb: 'start' | 'stop' | 'restart'): Promise<AppView> {
    const { rec, vmId } = await this.recorded(project, app);
    await this.withAgent(vmId, async (agent) => {
      if (rec.kind === 'process') this.check(ProcInfoSchema, await agent.call(PROC_METHODS.control, { app, verb }, { timeoutMs: 60_000 }), 'proc control');
      else await agent.call(APP_METHODS[verb], { container: rec.container, timeoutSec: 10 }, { timeoutMs: 60_000 });
    });
    await this.ctx.store.update((draft) => {
      const r = findRecord(draft, 'app', appKey(project, app));
      if (r) r.state = verb === 'stop' ? 'stopped' : 'deployed';
    });
    return this.info(project, app);
  }

  /** Removes the app: its container in the VM, its forwards and its record. */
  async remove(project: string, app: string): Promise<void> {
    const key = appKey(project, app);
    await this.ctx.reconcile();
    const s = await this.ctx.store.read();
    const p = requireRecord(s, 'project', project);
    const rec = findRecord(s, 'app', key);
    const vm = findRecord(s, 'vm', p.vmId);
    if (!rec) {
      // Not recorded, but in the guest (a first deploy cut off, or made behind GoShip's back): app list shows it unmanaged, so it can go.
      const stray = vm && LIVE_STATES.has(vm.state) ? (await this.viewsOf(s, p)).find((v) => v.name === app && v.record === null) : undefined;
      if (!stray) throw new RuntimeError('ENOTFOUND', `app ${project}/${app} does not exist`, { hint: `goshipctl app list ${project}` });
      const call = stray.process ? ([PROC_METHODS.remove, { app }] as const) : ([APP_METHODS.remove, { container: stray.container!.id }] as const);
      await this.withAgent(p.vmId, (agent) => agent.call(call[0], call[1], { timeoutMs: 60_000 }));
      return;
    }
    if (rec.container && vm && LIVE_STATES.has(vm.state)) {
      if (rec.kind === 'process') await this.withAgent(p.vmId, (agent) => agent.call(PROC_METHODS.remove, { app }, { timeoutMs: 60_000 }));
      else {
        // The recorded container, and any stray of a deploy cut off or rolled back under the same app.
        const container = rec.container;
        await this.withAgent(p.vmId, async (agent) => {
          await removeContainer(agent, container);
          const failed = await this.removeOthers(agent, project, app, container);
          if (failed.length > 0) throw new RuntimeError('EAGENT_RUNTIME', failed.join('; '));
        });
      }
    }
    await this.ctx.store.update((draft) => {
      delete draft.apps[key];
    });
    await this.syncForwards(project, p.vmId);
  }

  async logs(project: string, app: string, o: AppLogsOptions): Promise<void> {
    const { rec, vmId } = await this.recorded(project, app);
    const which = rec.kind === 'process' ? { method: PROC_METHODS.logs, target: { app } } : { method: APP_METHODS.logs, target: { container: rec.container } };
    await this.withAgent(vmId, (agent) =>
      agent.callStreaming(
        which.method,
        {
          ...which.target,
          follow: o.follow === true,
          timestamps: o.timestamps === true,
          ...(o.tail !== undefined ? { tail: o.tail } : {}),
          ...(o.sinceSec !== undefined ? { since: Math.floor(Date.now() / 1000) - o.sinceSec } : {}),
        },
        { ...(o.stdout ? { stdout: o.stdout } : {}), ...(o.stderr ? { stderr: o.stderr } : {}), ...(o.signal ? { signal: o.signal } : {}), timeoutMs: 2 ** 31 - 1 },
      ),
    );
  }

  /** Runs a command in the app's container; its exit code. */
  async exec(project: string, app: string, argv: string[], o: AppExecOptions): Promise<number | null> {
    const { rec, vmId } = await this.recorded(project, app);
    const which = rec.kind === 'process' ? { method: PROC_METHODS.exec, target: { app } } : { method: APP_METHODS.exec, target: { container: rec.container } };
    const raw = await this.withAgent(vmId, (agent) =>
      agent.callStreaming(
        which.method,
        { ...which.target, argv, tty: o.tty === true, stdin: o.stdin !== undefined, ...(o.rows && o.cols ? { rows: o.rows, cols: o.cols } : {}) },
        {
          ...(o.stdin ? { stdin: o.stdin } : {}),
          ...(o.ctl ? { ctl: o.ctl } : {}),
          ...(o.stdout ? { stdout: o.stdout } : {}),
          ...(o.stderr ? { stderr: o.stderr } : {}),
          ...(o.signal ? { signal: o.signal } : {}),
          timeoutMs: 2 ** 31 - 1,
        },
      ),
    );
    return this.check(AppExecResultSchema, raw, 'app exec').exitCode;
  }
}

/** Pure: the app records of a project. */
export function appsOf(s: State, project: string): App[] {
  return Object.values(s.apps).filter((a) => a.project === project);
}

/** Under the store lock: the VM's recorded forwards become its project's ports and its apps' ports (applied at every start); returns them. */
export function setProjectForwards(draft: State, project: string, vmId: string): Array<{ proto: 'tcp' | 'udp'; host: number; guest: number }> {
  const p = requireRecord(draft, 'project', project);
  const vm = requireRecord(draft, 'vm', vmId);
  const forwards = [
    ...p.spec.ports.map((q) => ({ proto: q.proto, host: q.host, guest: q.guest })),
    // A container's port is published by dockerd on the guest port of the host port's number; a process listens on its own.
    ...appsOf(draft, project).flatMap((a) => (a.spec?.ports ?? []).map((q) => ({ proto: q.proto, host: q.host, guest: a.kind === 'process' ? q.container : q.host }))),
  ];
  const network = (vm.config.network ?? { mode: 'user' }) as Record<string, unknown>;
  vm.config = { ...vm.config, network: { ...network, forwards } };
  return forwards;
}
