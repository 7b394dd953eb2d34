/**
 * VM lifecycle: create, start, stop, destroy, reconcile. The store holds the
 * records; QEMU, QMP, the agent channel and the files are driven from here.
 *
 * Crash safety: before its first side effect an operation writes `op` (its
 * kind and this process's PID) into the record, and clears it after the last.
 * A goshipctl killed in between leaves `op` behind; reconcile sees that the
 * PID is gone and repairs the record (see docs/architecture.md).
 */
import { existsSync } from 'node:fs';
import { mkdir, readFile, rm } from 'node:fs/promises';
import { resolve } from 'node:path';
import { RuntimeError, busyError, stateError } from './errors.ts';
import type { Layout } from '../layout.ts';
import { buildSeed, type SeedOptions } from '../cloudinit/index.ts';
import { DEFAULT_MACHINE, MACHINES, buildArgv, createOverlay, imageChain, resolveSpec, type HostFacts, type ImageLayer, type VmConfig, type VmSpec } from '../qemu/index.ts';
import { isOurProcess, logTail, processMarker } from '../qemu/index.ts';
import { pidAlive } from '../proc.ts';
import { AgentClient, type ConnectProgress } from '../serial/index.ts';
import { type PendingOp, type State, type Store, type Vm, findRecord, requireRecord, assertNameFree, LOCAL_NODE } from '../store/index.ts';
import type { EscalationResult } from './escalate.ts';
import { bootMachine, stopMachine, withQmp, type StopTimeouts } from './machine.ts';
import { machinePaths, vmPaths } from './paths.ts';
import { trace } from './trace.ts';

/** States in which the VM's QEMU process should exist. */
export const LIVE_STATES: ReadonlySet<Vm['state']> = new Set(['starting', 'running', 'ready', 'stopping']);

export interface VmContext {
  layout: Layout;
  store: Store;
  host: () => Promise<HostFacts>;
  now: () => string;
  qemuBinary: string;
  /** This QEMU's machine-type aliases (`q35` → `pc-q35-7.2`), asked once. */
  machineAliases: () => Promise<Map<string, string>>;
}

export interface CreateVmOptions {
  /** The VM spec. For an image-backed VM, `disks` and `boot` come from the image unless given. */
  spec: VmSpec & { name: string };
  /** Base image: the VM gets a qcow2 overlay on it as its first disk. */
  base?: { path: string; kernel?: string; initrd?: string; cmdline?: string; name?: string };
  /** Overlay virtual size in bytes (at least the base's). */
  diskBytes?: number;
  /** cloud-init NoCloud seed, written to the VM's seed.iso. */
  seed?: SeedOptions;
  project?: string;
}

export interface StartVmOptions {
  /** Wait for the guest agent's hello before returning (`ready`). */
  waitAgent?: boolean;
  agentTimeoutMs?: number;
  onAgentProgress?: (p: ConnectProgress) => void;
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

/**
 * Pure: did the guest power itself off? Linux prints `reboot: Power down` on
 * its console as the very last thing before QEMU exits; a QEMU that was killed
 * or crashed leaves no such line.
 */
export function guestPoweredOff(consoleTail: string): boolean {
  return /reboot: Power down\s*$/.test(consoleTail.trimEnd());
}

/** An op whose goshipctl process is gone (killed, crashed). */
export function opAbandoned(op: PendingOp | undefined): boolean {
  return op !== undefined && op.pid !== process.pid && !pidAlive(op.pid);
}

async function readPidfile(path: string): Promise<number | undefined> {
  try {
    const n = Number((await readFile(path, 'utf8')).trim());
    return Number.isInteger(n) && n > 0 ? n : undefined;
  } catch {
    return undefined;
  }
}

/** The PID of the VM's QEMU if it is alive and really ours (record first, then QEMU's pidfile). */
export async function livePid(vm: Vm): Promise<number | undefined> {
  const marker = processMarker(vm.id);
  if (vm.pid !== undefined && (await isOurProcess(vm.pid, marker))) return vm.pid;
  const fromFile = await readPidfile(vm.paths.pidfile);
  if (fromFile !== undefined && fromFile !== vm.pid && (await isOurProcess(fromFile, marker))) return fromFile;
  return undefined;
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
    const { qmpSocket, agentSocket, consoleLog, pidfile } = vmPaths(this.ctx.layout, id);
    return resolveSpec(spec, {
      host,
      paths: { qmpSocket, agentSocket, consoleLog, pidfile },
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

  /** The argv a spec becomes, without creating anything (`goshipctl vm args`). */
  async argvFor(spec: unknown): Promise<string[]> {
    return buildArgv(await this.resolve({ config: spec as Record<string, unknown> }), this.ctx.qemuBinary);
  }

  /**
   * Compares every record with /proc. A VM recorded as live whose process is
   * gone (or whose PID now belongs to another process) becomes `crashed`, with
   * the end of its log; a QEMU that runs although the record says otherwise
   * (a goshipctl killed between spawn and record) is adopted; ops of dead
   * goshipctl processes are cleared.
   */
  async reconcile(): Promise<ReconcileChange[]> {
    const snapshot = await this.ctx.store.read();
    const facts = new Map<string, number | undefined>();
    let suspicious = false;
    for (const vm of Object.values(snapshot.vms)) {
      const pid = await livePid(vm);
      facts.set(vm.id, pid);
      if ((pid === undefined && LIVE_STATES.has(vm.state)) || (pid !== undefined && !LIVE_STATES.has(vm.state)) || opAbandoned(vm.op)) {
        suspicious = true;
      }
    }
    if (!suspicious) return [];
    const tails = new Map<string, string>();
    const poweredOff = new Set<string>();
    for (const vm of Object.values(snapshot.vms)) {
      if (facts.get(vm.id) === undefined && LIVE_STATES.has(vm.state)) {
        tails.set(vm.id, await logTail(vm.paths.qemuLog));
        if (guestPoweredOff(await logTail(vm.paths.consoleLog, 5))) poweredOff.add(vm.id);
      }
    }
    return this.ctx.store.update((draft) => {
      const changes: ReconcileChange[] = [];
      for (const vm of Object.values(draft.vms)) {
        if (!facts.has(vm.id)) continue; // created since the snapshot
        if (vm.op && !opAbandoned(vm.op)) continue; // another goshipctl is working on it right now
        const pid = facts.get(vm.id);
        const from = vm.state;
        const interrupted = vm.op;
        delete vm.op;
        if (pid === undefined && LIVE_STATES.has(vm.state)) {
          const stopping = from === 'stopping';
          const off = poweredOff.has(vm.id);
          vm.state = stopping || off ? 'stopped' : 'crashed';
          vm.stoppedAt = this.ctx.now();
          delete vm.pid;
          if (stopping) vm.stopReason = 'stopped (the goshipctl that stopped it was interrupted)';
          else if (off) vm.stopReason = 'the guest powered itself off';
          else vm.crash = { at: this.ctx.now(), logTail: tails.get(vm.id) ?? '' };
          const reason = stopping ? 'process gone after an interrupted stop' : off ? 'guest powered off' : 'process gone';
          changes.push({ vm: vm.id, from, to: vm.state, reason });
        } else if (pid !== undefined && (!LIVE_STATES.has(vm.state) || (interrupted && vm.state !== 'running' && vm.state !== 'ready'))) {
          // A QEMU runs that no finished operation recorded: a goshipctl was killed between spawn and record.
          vm.state = 'running';
          vm.pid = pid;
          vm.startedAt ??= this.ctx.now();
          changes.push({ vm: vm.id, from, to: 'running', reason: `adopted running QEMU (pid ${pid}) left by an interrupted ${interrupted?.kind ?? 'start'}` });
        } else if (pid !== undefined && vm.pid !== pid) {
          vm.pid = pid;
        } else if (interrupted) {
          changes.push({ vm: vm.id, from, to: vm.state, reason: `cleared an interrupted ${interrupted.kind} (goshipctl pid ${interrupted.pid} is gone)` });
        }
        if (interrupted?.kind === 'create') {
          vm.stopReason = 'create was interrupted: its files may be incomplete; destroy it and create it again';
        }
      }
      return changes;
    });
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
    // Validate everything before anything is written.
    await this.resolve({ config: spec }, [paths.overlay, paths.seed].filter((p): p is string => p !== undefined));

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
    };
    trace(`vm ${vm.name}: spec valid`);
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
    });
    try {
      await mkdir(paths.dir, { recursive: true, mode: 0o700 });
      // Independent: the overlay (qemu-img) and the seed (xorriso) are made at once.
      await Promise.all([
        opts.base ? createOverlay({ base: opts.base.path, path: paths.overlay!, ...(opts.diskBytes ? { sizeBytes: opts.diskBytes } : {}) }) : undefined,
        opts.seed ? buildSeed(opts.seed, paths.seed!) : undefined,
      ]);
      trace(`vm ${vm.name}: overlay and seed made`);
    } catch (err) {
      await rm(paths.dir, { recursive: true, force: true });
      await store.update((draft) => {
        delete draft.vms[vm.id];
      });
      throw err;
    }
    return store.update((draft) => {
      const rec = requireRecord(draft, 'vm', vm.id);
      delete rec.op;
      return rec;
    });
  }

  /** Spawns QEMU, sends `cont`, records `running`; with waitAgent, waits for the agent (`ready`). */
  async start(name: string, opts: StartVmOptions = {}): Promise<Vm> {
    const { layout, store } = this.ctx;
    await this.reconcile();
    const vm = await store.update((draft) => {
      const rec = requireRecord(draft, 'vm', name);
      if (rec.op) throw busyError(`VM ${name}`, rec.op);
      if (LIVE_STATES.has(rec.state)) {
        throw stateError(`VM ${name} is already running (pid ${rec.pid ?? '?'})`, `stop it first: goshipctl vm stop ${name}`);
      }
      rec.state = 'starting';
      rec.op = this.op('start');
      return structuredClone(rec);
    });
    // A VM recorded before machine types were pinned gets its type now, and keeps it.
    const machine = await this.pinnedMachine(vm.config.machine);
    if (machine !== vm.config.machine) {
      vm.config = { ...vm.config, machine };
      await store.update((draft) => {
        const rec = findRecord(draft, 'vm', vm.id);
        if (rec) rec.config = { ...rec.config, machine };
      });
    }
    let argv: string[];
    try {
      argv = buildArgv(await this.resolve(vm), this.ctx.qemuBinary);
      trace(`vm ${name}: argv built`);
      const booted = await bootMachine(vm.id, argv, machinePaths(layout, vm.id, vm.paths));
      trace(`vm ${name}: QEMU running (pid ${booted.pid})`);
      await store.update((draft) => {
        const rec = requireRecord(draft, 'vm', vm.id);
        rec.state = 'running';
        rec.pid = booted.pid;
        rec.argv = argv;
        rec.startedAt = this.ctx.now();
        delete rec.crash;
        delete rec.stopReason;
        delete rec.stoppedAt;
        delete rec.agent;
        if (!opts.waitAgent) delete rec.op;
      });
    } catch (err) {
      await store.update((draft) => {
        const rec = findRecord(draft, 'vm', vm.id);
        if (!rec) return;
        rec.state = 'stopped';
        rec.stopReason = `start failed: ${err instanceof Error ? err.message : String(err)}`;
        delete rec.op;
        delete rec.pid;
      });
      throw err;
    }
    if (!opts.waitAgent) return this.get(vm.id);
    try {
      return await this.waitReady(vm.id, opts);
    } finally {
      await store.update((draft) => {
        const rec = findRecord(draft, 'vm', vm.id);
        if (rec?.op?.pid === process.pid) delete rec.op;
      });
    }
  }

  /** Waits for the agent's hello and records `ready`. */
  async waitReady(name: string, opts: StartVmOptions = {}): Promise<Vm> {
    const vm = await this.get(name);
    const timeoutMs = opts.agentTimeoutMs ?? 120_000;
    let client: AgentClient;
    try {
      client = await AgentClient.connect(vm.paths.agentSocket, {
        timeoutMs,
        ...(opts.onAgentProgress ? { onProgress: opts.onAgentProgress } : {}),
      });
    } catch (err) {
      const alive = (await livePid(vm)) !== undefined;
      const why = err instanceof Error ? err.message : String(err);
      throw new RuntimeError(
        'EAGENT_TIMEOUT',
        alive ? `VM ${name} is running but its agent did not answer within ${Math.round(timeoutMs / 1000)} s: ${why}` : `VM ${name} stopped before its agent answered: ${why}`,
        { hint: `read ${vm.paths.consoleLog} (guest console) and ${vm.paths.qemuLog}`, cause: err },
      );
    }
    const hello = client.hello;
    trace(`vm ${name}: agent hello`);
    await client.close();
    return this.ctx.store.update((draft) => {
      const rec = requireRecord(draft, 'vm', name);
      if (rec.state === 'running') rec.state = 'ready';
      rec.agent = { version: hello.agent, protocol: hello.protocol, hostname: hello.hostname, bootId: hello.bootId, readyAt: this.ctx.now() };
      return rec;
    });
  }

  /** Stops a running VM: agent shutdown → ACPI → quit → SIGTERM → SIGKILL. */
  async stop(name: string, opts: StopVmOptions = {}): Promise<StopVmResult> {
    const { store } = this.ctx;
    await this.reconcile();
    const vm = await store.update((draft) => {
      const rec = requireRecord(draft, 'vm', name);
      if (rec.op) throw busyError(`VM ${name}`, rec.op);
      if (!LIVE_STATES.has(rec.state) || rec.pid === undefined) {
        throw stateError(`VM ${name} is not running (state: ${rec.state})`, `start it: goshipctl vm start ${name}`);
      }
      rec.state = 'stopping';
      rec.op = this.op('stop');
      return structuredClone(rec);
    });
    const config = vm.config as VmSpec;
    const agentShutdown =
      config.agent !== false && vm.agent !== undefined
        ? async () => {
            const client = await AgentClient.connect(vm.paths.agentSocket, { timeoutMs: 3000 });
            try {
              await client.shutdown();
            } finally {
              await client.close();
            }
          }
        : undefined;
    let result: EscalationResult;
    try {
      result = await stopMachine(vm.id, vm.pid!, vm.paths.qmpSocket, {
        ...(opts.force ? { force: true } : {}),
        ...(opts.timeouts ? { timeouts: opts.timeouts } : {}),
        ...(agentShutdown ? { agentShutdown } : {}),
      });
    } catch (err) {
      await store.update((draft) => {
        const rec = findRecord(draft, 'vm', vm.id);
        if (rec) {
          rec.state = 'running';
          delete rec.op;
        }
      });
      throw err;
    }
    await rm(this.ctx.layout.vmRunDir(vm.id), { recursive: true, force: true });
    const updated = await store.update((draft) => {
      const rec = requireRecord(draft, 'vm', vm.id);
      rec.state = 'stopped';
      rec.stoppedAt = this.ctx.now();
      rec.stopReason = result.endedBy === 'already' ? 'the process was already gone' : `stopped by ${result.endedBy}`;
      delete rec.pid;
      delete rec.op;
      return rec;
    });
    return { ...result, vm: updated };
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
    const pid = await livePid(vm);
    if (pid !== undefined) await stopMachine(vm.id, pid, vm.paths.qmpSocket, { force: true });
    await rm(vm.paths.dir, { recursive: true, force: true });
    await rm(layout.vmRunDir(vm.id), { recursive: true, force: true });
    await store.update((draft) => {
      delete draft.vms[vm.id];
    });
  }

  /** The VM's first disk's backing chain (overlay first, base last), from `qemu-img info`. */
  async diskChain(name: string): Promise<ImageLayer[] | undefined> {
    const vm = await this.get(name);
    return vm.paths.overlay ? imageChain(vm.paths.overlay) : undefined;
  }

  /** Live QMP status of a running VM. */
  async qmpStatus(name: string): Promise<{ status: string; running: boolean } | undefined> {
    const vm = await this.get(name);
    if (!LIVE_STATES.has(vm.state)) return undefined;
    return withQmp(vm.paths.qmpSocket, async (q) => {
      const s = await q.queryStatus();
      return { status: s.status, running: s.running };
    });
  }

  /** Sends one raw QMP command (`{"execute": …, "arguments": …}`) and returns QEMU's answer. */
  async qmpRaw(name: string, command: unknown): Promise<unknown> {
    if (typeof command !== 'object' || command === null || typeof (command as { execute?: unknown }).execute !== 'string') {
      throw new RuntimeError('EINVALID', 'QMP command: expected a JSON object like {"execute": "query-status"}');
    }
    const c = command as { execute: string; arguments?: Record<string, unknown> };
    const vm = await this.get(name);
    if (!LIVE_STATES.has(vm.state)) throw stateError(`VM ${name} is not running (state: ${vm.state})`);
    return withQmp(vm.paths.qmpSocket, (q) => q.execute(c.execute, c.arguments));
  }

  /** A connected agent client for a running VM. The caller closes it. */
  async agent(name: string, timeoutMs = 10_000): Promise<AgentClient> {
    const vm = await this.get(name);
    if (!LIVE_STATES.has(vm.state)) throw stateError(`VM ${name} is not running (state: ${vm.state})`, `start it: goshipctl vm start ${name}`);
    if ((vm.config as VmSpec).agent === false) throw new RuntimeError('ENOTSUP', `VM ${name} has no agent port (agent: false in its spec)`);
    return AgentClient.connect(vm.paths.agentSocket, { timeoutMs });
  }
}

export type { State };
