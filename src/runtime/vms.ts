/**
 * VM lifecycle: create, start, stop, destroy, reconcile. The store holds the
 * records; each running VM has a monitor process (src/monitor) that is
 * QEMU's parent and the one holder of its QMP connection and agent session:
 * start launches the monitor, everything after talks to it.
 *
 * Crash safety: before its first side effect an operation writes `op` (its
 * kind and this process's PID) into the record, and clears it after the last.
 * A goshipctl killed in between leaves `op` behind; reconcile sees that the
 * PID is gone and repairs the record (see docs/architecture.md).
 */
import { existsSync } from 'node:fs';
import { mkdir, readFile, rm } from 'node:fs/promises';
import { resolve } from 'node:path';
import type { Layout } from '../layout.ts';
import { buildSeed, type SeedOptions } from '../cloudinit/index.ts';
import { argvShape } from './templates.ts';
import { VmStateError } from '../vmstate/index.ts';
import { MonitorClient, answering, isMonitorCmdline, startMonitor, writeLaunch, type Launch, type EscalationResult, type Forward, type StopTimeouts } from '../monitor/index.ts';
import {
  DEFAULT_MACHINE,
  MACHINES,
  buildArgv,
  createOverlay,
  imageChain,
  isOurProcess,
  logTail,
  processMarker,
  resolveSpec,
  waitGone,
  type HostFacts,
  type ImageLayer,
  type VmConfig,
  type VmSpec,
} from '../qemu/index.ts';
import { pidAlive } from '../proc.ts';
import { AGENT_RUNTIME_HINT, AgentRemoteError, type AgentClient, type ConnectProgress } from '../serial/index.ts';
import { type PendingOp, type State, type Store, type Vm, type VmSaved, findRecord, requireRecord, assertNameFree, LOCAL_NODE } from '../store/index.ts';
import { RuntimeError, busyError, stateError } from './errors.ts';
import { vmPaths } from './paths.ts';
import { allocateIdentity, readHead, releaseIdentity, removeCgroup, removeVmTree, privateRunDir, type Identity } from '../jail/index.ts';
import { checkChain, checkSpecPaths, filesystemLaunch, prepareJail, sharedRamFile } from './jail.ts';
import { LIVE_STATES, reconcileDecision, type ReconcileDecision } from './reconcile.ts';
import { trace } from './trace.ts';
import { DEVICE_STATE_ALLOWANCE, runOn } from './saved-state.ts';

export { LIVE_STATES };

export interface VmContext {
  layout: Layout;
  store: Store;
  host: () => Promise<HostFacts>;
  now: () => string;
  qemuBinary: string;
  /** This QEMU's machine-type aliases (`q35` → `pc-q35-7.2`), asked once. */
  machineAliases: () => Promise<Map<string, string>>;
  /** GoShip runs as root: each VM's QEMU runs as an identity of its own (src/jail). */
  root: boolean;
}

export interface CreateVmOptions {
  /** The VM spec. For an image-backed VM, `disks` and `boot` come from the image unless given. */
  spec: VmSpec & { name: string };
  /** Base image: the VM gets a qcow2 overlay on it as its first disk. A relative path is the caller's. */
  base?: { path: string; kernel?: string; initrd?: string; cmdline?: string; name?: string; backing?: { path: string; format: string } };
  /** Overlay virtual size in bytes (at least the base's). */
  diskBytes?: number;
  /** cloud-init NoCloud seed, written to the VM's seed.iso. */
  seed?: SeedOptions;
  project?: string;
}

export interface StartVmOptions {
  /**
   * Start on this saved state (a template's) instead of booting. Its VM's argv
   * shape (templates.ts argvShape) must be this VM's: otherwise EVMSTATE, and
   * nothing started.
   */
  restore?: { state: string; bytes: number; argvShape: readonly string[]; ram?: { file: string; bytes: number; key: string; private?: true } };
  /**
   * A template's VM: its RAM in a file of its own directory (`memory`, given
   * to its identity), mapped shared, so that a save with `x-ignore-shared`
   * leaves it out and the file is the template's memory. The first QEMU only.
   */
  sharedRam?: boolean;
  /**
   * A suspended VM (its state saved, `Vm.saved`) restores it unless this is
   * set: then the saved state is removed and the VM boots from its disk, as
   * after a power cut.
   */
  discardSaved?: boolean;
  /** Start on this internal snapshot of the VM's disk, memory included (`-loadvm`); a saved state is removed, as with `discardSaved`. */
  loadvm?: string;
  /** Wait for the guest agent's hello before returning (`ready`). */
  waitAgent?: boolean;
  agentTimeoutMs?: number;
  onAgentProgress?: (p: ConnectProgress) => void;
}

/** How long a command waits for a guest agent that is not ready, by default. */
export const DEFAULT_AGENT_WAIT_MS = 30_000;

export interface AgentWaitOptions {
  /** Wait at most this long for an agent that is not ready (default DEFAULT_AGENT_WAIT_MS). */
  agentWaitMs?: number;
  /** Called when the wait begins; what it returns is called when it ends. */
  onWaiting?: () => () => void;
}

export interface StopVmOptions {
  force?: boolean;
  timeouts?: Partial<StopTimeouts>;
}

export interface StopVmResult extends EscalationResult {
  vm: Vm;
}

/** What reconcile changed, for `--json` and for tests. */
export interface ReconcileChange {
  vm: string;
  from: Vm['state'];
  to: Vm['state'];
  reason: string;
}

/** An op whose goshipctl process is gone (killed, crashed). */
export function opAbandoned(op: PendingOp | undefined): boolean {
  return op !== undefined && op.pid !== process.pid && !pidAlive(op.pid);
}

/** QEMU's pidfile, which QEMU (the VM's identity) writes: read without following a link, a few bytes at most. */
async function readPidfile(path: string): Promise<number | undefined> {
  const n = Number((await readHead(path, 32).catch(() => Buffer.alloc(0))).toString('latin1').trim());
  return Number.isInteger(n) && n > 0 ? n : undefined;
}

/** The PID of the VM's QEMU if it is alive and really ours (record first, then QEMU's pidfile). */
export async function livePid(vm: Vm): Promise<number | undefined> {
  const marker = processMarker(vm.id);
  if (vm.pid !== undefined && (await isOurProcess(vm.pid, marker))) return vm.pid;
  const fromFile = await readPidfile(vm.paths.pidfile);
  if (fromFile !== undefined && fromFile !== vm.pid && (await isOurProcess(fromFile, marker))) return fromFile;
  return undefined;
}

/** Whether the VM's recorded monitor is alive and is this VM's monitor (not a reused PID). */
export async function monitorAlive(vm: Vm, home: string): Promise<boolean> {
  const pid = vm.monitor?.pid;
  if (pid === undefined || !pidAlive(pid)) return false;
  const cmdline = await readFile(`/proc/${pid}/cmdline`, 'latin1').catch(() => '');
  return isMonitorCmdline(cmdline, vm.id, home);
}

export class VmService {
  constructor(private readonly ctx: VmContext) {}

  private op(kind: PendingOp['kind']): PendingOp {
    return { kind, pid: process.pid, startedAt: this.ctx.now() };
  }

  private async resolve(vm: Pick<Vm, 'config'>, extraExisting: string[] = []): Promise<VmConfig> {
    const host = await this.ctx.host();
    const spec = vm.config as VmSpec;
    const id = (spec.id as string | undefined) ?? (spec.name as string);
    const known = new Set(extraExisting);
    const { qmpSocket, qmpUserSocket, agentSocket, consoleSocket, pidfile } = vmPaths(this.ctx.layout, id);
    return resolveSpec(spec, {
      host,
      paths: { qmpSocket, qmpUserSocket, agentSocket, consoleSocket, pidfile },
      exists: (p) => known.has(p) || existsSync(p),
    });
  }

  /**
   * The versioned machine type an alias stands for on this QEMU, as libvirt
   * pins it at define time: a QEMU upgrade then does not change the guest's
   * hardware under it. A versioned type (or an alias this QEMU does not list)
   * stays as it is.
   */
  async pinnedMachine(machine: unknown): Promise<unknown> {
    const m = machine ?? DEFAULT_MACHINE;
    if (typeof m !== 'string' || !(MACHINES as readonly string[]).includes(m)) return m;
    return (await this.ctx.machineAliases()).get(m) ?? m;
  }

  /** What this host can do (probed once per runtime). */
  hostFacts(): Promise<HostFacts> {
    return this.ctx.host();
  }

  /** The argv a spec becomes, without creating anything (`goshipctl vm args`). */
  async argvFor(spec: unknown): Promise<string[]> {
    return buildArgv(await this.resolve({ config: spec as Record<string, unknown> }), this.ctx.qemuBinary);
  }

  /**
   * Compares every record with what runs. A QEMU without its monitor gets a
   * new monitor that adopts it; a VM recorded as live whose QEMU and monitor
   * are both gone ended where nothing saw it (`crashed`, end `lost`, with the
   * end of its log); operations of dead goshipctl processes are cleared.
   */
  async reconcile(): Promise<ReconcileChange[]> {
    const snapshot = await this.ctx.store.read();
    const decisions = new Map<string, ReconcileDecision>();
    for (const vm of Object.values(snapshot.vms)) {
      const d = reconcileDecision(vm, {
        qemuPid: await livePid(vm),
        monitorAlive: await monitorAlive(vm, this.ctx.layout.home),
        opAbandoned: opAbandoned(vm.op),
      });
      if (d.action !== 'none' && d.action !== 'busy') decisions.set(vm.id, d);
    }
    if (decisions.size === 0) return [];
    const tails = new Map<string, string>();
    for (const [id, d] of decisions) if (d.action === 'ended') tails.set(id, await logTail(snapshot.vms[id]!.paths.qemuLog));
    const changes = await this.ctx.store.update((draft) => {
      const out: ReconcileChange[] = [];
      for (const [id, d] of decisions) {
        const vm = draft.vms[id];
        // Changed since the snapshot (another goshipctl, or the monitor): its own writer is right.
        const before = snapshot.vms[id];
        if (!vm || !before || vm.state !== before.state || vm.op?.pid !== before.op?.pid) continue;
        const from = vm.state;
        const op = vm.op;
        if ('clearOp' in d ? d.clearOp : d.action === 'clear-op') delete vm.op;
        if (op?.kind === 'create') vm.note = 'create was interrupted: its files may be incomplete; destroy it and create it again';
        switch (d.action) {
          case 'ended':
            vm.state = d.state;
            vm.stoppedAt = this.ctx.now();
            vm.end = { ...d.end, at: this.ctx.now(), logTail: tails.get(id) ?? '' };
            delete vm.pid;
            delete vm.monitor;
            out.push({ vm: id, from, to: vm.state, reason: d.end.summary });
            break;
          case 'fix-pid':
            vm.pid = d.pid;
            break;
          case 'clear-op':
            out.push({ vm: id, from, to: vm.state, reason: `cleared an interrupted ${d.op.kind} (goshipctl pid ${d.op.pid} is gone)` });
            break;
          case 'adopt':
          case 'finish-suspend':
            break;
        }
      }
      return out;
    });
    for (const [id, d] of decisions) {
      if (d.action === 'finish-suspend') changes.push(await this.finishSuspend(id, d.then));
      if (d.action !== 'adopt') continue;
      const vm = (await this.ctx.store.read()).vms[id];
      if (!vm) continue;
      try {
        await startMonitor({ layout: this.ctx.layout, vm, adopt: true });
        changes.push({ vm: id, from: vm.state, to: LIVE_STATES.has(vm.state) ? vm.state : 'running', reason: `a new monitor adopted its running QEMU (pid ${d.pid})` });
      } catch (err) {
        // Another goshipctl's monitor won the claim, or the QEMU went meanwhile: the next look decides.
        trace(`vm ${id}: adopting failed: ${(err as Error).message}`);
      }
    }
    return changes;
  }

  /** Ends a suspend whose goshipctl died (reconcile's `finish-suspend`): QEMU stopped on a recorded state, or the guest run on. */
  private async finishSuspend(id: string, then: 'stop' | 'run'): Promise<ReconcileChange> {
    const vm = await this.get(id);
    const from = vm.state;
    try {
      if (then === 'stop') await this.quitSaved(id);
      else {
        await runOn(vm);
        await rm(`${this.ctx.layout.vmFile(id, 'savedState')}.partial`, { force: true });
      }
    } catch (err) {
      trace(`vm ${id}: finishing an interrupted suspend: ${(err as Error).message}`);
    }
    const after = await this.ctx.store.update((draft) => {
      const rec = findRecord(draft, 'vm', id);
      if (rec?.op?.kind === 'suspend' && opAbandoned(rec.op)) delete rec.op;
      return rec?.state ?? from;
    });
    return { vm: id, from, to: after, reason: then === 'stop' ? 'finished an interrupted suspend: its state was saved' : 'an interrupted suspend saved nothing: the VM runs on' };
  }

  /** Ends the QEMU of a VM whose state is saved (paused since): its monitor's forced stop, which records it `suspended`. */
  private async quitSaved(id: string): Promise<void> {
    const monitor = await this.monitor(id);
    try {
      await monitor.stop({ force: true });
    } finally {
      await monitor.close();
    }
  }

  /**
   * Suspends a running VM: its monitor pauses the guest, saves its memory and
   * devices, records the state (`saved`) and ends its QEMU, which it records
   * `suspended`; the next start restores the state. The monitor does it all,
   * so a goshipctl killed meanwhile changes nothing once the state is
   * recorded; before, its going cancels the save and the guest runs on. A
   * save that fails runs the guest again.
   */
  async suspend(name: string): Promise<Vm & { saved: VmSaved }> {
    const { store, layout } = this.ctx;
    await this.reconcile();
    const vm = await store.update((draft) => {
      const rec = requireRecord(draft, 'vm', name);
      if (rec.op) throw busyError(`VM ${name}`, rec.op);
      if (rec.state !== 'running' && rec.state !== 'ready') {
        throw stateError(`VM ${name} is not running (state: ${rec.state}): only a running VM is suspended`, rec.state === 'suspended' ? `resume it: goshipctl vm start ${name}` : `start it: goshipctl vm start ${name}`);
      }
      rec.op = this.op('suspend');
      return structuredClone(rec);
    });
    try {
      const shape = argvShape(vm.argv ?? [], { vmDir: vm.paths.dir, runDir: layout.vmRunDir(vm.id), name: vm.name, id: vm.id });
      const monitor = await this.monitor(vm.id);
      try {
        const r = await monitor.suspend({ argvShape: shape, maxBytes: (await this.resolve(vm)).memory.bytes + DEVICE_STATE_ALLOWANCE });
        trace(`vm ${name}: state saved, ${r.saved.bytes} bytes in ${Math.round(r.ms)} ms; QEMU ended by ${r.stop.endedBy}`);
      } catch (err) {
        if (err instanceof AgentRemoteError && err.remoteCode === 'EVMSTATE') throw new VmStateError(`VM ${name}: ${err.remoteMessage}`, { cause: err });
        throw err;
      } finally {
        await monitor.close();
      }
    } finally {
      await this.clearOp(vm.id);
    }
    const done = await store.update((draft) => {
      const rec = requireRecord(draft, 'vm', vm.id);
      if (rec.state === 'suspended' && rec.saved) rec.end = { at: rec.end?.at ?? this.ctx.now(), kind: 'stopped', summary: `suspended: its memory and devices are saved (${Math.round(rec.saved.bytes / 1048576)} MiB)` };
      return structuredClone(rec);
    });
    if (!done.saved) throw new VmStateError(`VM ${name}: its saved state is no longer recorded after its suspend (state ${done.state})`);
    return { ...done, saved: done.saved };
  }

  async list(): Promise<Vm[]> {
    const state = await this.ctx.store.read();
    return Object.values(state.vms).sort((a, b) => a.name.localeCompare(b.name));
  }

  async get(name: string): Promise<Vm> {
    return requireRecord(await this.ctx.store.read(), 'vm', name);
  }

  /** Creates the record, the overlay and the seed. The VM is `defined`, not started. */
  async create(opts: CreateVmOptions): Promise<Vm> {
    const { layout, store } = this.ctx;
    const spec: Record<string, unknown> = { ...opts.spec };
    // A relative base is the caller's (qemu-img would resolve it against the overlay's directory).
    if (opts.base) opts = { ...opts, base: { ...opts.base, path: resolve(opts.base.path) } };
    const id = (spec.id as string | undefined) ?? opts.spec.name;
    const paths = vmPaths(layout, id, { overlay: opts.base !== undefined, seed: opts.seed !== undefined });
    if (opts.base) {
      spec.disks = [{ path: paths.overlay!, format: 'qcow2' }, ...((spec.disks as unknown[] | undefined) ?? [])];
      if (spec.boot === undefined && opts.base.kernel) {
        spec.boot = {
          kernel: opts.base.kernel,
          ...(opts.base.initrd ? { initrd: opts.base.initrd } : {}),
          ...(opts.base.cmdline ? { cmdline: opts.base.cmdline } : {}),
        };
      }
    }
    if (opts.seed) spec.seed = paths.seed!;
    spec.machine = await this.pinnedMachine(spec.machine);
    // Validate everything before anything is written: the spec, and that it names none of GoShip's own files.
    const config = await this.resolve({ config: spec }, [paths.overlay, paths.seed].filter((p): p is string => p !== undefined));
    await checkSpecPaths(layout, paths.dir, config);
    // As root the VM gets an identity of its own now, freed when it is destroyed.
    const identity = this.ctx.root ? await allocateIdentity({ home: layout.home, vm: id, vmDir: paths.dir }) : undefined;

    const vm: Vm = {
      id,
      name: opts.spec.name,
      node: LOCAL_NODE,
      createdAt: this.ctx.now(),
      state: 'defined',
      paths,
      config: spec,
      op: this.op('create'),
      ...(opts.project ? { project: opts.project } : {}),
      ...(opts.base?.name ? { image: opts.base.name } : {}),
      ...(identity ? { jail: { uid: identity.uid, gid: identity.gid } } : {}),
    };
    trace(`vm ${vm.name}: spec valid`);
    const release = async (): Promise<void> => {
      if (identity) await releaseIdentity(identity.uid, { home: layout.home, vm: id });
    };
    await store.update((draft) => {
      assertNameFree(draft, 'vm', vm.name);
      assertNameFree(draft, 'vm', vm.id);
      // Checked under the lock: `image remove` decides under it too (one of the two sees the other).
      if (opts.base && !existsSync(opts.base.path)) {
        throw new RuntimeError('EIMAGE_MISSING', `the base ${opts.base.name ? `of image ${opts.base.name} ` : ''}is gone: ${opts.base.path}`, {
          hint: 'goshipctl image list shows the images',
        });
      }
      draft.vms[vm.id] = vm;
    }).catch(async (err: unknown) => {
      await release();
      throw err;
    });
    let base: Vm['base'];
    try {
      await mkdir(paths.dir, { recursive: true, mode: 0o700 });
      // Independent: the overlay (qemu-img) and the seed (xorriso) are made at once.
      const [chain] = await Promise.all([
        opts.base ? createOverlay({ base: opts.base.path, path: paths.overlay!, ...(opts.diskBytes ? { sizeBytes: opts.diskBytes } : {}) }) : undefined,
        opts.seed ? buildSeed(opts.seed, paths.seed!) : undefined,
      ]);
      // The one backing file the overlay may ever name: recorded by GoShip, never read back from the overlay.
      if (opts.base && chain?.[1]) base = { path: opts.base.path, format: chain[1].format, ...(opts.base.backing ? { backing: opts.base.backing } : {}) };
      trace(`vm ${vm.name}: overlay and seed made`);
    } catch (err) {
      await rm(paths.dir, { recursive: true, force: true });
      await store.update((draft) => {
        delete draft.vms[vm.id];
      });
      await release();
      throw err;
    }
    return store.update((draft) => {
      const rec = requireRecord(draft, 'vm', vm.id);
      delete rec.op;
      if (base) rec.base = base;
      return rec;
    });
  }

  /**
   * Starts the VM: builds the argv, starts its monitor (which spawns QEMU
   * paused, connects QMP, the console and the agent channel, sends `cont` and
   * records `running`); with waitAgent, waits for the agent (`ready`).
   */
  async start(name: string, opts: StartVmOptions = {}): Promise<Vm> {
    const { layout, store } = this.ctx;
    await this.reconcile();
    trace(`vm ${name}: reconciled`);
    const vm = await store.update((draft) => {
      const rec = requireRecord(draft, 'vm', name);
      if (rec.op) throw busyError(`VM ${name}`, rec.op);
      if (LIVE_STATES.has(rec.state)) {
        throw stateError(`VM ${name} is already running (pid ${rec.pid ?? '?'})`, `stop it first: goshipctl vm stop ${name}`);
      }
      rec.state = 'starting';
      rec.op = this.op('start');
      const was = structuredClone(rec);
      if (opts.discardSaved || opts.loadvm) delete rec.saved;
      return was;
    });
    trace(`vm ${name}: recorded starting`);
    if ((opts.discardSaved || opts.loadvm) && vm.saved) {
      await rm(vm.saved.file, { force: true });
      delete vm.saved;
    }
    // A suspended VM starts on its saved state, once: its monitor removes it before the guest runs (the disk moves on from there).
    const restore = opts.restore ?? (vm.saved ? { state: vm.saved.file, bytes: vm.saved.bytes, argvShape: vm.saved.argvShape, consume: true } : undefined);
    try {
      // A VM recorded before machine types were pinned gets its type now, and keeps it.
      const machine = await this.pinnedMachine(vm.config.machine);
      if (machine !== vm.config.machine) {
        vm.config = { ...vm.config, machine };
        await store.update((draft) => {
          const rec = findRecord(draft, 'vm', vm.id);
          if (rec) rec.config = { ...rec.config, machine };
        });
      }
      const config = await this.resolve(vm);
      const argv = buildArgv(config, this.ctx.qemuBinary);
      trace(`vm ${name}: argv built`);
      if (restore) {
        const shape = argvShape(argv, { vmDir: vm.paths.dir, runDir: layout.vmRunDir(vm.id), name: vm.name, id: vm.id });
        const at = shape.findIndex((a, i) => a !== restore.argvShape[i]);
        if (at >= 0 || shape.length !== restore.argvShape.length) {
          const i = at >= 0 ? at : Math.min(shape.length, restore.argvShape.length);
          throw new VmStateError(`VM ${name}: the saved state is of a VM with another argv (word ${i}: ${JSON.stringify(restore.argvShape[i] ?? '(none)')}, this VM: ${JSON.stringify(shape[i] ?? '(none)')})`);
        }
      }
      const identity = await this.identity(vm);
      const { exec, jail } = await prepareJail({ layout, vm, config, argv, ...(identity ? { identity } : {}) });
      vm.jail = jail;
      await store.update((draft) => {
        const rec = findRecord(draft, 'vm', vm.id);
        if (rec) rec.jail = jail;
      });
      trace(`vm ${name}: jail prepared`);
      const launch: Launch = {
        argv,
        exec,
        restart: config.restart,
        console: config.console,
        jail: { ...(jail.uid !== undefined ? { uid: jail.uid } : {}), ...(jail.cgroup ? { cgroup: { version: jail.cgroup.version, vmDirs: jail.cgroup.vmDirs, memoryBytes: jail.cgroup.memoryBytes } } : {}) },
        ...(restore
          ? { restore: { state: restore.state, bytes: restore.bytes, ...('consume' in restore ? { consume: true } : {}), ...('ram' in restore && restore.ram ? { ram: restore.ram } : {}) } }
          : {}),
        ...(opts.sharedRam ? { sharedRam: { path: await sharedRamFile(vm, config.memory.bytes, identity), bytes: config.memory.bytes } } : {}),
        ...(opts.loadvm ? { loadvm: opts.loadvm } : {}),
        ...(config.filesystems.length > 0 ? { filesystems: await filesystemLaunch(config, identity) } : {}),
      };
      await writeLaunch(vm.paths.dir, launch);
      trace(`vm ${name}: launch written`);
      const report = await startMonitor({
        layout,
        vm: { ...vm, argv },
        launch,
        // Before the monitor runs (QEMU is paused): a goshipctl killed from here on leaves a record that knows both.
        onForked: async ({ qemu, monitor }) => {
          await store.update((draft) => {
            const rec = findRecord(draft, 'vm', vm.id);
            if (!rec || rec.state !== 'starting' || rec.pid !== undefined) return;
            rec.pid = qemu;
            rec.monitor = { pid: monitor, startedAt: this.ctx.now() };
          });
          trace(`vm ${name}: QEMU forked (pid ${qemu}), recorded with its monitor (pid ${monitor})`);
        },
      });
      trace(`vm ${name}: monitor ${report.pid}, QEMU running (pid ${report.qemuPid})`);
      // The monitor records this as well; the caller sees it as soon as start returns.
      await store.update((draft) => {
        const rec = findRecord(draft, 'vm', vm.id);
        if (!rec) return;
        if (rec.state === 'starting') {
          rec.state = 'running';
          delete rec.agent;
        }
        rec.pid = report.qemuPid;
        rec.argv = argv;
        rec.startedAt = report.startedAt ?? this.ctx.now();
        rec.monitor = { pid: report.pid, startedAt: report.monitorStartedAt ?? this.ctx.now() };
        delete rec.end;
        delete rec.note;
        delete rec.stoppedAt;
        if (!opts.waitAgent && rec.op?.pid === process.pid) delete rec.op;
      });
      trace(`vm ${name}: recorded running`);
    } catch (err) {
      await store.update((draft) => {
        const rec = findRecord(draft, 'vm', vm.id);
        if (!rec) return;
        // A VM whose saved state could not be restored keeps it: nothing of it ran.
        rec.state = rec.saved ? 'suspended' : 'stopped';
        rec.end = { at: this.ctx.now(), kind: 'crashed', summary: `${rec.saved ? 'resume' : 'start'} failed: ${err instanceof Error ? err.message : String(err)}` };
        delete rec.op;
        delete rec.pid;
        delete rec.monitor;
      });
      throw err;
    }
    if (!opts.waitAgent) return this.get(vm.id);
    try {
      return await this.waitReady(vm.id, opts);
    } finally {
      await this.clearOp(vm.id);
    }
  }

  /** The VM's identity when GoShip runs as root: the one it was created with, or (a VM created before the jail) a new one, recorded. */
  private async identity(vm: Vm): Promise<Identity | undefined> {
    if (!this.ctx.root) return undefined;
    if (vm.jail?.uid !== undefined && vm.jail.gid !== undefined) return { uid: vm.jail.uid, gid: vm.jail.gid };
    const identity = await allocateIdentity({ home: this.ctx.layout.home, vm: vm.id, vmDir: vm.paths.dir });
    vm.jail = { ...vm.jail, ...identity };
    await this.ctx.store.update((draft) => {
      const rec = findRecord(draft, 'vm', vm.id);
      if (rec) rec.jail = { ...rec.jail, ...identity };
    });
    return identity;
  }

  private async clearOp(id: string): Promise<void> {
    await this.ctx.store.update((draft) => {
      const rec = findRecord(draft, 'vm', id);
      if (rec?.op?.pid === process.pid) delete rec.op;
    });
  }

  /** Waits (through the VM's monitor) for the agent's hello and records `ready`. */
  async waitReady(name: string, opts: StartVmOptions = {}): Promise<Vm> {
    const vm = await this.get(name);
    const timeoutMs = opts.agentTimeoutMs ?? 120_000;
    const started = Date.now();
    opts.onAgentProgress?.({ phase: 'syncing', attempt: 1, elapsedMs: 0 });
    const monitor = await this.monitor(name);
    let hello: { agent: string; hostname: string; bootId: string };
    try {
      hello = await monitor.waitAgent(timeoutMs);
    } catch (err) {
      const why = err instanceof Error ? err.message : String(err);
      if ((err as { code?: string }).code === 'EAGENT_RUNTIME') {
        throw new RuntimeError('EAGENT_RUNTIME', `VM ${name}: ${why}`, { hint: AGENT_RUNTIME_HINT, cause: err });
      }
      const alive = (await livePid(await this.get(name))) !== undefined;
      throw new RuntimeError(
        'EAGENT_TIMEOUT',
        alive ? `VM ${name} is running but its agent did not answer within ${Math.round(timeoutMs / 1000)} s: ${why}` : `VM ${name} stopped before its agent answered: ${why}`,
        { hint: `read ${vm.paths.consoleLog} (guest console) and ${vm.paths.qemuLog}`, cause: err },
      );
    } finally {
      await monitor.close();
    }
    trace(`vm ${name}: agent hello`);
    opts.onAgentProgress?.({ phase: 'ready', attempt: 1, elapsedMs: Date.now() - started, hello: { ...hello, protocol: monitor.agent.hello.protocol, limits: monitor.agent.hello.limits } });
    // The monitor records it too; writing it here means the caller sees it as soon as this returns.
    return this.ctx.store.update((draft) => {
      const rec = requireRecord(draft, 'vm', name);
      if (rec.state === 'running' || rec.state === 'starting') rec.state = 'ready';
      rec.agent = { version: hello.agent, protocol: monitor.agent.hello.protocol, hostname: hello.hostname, bootId: hello.bootId, readyAt: rec.agent?.readyAt ?? this.ctx.now() };
      return rec;
    });
  }

  /** Stops a running VM: its monitor runs agent shutdown → ACPI → quit → SIGTERM → SIGKILL and records the end. */
  async stop(name: string, opts: StopVmOptions = {}): Promise<StopVmResult> {
    const { store } = this.ctx;
    await this.reconcile();
    const before = await store.update((draft) => {
      const rec = requireRecord(draft, 'vm', name);
      if (rec.op) throw busyError(`VM ${name}`, rec.op);
      if (!LIVE_STATES.has(rec.state)) {
        throw stateError(`VM ${name} is not running (state: ${rec.state})`, `start it: goshipctl vm start ${name}`);
      }
      const was = rec.state;
      rec.state = 'stopping';
      rec.op = this.op('stop');
      return { id: rec.id, was };
    });
    let result: EscalationResult;
    try {
      const monitor = await this.monitor(before.id);
      try {
        result = await monitor.stop(opts);
      } finally {
        await monitor.close();
      }
    } catch (err) {
      await store.update((draft) => {
        const rec = findRecord(draft, 'vm', before.id);
        if (rec?.op?.pid !== process.pid) return;
        if (rec.state === 'stopping') rec.state = before.was;
        delete rec.op;
      });
      throw err;
    }
    await this.clearOp(before.id);
    return { endedBy: result.endedBy, attempts: result.attempts, vm: await this.get(before.id) };
  }

  /**
   * Removes the VM: its process (with force), overlay, seed, logs, sockets and
   * record. A project's VM goes with its project (`project delete`), unless
   * the project itself asks (`ofProject`).
   */
  async destroy(name: string, opts: { force?: boolean; ofProject?: string } = {}): Promise<void> {
    const { store, layout } = this.ctx;
    await this.reconcile();
    const vm = await store.update((draft) => {
      const rec = requireRecord(draft, 'vm', name);
      if (rec.project !== undefined && rec.project !== opts.ofProject) {
        throw stateError(`VM ${name} belongs to project ${rec.project}`, `delete the project instead: goshipctl project delete ${rec.project}`);
      }
      if (rec.op && !opts.force) throw busyError(`VM ${name}`, rec.op, 'wait for it, or use --force');
      if (LIVE_STATES.has(rec.state) && !opts.force) {
        throw stateError(`VM ${name} is running`, `stop it first (goshipctl vm stop ${name}) or destroy it with --force`);
      }
      return structuredClone(rec);
    });
    if ((await livePid(vm)) !== undefined || (await monitorAlive(vm, layout.home))) await this.stopForDestroy(vm);
    // Nothing of the VM's identity runs any more when its trees go (src/jail/files.ts); then its cgroup and its id.
    const identity = vm.jail?.uid === undefined ? undefined : { uid: vm.jail.uid };
    await removeVmTree([layout.vmRunDir(vm.id), vm.paths.dir], identity);
    if (vm.jail?.cgroup) await removeCgroup(vm.jail.cgroup.vmDirs).catch((err: unknown) => trace(`vm ${vm.name}: removing its cgroup: ${(err as Error).message}`));
    await store.update((draft) => {
      delete draft.vms[vm.id];
    });
    if (identity) await releaseIdentity(identity.uid, { home: layout.home, vm: vm.id });
  }

  /**
   * Ends what runs of a VM that is being destroyed: through its monitor, or,
   * when the monitor no longer answers because it is ending (its VM stopped a
   * moment ago: a destroy that another, killed, destroy began), by waiting
   * for it to go and killing a QEMU still there by its marker.
   */
  private async stopForDestroy(vm: Vm): Promise<void> {
    let monitor: MonitorClient;
    try {
      monitor = await this.monitor(vm.id);
    } catch (err) {
      trace(`vm ${vm.name}: its monitor does not answer (${(err as Error).message}); waiting for it to end`);
      const deadline = Date.now() + 15_000;
      while ((await monitorAlive(await this.get(vm.id), this.ctx.layout.home)) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
      const rec = await this.get(vm.id);
      const q = await livePid(rec);
      if (q !== undefined) {
        process.kill(q, 'SIGKILL');
        await waitGone(q, processMarker(vm.id), 10_000);
      }
      if (await monitorAlive(rec, this.ctx.layout.home)) throw err;
      return;
    }
    try {
      await monitor.stop({ force: true });
    } finally {
      await monitor.close();
    }
  }

  /** The VM's first disk's backing chain (overlay first, base last), from `qemu-img info`. */
  async diskChain(name: string): Promise<ImageLayer[] | undefined> {
    const vm = await this.get(name);
    if (!vm.paths.overlay) return undefined;
    // qemu-img, as root, opens what the overlay names: only once the jail has checked it names what GoShip made.
    await checkChain(this.ctx.layout, vm);
    return imageChain(vm.paths.overlay);
  }

  /**
   * A client of the VM's monitor. A running QEMU whose monitor is gone (killed)
   * gets a new monitor that adopts it first. The caller closes the client.
   */
  async monitor(name: string, timeoutMs = 10_000): Promise<MonitorClient> {
    let vm = await this.get(name);
    // A run directory another user made is never trusted to hold the monitor's socket.
    await privateRunDir(this.ctx.layout.run);
    if (!LIVE_STATES.has(vm.state) && (await livePid(vm)) === undefined) {
      throw stateError(`VM ${name} is not running (state: ${vm.state})`, `start it: goshipctl vm start ${name}`);
    }
    // A monitor that has not recorded itself yet (its start was moments ago) already answers on its socket.
    if (!(await monitorAlive(vm, this.ctx.layout.home)) && !(await answering(vm.paths.monitorSocket))) {
      if ((await livePid(vm)) === undefined) {
        // Its monitor may be finishing the record right now: look again once.
        await this.reconcile();
        vm = await this.get(name);
        throw stateError(`VM ${name} is not running (state: ${vm.state})`, `start it: goshipctl vm start ${name}`);
      }
      trace(`vm ${name}: no monitor; adopting its QEMU`);
      await startMonitor({ layout: this.ctx.layout, vm, adopt: true }).catch(async (err: unknown) => {
        // Another goshipctl adopted it at the same moment: its monitor serves us too.
        if (!(await monitorAlive(await this.get(name), this.ctx.layout.home))) throw err;
      });
    }
    try {
      return await MonitorClient.connect(vm.paths.monitorSocket, timeoutMs);
    } catch (err) {
      throw new RuntimeError('EMONITOR', `the monitor of VM ${name} does not answer on ${vm.paths.monitorSocket}: ${(err as Error).message}`, {
        hint: `read ${vm.paths.monitorLog}`,
        cause: err,
      });
    }
  }

  /** Live QMP status of a running VM (through its monitor). */
  async qmpStatus(name: string): Promise<{ status: string; running: boolean } | undefined> {
    const vm = await this.get(name);
    if (!LIVE_STATES.has(vm.state)) return undefined;
    const monitor = await this.monitor(name);
    try {
      const s = (await monitor.qmp('query-status')) as { status: string; running: boolean };
      return { status: s.status, running: s.running };
    } finally {
      await monitor.close();
    }
  }

  /** Sends one raw QMP command (`{"execute": …, "arguments": …}`) through the VM's monitor and returns QEMU's answer. */
  async qmpRaw(name: string, command: unknown): Promise<unknown> {
    if (typeof command !== 'object' || command === null || typeof (command as { execute?: unknown }).execute !== 'string') {
      throw new RuntimeError('EINVALID', 'QMP command: expected a JSON object like {"execute": "query-status"}');
    }
    const c = command as { execute: string; arguments?: Record<string, unknown> };
    const monitor = await this.monitor(name);
    try {
      return await monitor.qmp(c.execute, c.arguments);
    } finally {
      await monitor.close();
    }
  }

  /** A connected agent client for a running VM, through its monitor. The caller closes it. */
  /**
   * A VM on another node whose monitor socket is forwarded to `socket` here
   * (src/cli/route.ts): its next `agent()` is that monitor's session. False
   * when the monitor does not answer there (the caller routes the usual way).
   */
  async viaNode(name: string, socket: string): Promise<boolean> {
    try {
      // One attempt: a stale forward (no shared connection) refuses, a missing monitor there closes at once; retrying would only delay the usual route.
      this.remote.set(name, await MonitorClient.connect(socket, 2000, 1));
      trace(`vm ${name}: through the node's monitor socket (${socket})`);
      return true;
    } catch {
      return false;
    }
  }

  private readonly remote = new Map<string, MonitorClient>();

  /**
   * A session with the VM's guest agent, through its monitor. When the agent
   * is not ready (stopped in the guest, still booting) this waits for it at
   * most `agentWaitMs` (`onWaiting` is told, for a TTY's progress line), then
   * fails with when the agent was last ready and what to look at: a command
   * never hangs on an agent that is down.
   */
  async agent(name: string, timeoutMs = 10_000, opts: AgentWaitOptions = {}): Promise<AgentClient> {
    const remote = this.remote.get(name);
    if (remote) {
      this.remote.delete(name);
      return remote.agent;
    }
    const vm = await this.get(name);
    if ((vm.config as VmSpec).agent === false) throw new RuntimeError('ENOTSUP', `VM ${name} has no agent port (agent: false in its spec)`);
    const monitor = await this.monitor(name, timeoutMs);
    if (monitor.agent.hello.ready === false) {
      const waitMs = opts.agentWaitMs ?? DEFAULT_AGENT_WAIT_MS;
      const done = opts.onWaiting?.();
      try {
        await monitor.waitAgent(waitMs);
      } catch (err) {
        await monitor.close();
        const code = (err as { code?: string }).code;
        if (code === 'EAGENT_RUNTIME') throw new RuntimeError('EAGENT_RUNTIME', `VM ${name}: ${(err as Error).message}`, { hint: AGENT_RUNTIME_HINT, cause: err });
        const rec = await this.get(name);
        const seen = rec.agent?.readyAt ? `it was last ready at ${rec.agent.readyAt}` : 'it has not been ready since the VM started';
        throw new RuntimeError('EAGENT_TIMEOUT', `VM ${name}: its guest agent did not answer within ${Math.round(waitMs / 1000)} s (${seen}): ${(err as Error).message}`, {
          hint: `read the guest's console (goshipctl vm console ${name}); restart the agent in the guest (systemctl restart goship-agent) or the VM (goshipctl vm stop ${name} && goshipctl vm start ${name}); --agent-timeout S waits longer`,
          cause: err,
        });
      } finally {
        done?.();
      }
    }
    return monitor.agent;
  }

  /** The forwards QEMU has now, through the monitor (undefined when the VM is not running). */
  async livePorts(name: string): Promise<Forward[] | undefined> {
    const vm = await this.get(name);
    if (!LIVE_STATES.has(vm.state)) return undefined;
    const monitor = await this.monitor(name);
    try {
      return await monitor.ports();
    } finally {
      await monitor.close();
    }
  }
}

export type { State };
