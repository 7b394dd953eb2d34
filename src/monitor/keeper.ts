/**
 * The monitor of one VM (the role of Lima's hostagent and podman's conmon):
 * QEMU's parent, the holder of GoShip's QMP connection and of the one agent
 * session, the writer of console.log, and the server of monitor.sock. It
 * lives exactly as long as its VM and records, from evidence it holds, how
 * the VM ended. No central daemon: one of these per running VM.
 *
 *   start:  QEMU spawned paused (-S, qemu-child.ts) → QMP → console → agent link
 *           → cont → record running (the same for a first start, a reboot, a restart)
 *   serve:  clients on monitor.sock (agent methods relayed, monitor.* answered)
 *   end:    QEMU exits → classify (ending.ts: SHUTDOWN reason, panic, resets, exit
 *           status, GoShip's stop step) → what next (lifecycle.ts: reboot, restart
 *           with backoff, or the end) → record
 *   reboot: QEMU runs with -no-reboot, so a guest reboot ends it (SHUTDOWN
 *           guest-reset): a fresh QEMU starts at once with the same argv and the
 *           live port forwards of the last; clients and the socket stay
 *
 * An adopting monitor (`--adopt`) takes over a QEMU whose monitor died: it
 * cannot wait for QEMU's exit status (QEMU is not its child), so it watches
 * the QMP connection and /proc instead.
 */
import { mkdir, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { ERROR_CODES, GoshipError, type ErrorCode } from '../errors.ts';
import type { Socket } from 'node:net';
import * as v from 'valibot';
import { FILES, type Layout } from '../layout.ts';
import { isOurProcess, logTail, processMarker, ramFileArgs, waitForPath } from '../qemu/index.ts';
import { QmpClient, type QmpEvent, type QmpStatusInfo } from '../qmp/index.ts';
import { OWN_LIMITS, type FlowLimits } from '../protocol/index.ts';
import { AgentUnavailableError, type AgentHello } from '../serial/index.ts';
import { findRecord, requireRecord, type Store, type Vm } from '../store/index.ts';
import { oomKills, removeCgroup, removeVmTree } from '../jail/index.ts';
import { pidAlive, type ExitStatus } from '../proc.ts';
import { holdMemory, restoreState, saveState, type HeldMemory, type StateTransfer, type VmStateError } from '../vmstate/index.ts';
import { AgentLink } from './agent-link.ts';
import { RestartBackoff, ResetWatch } from './backoff.ts';
import { ConsoleLog, pipeConsole } from './console.ts';
import { CRASH_KINDS, classifyEnd, type EndEvidence, type VmEnd } from './ending.ts';
import { escalate, type EscalationResult, type StopStep } from './escalate.ts';
import { QMP_SOCKET_TIMEOUT_MS, prepareQemuRun, spawnQemu, type QemuChild } from './qemu-child.ts';
import { FINAL_PHASES, nextPhase, type Happening, type Phase } from './lifecycle.ts';
import { answering, ReusedReads, connectRetrying } from './sockets.ts';
import { readLaunch, type Launch } from './launch.ts';
import { NETDEV_ID, parseUsernet } from './ports.ts';
import { withDeadline } from './deadline.ts';
import { SocketRelay } from './socket-relay.ts';
import { startVirtiofsd, type FsDaemon } from './virtiofsd.ts';
import {
  ConsoleParamsSchema,
  MONITOR_METHODS,
  PortAddParamsSchema,
  PortRemoveParamsSchema,
  QmpParamsSchema,
  StopParamsSchema,
  SuspendParamsSchema,
  WaitParamsSchema,
  type Forward,
  type MonitorStatus,
  type StopResult,
  type SuspendResult,
} from './protocol.ts';
import { LocalCall, MonitorCallError, MonitorServer, type LocalHandler } from './server.ts';

/** The ACPI power button is pressed again this often while the guest has not gone. */
export const ACPI_REPEAT_MS = 3_000;
export const DEFAULT_STOP_TIMEOUTS = { agentMs: 30_000, acpiMs: 30_000, quitMs: 5_000, termMs: 5_000, killMs: 5_000 };
export type StopTimeouts = typeof DEFAULT_STOP_TIMEOUTS;
/** How often an adopted QEMU (not our child) is looked for in /proc. */
const ADOPTED_POLL_MS = 200;
/** QMP events kept for `monitor.status`. */
const EVENTS_KEPT = 20;

/** dockerd's socket in the guest (Debian's docker.io; socket-activated, so the first connection starts dockerd). */
export const GUEST_DOCKER_SOCKET = '/run/docker.sock';
/** How long a relayed connection waits for an agent that is not ready (a VM still booting). */
const RELAY_AGENT_WAIT_MS = 60_000;

export interface MonitorOptions {
  layout: Layout;
  store: Store;
  id: string;
  /** Take over a QEMU that runs already. */
  adopt: boolean;
  /**
   * Lines to whoever started the monitor: `forked` (QEMU's PID, while it is
   * still paused), then one last line, `running`, `adopted` or `error`.
   */
  report: (message: Record<string, unknown>) => void;
  log: (line: string) => void;
  now?: () => string;
  /** When this monitor process started (ISO); default: now. */
  startedAt?: string;
}

interface Run {
  pid: number;
  /** Our child (a fresh start, a reboot, a restart): its exit status is known. Not so for an adopted QEMU. */
  own: boolean;
  startedAt: number;
  exited: Promise<ExitStatus | undefined>;
  evidence: Omit<EndEvidence, 'at' | 'logTail'>;
}

/**
 * Why a start failed, as the monitor reports it to its starter: GoShip's code
 * (a code outside the registry, a system error's, is EMONITOR, as the starter
 * reads it), the fix, and facts for the report (the exit status, the log).
 */
export class StartError extends GoshipError {
  constructor(
    code: string,
    message: string,
    hint: string | undefined,
    readonly extra: Record<string, unknown> = {},
  ) {
    super(Object.hasOwn(ERROR_CODES, code) ? (code as ErrorCode) : 'EMONITOR', message, hint === undefined ? {} : { hint });
  }
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
/** Milliseconds since this process started, for the log. */
const ms = (): string => (process.uptime() * 1000).toFixed(0);

export class Monitor {
  readonly #o: MonitorOptions;
  readonly #now: () => string;
  readonly #startedAt: string;
  #vm!: Vm;
  #launch!: Launch;
  #run: Run | undefined;
  #qmp: QmpClient | undefined;
  #qmpStatus: QmpStatusInfo | undefined;
  #console: ConsoleLog | undefined;
  #consoleSocket: Socket | undefined;
  #link!: AgentLink;
  #server!: MonitorServer;
  readonly #events: string[] = [];
  readonly #backoff = new RestartBackoff();
  #resets = new ResetWatch();
  #restarts = 0;
  #reboots = 0;
  /** The live port forwards once they differ from the argv's (a port added or removed, an adopted QEMU): a fresh QEMU gets them back. */
  #forwardsWanted: Forward[] | undefined;
  #state: MonitorStatus['state'] = 'starting';
  #stopStep: StopStep['name'] | undefined;
  #stopping: Promise<StopResult> | undefined;
  /** A suspend's save is under way: no second one, and no stop meanwhile. */
  #saving = false;
  /** What a stop asked for (set once one is asked), kept for a QEMU that starts while it waits (a reboot or restart under way). */
  #stopAsked: { force: boolean; timeouts: Partial<StopTimeouts> } | undefined;
  #wakeRestart: (() => void) | undefined;
  #lastEnd: VmEnd | undefined;
  /** The OOM kills counted in the VM's memory cgroup when this monitor last looked: one more at an end means the limit killed QEMU. */
  #oomSeen = 0;
  /** Resolved once the end of the VM is recorded for good (no restart follows): a stop answers then. */
  #final: { promise: Promise<VmEnd>; resolve: (end: VmEnd) => void };

  constructor(opts: MonitorOptions) {
    this.#o = opts;
    this.#now = opts.now ?? (() => new Date().toISOString());
    this.#startedAt = opts.startedAt ?? this.#now();
    let resolve!: (end: VmEnd) => void;
    const promise = new Promise<VmEnd>((r) => (resolve = r));
    this.#final = { promise, resolve };
  }

  #log(line: string): void {
    this.#o.log(line);
  }

  /** Runs the monitor until its VM has ended for good; resolves to the process exit code. */
  async main(): Promise<number> {
    const { store, id } = this.#o;
    this.#vm = requireRecord(await store.read(), 'vm', id);
    this.#launch = await readLaunch(this.#vm.paths.dir);
    this.#oomSeen = await this.#oomKills();
    this.#link = new AgentLink({ socket: this.#vm.paths.agentSocket, log: (l) => this.#log(l), onReady: (h) => void this.#agentReady(h) });
    this.#server = new MonitorServer(this.#vm.paths.monitorSocket, { session: (s) => this.#link.session(s), hello: () => this.#hello() }, this.#handlers());
    let phase: Phase = this.#o.adopt ? { name: 'adopting' } : { name: 'starting', cause: 'first' };
    while (!FINAL_PHASES.has(phase.name)) {
      const happened = await this.#enter(phase);
      phase = nextPhase(phase, happened, { restart: this.#launch.restart, stopRequested: this.#stopAsked !== undefined, at: this.#now() });
    }
    return this.#exit(phase);
  }

  /** Runs one phase's effects; resolves to what happened in it. */
  async #enter(phase: Phase): Promise<Happening> {
    switch (phase.name) {
      case 'starting':
      case 'adopting':
        if (phase.name === 'starting' && phase.cause === 'reboot') {
          this.#reboots++;
          this.#state = 'restarting';
          this.#log(`reboot ${this.#reboots}: ${this.#lastEnd?.summary ?? ''}`);
          await this.#recordReboot();
        }
        try {
          if (phase.name === 'adopting') await this.#adopt();
          else {
            this.#ownsFiles = true;
            await this.#start(phase.cause === 'first' ? this.#launch : {});
            if (phase.cause !== 'first') this.#stopIfAsked();
          }
          return { what: 'started' };
        } catch (err) {
          const e = err instanceof StartError ? err : new StartError((err as { code?: string }).code ?? 'EINTERNAL', (err as Error).message, (err as { hint?: string }).hint);
          const cause = phase.name === 'adopting' ? 'first' : phase.cause;
          this.#log(`${cause === 'reboot' ? 'start after the reboot failed' : cause === 'restart' ? 'restart failed' : 'start failed'}: ${e.message}`);
          return { what: 'start-failed', failure: { code: e.code, message: e.message, ...(e.hint ? { hint: e.hint } : {}), extra: e.extra } };
        }
      case 'running':
        return { what: 'qemu-ended', end: await this.#awaitEnd() };
      case 'backoff': {
        const uptime = Date.now() - (this.#run?.startedAt ?? Date.now());
        const delay = this.#backoff.delayAfter(uptime);
        this.#restarts++;
        this.#resets = new ResetWatch();
        await this.#recordEnd(phase.end, true);
        this.#log(`restart ${this.#restarts} in ${delay} ms (policy on-crash) after: ${phase.end.summary}`);
        this.#state = 'restarting';
        await new Promise<void>((resolve) => {
          const t = setTimeout(resolve, delay);
          this.#wakeRestart = () => {
            clearTimeout(t);
            resolve();
          };
        });
        this.#wakeRestart = undefined;
        return { what: 'backoff-over' };
      }
      case 'ended':
      case 'failed':
        throw new Error(`monitor lifecycle: ${phase.name} is not entered, it is the exit`);
    }
  }

  /** The one way out: files removed, the end recorded or the failure reported, a waiting stop answered, everything closed. */
  async #exit(phase: Phase): Promise<number> {
    if (phase.name === 'failed') {
      const f = phase.failure;
      // The starter may start the VM again at once: its files go before the answer.
      await this.#removeFiles();
      this.#o.report({ t: 'error', error: { code: f.code, message: f.message, ...(f.hint ? { hint: f.hint } : {}) }, ...f.extra });
      await this.#teardown('start failed');
      return 1;
    }
    if (phase.name !== 'ended') throw new Error(`monitor lifecycle: ${phase.name} is not a final phase`);
    await this.#removeFiles();
    await this.#recordEnd(phase.end, false).catch((err: unknown) => this.#log(`recording the end: ${(err as Error).message}`));
    this.#final.resolve(phase.end);
    // A stop that is waiting answers before the socket closes.
    await this.#stopping?.catch(() => undefined);
    await this.#teardown(`the VM ended: ${phase.end.summary}`);
    return phase.exitCode;
  }

  // ------------------------------------------------------------ start and adopt

  /**
   * Starts a QEMU, paused, and runs it: booting, or on `restore`, the saved
   * state loaded first (a clone's on its template's memory), or on `loadvm`,
   * the disk's snapshot; on `sharedRam`, its RAM in that file.
   */
  async #start({ restore, loadvm, sharedRam }: Pick<Launch, 'restore' | 'loadvm' | 'sharedRam'>): Promise<void> {
    const { paths } = this.#vm;
    const runDir = this.#o.layout.vmRunDir(this.#vm.id);
    await mkdir(runDir, { recursive: true, mode: 0o700 });
    const binary = this.#launch.argv[0];
    // Shared folders: a fresh virtiofsd each, before QEMU (which connects to them); each exits with its QEMU.
    const daemons: FsDaemon[] = [];
    try {
      for (const fs of this.#launch.filesystems ?? []) daemons.push(await startVirtiofsd(fs, join(paths.dir, `virtiofsd-${fs.tag}.log`)));
    } catch (err) {
      for (const d of daemons) d.kill();
      throw new StartError('EVIRTIOFSD', (err as Error).message, `read ${join(paths.dir, 'virtiofsd-TAG.log')}; the folder's owner must be able to read it (and write it, unless it is shared :ro)`);
    }
    // A clone's RAM: its template's memory, a sealed memfd held here while this QEMU lives, its descriptor 3 there.
    let ram: HeldMemory | undefined;
    if (restore?.ram) {
      const r = restore.ram;
      try {
        ram = await holdMemory({ registry: this.#o.layout.memoryRegistry(r.key), file: r.file, bytes: r.bytes, name: `goship-${r.key}`, ...(r.private ? { private: true } : {}) });
      } catch (err) {
        for (const d of daemons) d.kill();
        throw new StartError('EVMSTATE', `the template's memory ${r.file} could not be mapped: ${(err as Error).message}`, undefined);
      }
      this.#log(`template memory ${r.key}: ${ram.from === 'holder' ? 'shared with a running clone' : 'sealed from its file'}${r.private ? ' (private)' : ''}`);
    }
    const ramArgs = ram ? ramFileArgs({ bytes: ram.bytes, memPath: '/proc/self/fd/3', share: false }) : sharedRam ? ramFileArgs({ ...sharedRam, memPath: sharedRam.path, share: true }) : [];
    let q: QemuChild;
    try {
      const then = restore ? ['-incoming', 'defer'] : loadvm ? ['-loadvm', loadvm] : [];
      q = spawnQemu({ exec: [...this.#launch.exec, ...ramArgs, ...then], log: prepareQemuRun(this.#o.layout, this.#vm.id), ...(ram ? { fds: [ram.fd] } : {}) });
      await q.spawned;
    } catch (err) {
      const e = err as NodeJS.ErrnoException;
      const hint = e.code === 'ENOENT' ? 'install QEMU: apt-get install qemu-system-x86' : undefined;
      for (const d of daemons) d.kill();
      await ram?.release();
      throw new StartError('EQEMU_SPAWN', `cannot start ${binary}: ${e.message}`, hint);
    }
    if (ram) {
      const held = ram;
      void q.exited.then(() => held.release()).catch((err: unknown) => this.#log(`releasing the template's memory: ${(err as Error).message}`));
    }
    // Paused (-S): the starter records the PID before the guest can run, so a goshipctl killed from here on leaves no QEMU that no record knows.
    this.#o.report({ t: 'forked', pid: q.pid });
    const { exited } = q;
    const run: Run = { pid: q.pid, own: true, startedAt: q.startedAt, exited, evidence: {} };
    const marks: string[] = [`spawned ${ms()}`];
    this.#run = run;
    let gone: ExitStatus | undefined;
    void exited.then((e) => (gone = e));
    const alive = (): boolean => gone === undefined;
    const failEarly = async (): Promise<never> => {
      await Promise.race([exited, sleep(200)]);
      if (!gone) {
        q.kill('SIGKILL');
        gone = await exited;
      }
      const tail = await logTail(paths.qemuLog);
      const how = gone.signal ? `was killed by ${gone.signal}` : `exited with code ${gone.code}`;
      const words = tail ? `: ${tail.split('\n').slice(-3).join(' | ')}` : '';
      throw new StartError('EQEMU_EXIT', `QEMU ${how} during start${words}`, `read ${paths.qemuLog}; the argv is in the VM's argv.json`, {
        exitCode: gone.code,
        signal: gone.signal,
        logTail: tail,
      });
    };
    try {
      if (!(await waitForPath(paths.qmpSocket, QMP_SOCKET_TIMEOUT_MS, alive))) return await failEarly();
      this.#qmp = await this.#connectQmp(alive);
      marks.push(`QMP ${ms()}`);
      if (restore) {
        const done = await restoreState(this.#qmp, { file: restore.state, bytes: restore.bytes, socketPath: join(runDir, FILES.incomingSocket), ...(ram ? { ignoreShared: true } : {}) }).catch(async (err: unknown) => {
          const e = err as VmStateError;
          // QEMU exits on a state it refuses: its last words say why.
          await Promise.race([exited, sleep(200)]);
          const said = (await logTail(paths.qemuLog)).split('\n').filter(Boolean).slice(-2).join(' | ');
          throw new StartError('EVMSTATE', `${e.message}${said ? ` (QEMU: ${said})` : ''}`, e.hint);
        });
        marks.push(`state restored (${Math.round(done.bytes / 1048576)} MiB, sent in ${Math.round(done.sentMs ?? 0)} ms, loaded in ${Math.round(done.ms)} ms) ${ms()}`);
        if (restore.consume) await this.#consumeSaved(restore.state);
      }
      await this.#restoreForwards();
      await this.#openConsole(alive);
      if (!this.#serverListening) await this.#listen();
      marks.push(`console and socket ${ms()}`);
      this.#link.start();
      await this.#qmp.cont();
      this.#qmpStatus = await this.#qmp.queryStatus();
      marks.push(`cont ${ms()}`);
    } catch (err) {
      // Every way out of here ends this QEMU: a daemon it never connected to would wait for it for ever.
      for (const d of daemons) d.kill();
      if (err instanceof StartError && err.code === 'EVMSTATE') {
        q.kill('SIGKILL');
        await exited;
        throw err;
      }
      // QEMU may be exiting right now (a bad option): then its own words say why.
      await Promise.race([exited, sleep(200)]);
      if (!alive() || err instanceof StartError) return await failEarly();
      q.kill('SIGKILL');
      await exited;
      throw err;
    }
    this.#state = 'running';
    const startedAt = new Date(run.startedAt).toISOString();
    // The starter records `running` too: it waits for this report, not for the store.
    this.#o.report({ t: 'running', pid: run.pid, status: this.#qmpStatus.status, startedAt, monitorStartedAt: this.#startedAt });
    await this.#o.store.update((draft) => {
      const rec = findRecord(draft, 'vm', this.#vm.id);
      if (!rec) return;
      if (rec.state !== 'ready') rec.state = 'running';
      rec.pid = run.pid;
      rec.argv = [...this.#launch.argv];
      rec.startedAt = startedAt;
      rec.monitor = { pid: process.pid, startedAt: this.#startedAt };
      if (this.#restarts > 0) rec.restarts = { ...rec.restarts, count: this.#restarts, lastAt: this.#now() };
      delete rec.end;
      delete rec.note;
      delete rec.stoppedAt;
      delete rec.agent;
    });
    marks.push(`recorded ${ms()}`);
    this.#log(`QEMU running (pid ${run.pid}); ms since the monitor started: ${marks.join(', ')}`);
  }

  async #adopt(): Promise<void> {
    const vm = this.#vm;
    const marker = processMarker(vm.id);
    const pid = vm.pid !== undefined && (await isOurProcess(vm.pid, marker)) ? vm.pid : await this.#pidFromFile(marker);
    if (pid === undefined) throw new StartError('ESTATE', `VM ${vm.name}: there is no QEMU to adopt`, undefined);
    // A monitor that has not recorded itself yet (a fresh start moments ago) already answers on its socket: it keeps the VM.
    if (await answering(vm.paths.monitorSocket)) throw new StartError('ESTATE', `VM ${vm.name} already has a monitor`, undefined);
    // Claim the VM: one monitor per VM. Another live monitor keeps it.
    const claimed = await this.#o.store.update((draft) => {
      const rec = findRecord(draft, 'vm', vm.id);
      if (!rec) return false;
      if (rec.monitor && rec.monitor.pid !== process.pid && pidAlive(rec.monitor.pid)) return false;
      rec.monitor = { pid: process.pid, startedAt: this.#startedAt, adopted: true };
      if (rec.state !== 'ready' && rec.state !== 'stopping') rec.state = 'running';
      rec.pid = pid;
      rec.startedAt ??= this.#now();
      return true;
    });
    if (!claimed) throw new StartError('ESTATE', `VM ${vm.name} already has a monitor`, undefined);
    this.#ownsFiles = true;
    const exited = (async () => {
      while (await isOurProcess(pid, marker)) await sleep(ADOPTED_POLL_MS);
      return undefined;
    })();
    this.#run = { pid, own: false, startedAt: Date.now(), exited, evidence: {} };
    const alive = (): boolean => pidAlive(pid);
    this.#qmp = await this.#connectQmp(alive);
    this.#qmpStatus = await this.#qmp.queryStatus();
    // A monitor that died before `cont` left QEMU paused in prelaunch.
    if (this.#qmpStatus.status === 'prelaunch') {
      await this.#qmp.cont();
      this.#qmpStatus = await this.#qmp.queryStatus();
    }
    // Forwards added live through the monitor that died are not in the argv: a reboot keeps them.
    this.#forwardsWanted = await this.#forwards();
    await this.#openConsole(alive);
    await this.#listen();
    this.#link.start();
    this.#state = 'running';
    this.#log(`adopted QEMU (pid ${pid})`);
    this.#o.report({ t: 'adopted', pid });
  }

  async #pidFromFile(marker: string): Promise<number | undefined> {
    const n = Number((await readFile(this.#vm.paths.pidfile, 'utf8').catch(() => '')).trim());
    return Number.isInteger(n) && n > 0 && (await isOurProcess(n, marker)) ? n : undefined;
  }

  #serverListening = false;

  async #listen(): Promise<void> {
    await this.#server.listen();
    this.#serverListening = true;
    // RUN/ID/docker.sock: each connection relayed to dockerd's socket in the guest (`goshipctl project docker`).
    this.#docker = new SocketRelay({
      path: this.#o.layout.vmSocket(this.#vm.id, 'dockerSocket'),
      target: { to: 'unix', path: GUEST_DOCKER_SOCKET },
      session: (signal) => this.#link.session(signal),
      agentWaitMs: RELAY_AGENT_WAIT_MS,
      log: (l) => this.#log(l),
    });
    await this.#docker.listen().catch((err: unknown) => this.#log(`docker relay: ${(err as Error).message}`));
  }

  #docker: SocketRelay | undefined;

  /** QEMU binds its socket a moment before it listens: a connect in between is refused. Retry while it lives. */
  async #connectQmp(alive: () => boolean): Promise<QmpClient> {
    const deadline = Date.now() + QMP_SOCKET_TIMEOUT_MS;
    for (;;) {
      try {
        return this.#watchQmp(await QmpClient.connect(this.#vm.paths.qmpSocket, { timeoutMs: 5000, onEvent: (e) => this.#onEvent(e) }));
      } catch (err) {
        const refused = (err as { cause?: { code?: string } }).cause?.code === 'ECONNREFUSED';
        if (!refused || !alive() || Date.now() >= deadline) throw err;
        await sleep(5);
      }
    }
  }

  #watchQmp(qmp: QmpClient): QmpClient {
    qmp.on('close', () => {
      if (this.#run && !this.#run.own) this.#log('QMP connection closed');
    });
    return qmp;
  }

  async #openConsole(alive: () => boolean): Promise<void> {
    const { paths } = this.#vm;
    await this.#console?.close();
    this.#console = await ConsoleLog.open({ path: paths.consoleLog, maxBytes: this.#launch.console.maxBytes, keep: this.#launch.console.keep });
    const reads = new ReusedReads();
    const socket = await connectRetrying(paths.consoleSocket, alive, Date.now() + QMP_SOCKET_TIMEOUT_MS, reads);
    if (!socket) return;
    this.#consoleSocket = socket;
    pipeConsole(socket, reads, this.#console, (err) => this.#log(`console.log: ${err.message}`));
  }

  // ------------------------------------------------------------ events and the end

  #onEvent(e: QmpEvent): void {
    const run = this.#run;
    const data = e.data as Record<string, unknown>;
    const words = [e.event, ...['reason', 'id', 'device', 'operation', 'action'].filter((k) => typeof data[k] === 'string').map((k) => String(data[k]))];
    if (e.event === 'VSERPORT_CHANGE') words.push(`open=${String(data.open)}`);
    this.#events.push(words.join(' '));
    if (this.#events.length > EVENTS_KEPT) this.#events.shift();
    if (e.event !== 'VSERPORT_CHANGE') this.#log(`event ${words.join(' ')}`);
    if (!run) return;
    switch (e.event) {
      case 'SHUTDOWN':
        if (typeof data.reason === 'string') run.evidence.shutdownReason = data.reason;
        // -no-reboot: a guest reboot is this SHUTDOWN, one per QEMU, so each counts.
        if (data.reason === 'guest-reset' && this.#resets.reset(Date.now(), false) && !run.evidence.resetLoop) {
          run.evidence.resetLoop = { resets: this.#resets.count, withinMs: this.#resets.windowMs };
          this.#log(`reset loop: ${this.#resets.count} reboots within ${this.#resets.windowMs} ms; not starting QEMU again`);
        }
        break;
      case 'GUEST_PANICKED':
        run.evidence.panicked = true;
        break;
      case 'RESET':
        this.#link.drop('the guest reset');
        this.#agentGone();
        if (data.guest === true && this.#resets.reset(Date.now()) && !run.evidence.resetLoop) {
          run.evidence.resetLoop = { resets: this.#resets.count, withinMs: this.#resets.windowMs };
          this.#log(`reset loop: ${this.#resets.count} resets within ${this.#resets.windowMs} ms; quitting QEMU`);
          void this.#qmp?.quit().catch(() => undefined);
        }
        break;
      case 'VSERPORT_CHANGE':
        if (data.id === 'agent0-port' && data.open === false) {
          this.#link.drop('the guest closed the agent port');
          this.#agentGone();
        }
        break;
      case 'STOP':
      case 'RESUME':
        if (this.#qmpStatus) this.#qmpStatus = { ...this.#qmpStatus, running: e.event === 'RESUME', status: e.event === 'RESUME' ? 'running' : 'paused' };
        break;
    }
  }

  /** Waits for QEMU to go and returns how it ended. */
  async #awaitEnd(): Promise<VmEnd> {
    const run = this.#run!;
    const exit = await run.exited;
    // Let QMP deliver what QEMU said last (SHUTDOWN comes before the exit).
    await Promise.race([this.#qmp?.closed ?? Promise.resolve(), sleep(500)]);
    await this.#qmp?.close().catch(() => undefined);
    this.#qmp = undefined;
    this.#consoleSocket?.destroy();
    this.#consoleSocket = undefined;
    this.#link.drop('QEMU is gone');
    this.#agentGone();
    const kills = await this.#oomKills();
    const memoryLimit = kills > this.#oomSeen ? this.#launch.jail?.cgroup?.memoryBytes : undefined;
    this.#oomSeen = kills;
    const end = classifyEnd({
      at: this.#now(),
      ...run.evidence,
      ...(memoryLimit !== undefined ? { memoryLimit } : {}),
      ...(this.#stopStep !== undefined ? { stopStep: this.#stopStep } : {}),
      ...(exit !== undefined ? { exit } : {}),
      logTail: await logTail(this.#vm.paths.qemuLog),
    });
    this.#log(`QEMU ended: ${end.summary}`);
    this.#lastEnd = end;
    return end;
  }

  async #oomKills(): Promise<number> {
    const cgroup = this.#launch.jail?.cgroup;
    return cgroup ? oomKills(cgroup) : 0;
  }

  /** Between two QEMUs of a reboot: the VM is starting again, its agent is not back yet. */
  async #recordReboot(): Promise<void> {
    await this.#o.store.update((draft) => {
      const rec = findRecord(draft, 'vm', this.#vm.id);
      if (!rec) return;
      rec.state = 'starting';
      rec.reboots = { count: (rec.reboots?.count ?? 0) + 1, lastAt: this.#now() };
      delete rec.pid;
      delete rec.agent;
    });
  }

  /** A fresh QEMU of this monitor forwards what the last one did when it ended (still paused: no guest sees a gap). */
  async #restoreForwards(): Promise<void> {
    const wanted = this.#forwardsWanted;
    if (wanted === undefined || !this.#qmp) return;
    const key = (f: Forward): string => `${f.proto}:${f.hostAddr}:${f.host}-:${f.guest}`;
    const have = await this.#forwards();
    const wantKeys = new Set(wanted.map(key));
    const haveKeys = new Set(have.map(key));
    const qmp = this.#qmp;
    // A forward that cannot be restored is logged; the VM starts without it rather than not at all.
    const attempt = async (what: string, f: Forward, op: () => Promise<unknown>): Promise<void> => {
      await op().catch((err: unknown) => this.#log(`port ${key(f)} not ${what}: ${(err as Error).message}`));
    };
    for (const f of have) {
      if (!wantKeys.has(key(f))) await attempt('removed', f, () => qmp.hostfwdRemove({ netdevId: NETDEV_ID, protocol: f.proto, hostAddr: f.hostAddr, hostPort: f.host }));
    }
    for (const f of wanted) {
      if (!haveKeys.has(key(f))) await attempt('forwarded again', f, () => qmp.hostfwdAdd({ netdevId: NETDEV_ID, protocol: f.proto, hostAddr: f.hostAddr, hostPort: f.host, guestPort: f.guest }));
    }
  }

  /**
   * A suspended VM's state, loaded, is spent before its guest runs: from the
   * first instruction on its disk moves away from what the state knew. The
   * record first, then the file: a monitor killed in between leaves a file
   * that nothing restores.
   */
  async #consumeSaved(file: string): Promise<void> {
    await this.#o.store.update((draft) => {
      const rec = findRecord(draft, 'vm', this.#vm.id);
      if (rec) delete rec.saved;
    });
    await rm(file, { force: true });
  }

  async #recordEnd(end: VmEnd, restarting: boolean): Promise<void> {
    await this.#o.store.update((draft) => {
      const rec = findRecord(draft, 'vm', this.#vm.id);
      if (!rec) return;
      rec.end = end;
      rec.stoppedAt = end.at;
      delete rec.pid;
      if (restarting) {
        rec.state = 'starting';
        rec.restarts = { count: this.#restarts, lastAt: end.at, lastReason: end.summary };
      } else {
        // A VM whose state was saved (a suspend) did not run after the save: whatever ended its QEMU, it is suspended.
        rec.state = rec.saved ? 'suspended' : CRASH_KINDS.has(end.kind) ? 'crashed' : 'stopped';
        delete rec.monitor;
      }
    });
  }

  /**
   * The VM's sockets and run directory go before the monitor records or
   * answers that the VM has ended (a stop, a failed start): the next start may
   * follow at once, and its QEMU creates the same paths. Clients connected to
   * monitor.sock keep their connections.
   */
  async #removeFiles(): Promise<void> {
    // An adopting monitor that lost its claim must not touch the sockets of the monitor that holds the VM.
    if (this.#filesRemoved || !this.#ownsFiles) return;
    this.#filesRemoved = true;
    this.#server.stopAccepting();
    await this.#docker?.close();
    const { paths } = this.#vm;
    await Promise.all([paths.qmpSocket, paths.qmpUserSocket, paths.agentSocket, paths.consoleSocket].map((p) => rm(p, { force: true })));
    // The run directory holds only sockets and QEMU's pidfile; the VM's identity could write in it, so it goes as the jail removes such trees.
    const uid = this.#launch.jail?.uid;
    await removeVmTree(this.#o.layout.vmRunDir(this.#vm.id), uid === undefined ? undefined : { uid }).catch((err: unknown) => this.#log(`removing the run directory: ${(err as Error).message}`));
    const cgroup = this.#launch.jail?.cgroup;
    if (cgroup) await removeCgroup(cgroup.vmDirs).catch((err: unknown) => this.#log(`removing the cgroup: ${(err as Error).message}`));
  }

  #filesRemoved = false;
  /** Whether the VM's sockets and run directory are this monitor's to remove: a fresh start, or an adoption whose claim held. */
  #ownsFiles = false;

  /** The monitor is done: no clients, no sockets, no agent link. */
  async #teardown(reason: string): Promise<void> {
    this.#state = 'ended';
    await this.#removeFiles();
    await this.#link.stop(new MonitorCallError('EAGENT_CLOSED', `the VM's monitor is done: ${reason}`));
    await this.#server.close(reason);
    await this.#console?.close();
    await this.#o.store.update((draft) => {
      const rec = findRecord(draft, 'vm', this.#vm.id);
      if (rec?.monitor?.pid === process.pid) delete rec.monitor;
    });
  }

  // ------------------------------------------------------------ the agent

  /** The agent's session went away (a reset, a closed port, QEMU gone): the VM runs without it for now. */
  #agentGone(): void {
    if (this.#state === 'ready') this.#state = 'running';
  }

  async #agentReady(hello: AgentHello): Promise<void> {
    if (this.#state === 'running') this.#state = 'ready';
    await this.#o.store
      .update((draft) => {
        const rec = findRecord(draft, 'vm', this.#vm.id);
        if (!rec) return;
        if (rec.state === 'running' || rec.state === 'starting') rec.state = 'ready';
        rec.agent = { version: hello.agent, protocol: hello.protocol, hostname: hello.hostname, bootId: hello.bootId, readyAt: this.#now() };
      })
      .catch((err: unknown) => this.#log(`recording the agent's hello: ${(err as Error).message}`));
  }

  #hello(): { agent: string; hostname: string; bootId: string; ready: boolean; limits: FlowLimits } {
    const h = this.#link.lastHello;
    // Before the agent's first hello its limits are unknown: a client is granted this GoShip's own
    // (the agent baked in by it has them), and the pacer fits frames to an older agent's (pacer.ts).
    return { agent: h?.agent ?? '', hostname: h?.hostname ?? '', bootId: h?.bootId ?? '', ready: this.#link.ready, limits: h?.limits ?? OWN_LIMITS };
  }

  // ------------------------------------------------------------ the stop

  #stop(force: boolean, timeouts: Partial<StopTimeouts>): Promise<StopResult> {
    this.#stopping ??= this.#escalate(force, timeouts);
    return this.#stopping;
  }

  async #escalate(force: boolean, timeouts: Partial<StopTimeouts>): Promise<StopResult> {
    this.#stopAsked = { force, timeouts };
    const wasRunning = this.#run !== undefined && this.#state !== 'restarting';
    this.#state = 'stopping';
    this.#wakeRestart?.();
    const run = this.#run;
    if (!run || !wasRunning) {
      // Between two QEMUs (a reboot, a restart): main() stops the next one as soon as it runs, or records the stop.
      const end = await this.#final.promise;
      return { endedBy: 'already', attempts: [], end: { kind: end.kind, summary: end.summary } };
    }
    const result = await this.#stopRun(run, force, timeouts);
    // main() records the end once QEMU is gone; the caller sees the record as it is then.
    const end = await this.#final.promise;
    return { endedBy: result.endedBy, attempts: result.attempts, end: { kind: end.kind, summary: end.summary } };
  }

  /** A stop asked for while the monitor was between two QEMUs: the one that has just started goes at once. */
  #stopIfAsked(): void {
    const asked = this.#stopAsked;
    if (!asked || !this.#run) return;
    this.#state = 'stopping';
    this.#log('a stop was asked for during the restart: stopping the new QEMU');
    void this.#stopRun(this.#run, asked.force, asked.timeouts).catch((err: unknown) => this.#log(`stop: ${(err as Error).message}`));
  }

  /** The escalation against one run of QEMU, until it is gone. */
  async #stopRun(run: Run, force: boolean, timeouts: Partial<StopTimeouts>): Promise<EscalationResult> {
    const t = { ...DEFAULT_STOP_TIMEOUTS, ...timeouts };
    let ended = false;
    void run.exited.then(() => (ended = true));
    const gone = async (ms: number): Promise<boolean> => {
      if (ended) return true;
      await Promise.race([run.exited, sleep(ms)]);
      return ended;
    };
    const marked = (name: StopStep['name'], request: () => Promise<void>) => async () => {
      this.#stopStep = name;
      await request();
    };
    const qmp = (): QmpClient => {
      if (!this.#qmp) throw new MonitorCallError('EQMP_CLOSED', 'no QMP connection');
      return this.#qmp;
    };
    const signal = (sig: NodeJS.Signals) => async () => {
      if (!(await isOurProcess(run.pid, processMarker(this.#vm.id)))) throw new MonitorCallError('ESTATE', 'the process is already gone');
      process.kill(run.pid, sig);
    };
    const steps: StopStep[] = [];
    if (!force) {
      const agent = this.#link.current;
      if (agent) steps.push({ name: 'agent', request: marked('agent', async () => void (await agent.shutdown())), waitMs: t.agentMs });
      steps.push({ name: 'acpi', request: marked('acpi', () => qmp().systemPowerdown({ timeoutMs: 2000 })), waitMs: t.acpiMs, repeatMs: ACPI_REPEAT_MS });
    }
    steps.push(
      { name: 'quit', request: marked('quit', () => qmp().quit({ timeoutMs: 2000 })), waitMs: t.quitMs },
      { name: 'sigterm', request: marked('sigterm', signal('SIGTERM')), waitMs: t.termMs },
      { name: 'sigkill', request: marked('sigkill', signal('SIGKILL')), waitMs: t.killMs },
    );
    return escalate(steps, gone);
  }

  /**
   * A suspend, whole, in the monitor, so it does not depend on the goshipctl
   * that asked for it: pauses the guest, saves its state, records it
   * (`Vm.saved`, the point of no return), then ends QEMU, which the end's
   * record makes `suspended`. Until the record, a save that fails or whose
   * client goes away (`signal`: a goshipctl killed with -9) is cancelled and
   * the guest runs again.
   */
  async #suspend(signal: AbortSignal, p: v.InferOutput<typeof SuspendParamsSchema>): Promise<SuspendResult> {
    const { layout, id, store } = this.#o;
    const qmp = this.#qmp;
    if (!qmp || (this.#state !== 'running' && this.#state !== 'ready')) throw new MonitorCallError('ESTATE', `VM ${this.#vm.name} is not running (monitor: ${this.#state})`);
    if (this.#saving) throw new MonitorCallError('ESTATE', `VM ${this.#vm.name}: a suspend is already under way`);
    this.#saving = true;
    const file = layout.vmFile(id, 'savedState');
    const jail = this.#vm.jail;
    let t: StateTransfer;
    try {
      await qmp.stop();
      t = await saveState(qmp, {
        socketPath: layout.vmSocket(id, 'saveSocket'),
        ...(jail?.uid !== undefined && jail.gid !== undefined ? { owner: { uid: jail.uid, gid: jail.gid } } : {}),
        file,
        maxBytes: p.maxBytes,
        signal,
      });
    } catch (err) {
      // Paused for the save: it runs again.
      await qmp.cont().catch((e: unknown) => this.#log(`after a failed save, cont: ${(e as Error).message}`));
      this.#log(`suspend: ${(err as Error).message}; the guest runs again`);
      throw err;
    } finally {
      this.#saving = false;
    }
    const saved = { file, bytes: t.bytes, at: this.#now() };
    await store.update((draft) => {
      requireRecord(draft, 'vm', id).saved = { ...saved, argvShape: p.argvShape };
    });
    this.#log(`state saved for a suspend: ${t.bytes} bytes in ${Math.round(t.ms)} ms; ending QEMU`);
    return { saved, ms: t.ms, stop: await this.#stop(true, {}) };
  }

  // ------------------------------------------------------------ monitor.* methods

  #handlers(): Record<string, LocalHandler> {
    const parse = <S extends v.GenericSchema>(schema: S, raw: unknown, method: string): v.InferOutput<S> => {
      const r = v.safeParse(schema, raw);
      if (!r.success) throw new MonitorCallError('EBADREQ', `${method}: ${r.issues.map((i) => `${v.getDotPath(i) ?? ''} ${i.message}`.trim()).join('; ')}`);
      return r.output;
    };
    const qmp = (): QmpClient => {
      if (!this.#qmp) throw new MonitorCallError('ESTATE', `VM ${this.#vm.name} is not running`);
      return this.#qmp;
    };
    return {
      [MONITOR_METHODS.status]: async () => this.#status(),
      [MONITOR_METHODS.wait]: async (call, raw) => {
        const p = parse(WaitParamsSchema, raw, MONITOR_METHODS.wait);
        const deadline = withDeadline(call.signal, p.timeoutMs, () => new Error('deadline'));
        try {
          await this.#link.session(deadline.signal);
        } catch (err) {
          if (call.signal.aborted) throw err;
          if (err instanceof AgentUnavailableError) throw new MonitorCallError('EAGENT_RUNTIME', err.message);
          if (this.#state === 'ended' || this.#lastEnd) throw new MonitorCallError('EAGENT_TIMEOUT', `the VM ended before its agent answered: ${this.#lastEnd?.summary ?? 'it stopped'}`);
          throw new MonitorCallError('EAGENT_TIMEOUT', `no hello from the guest agent within ${p.timeoutMs} ms`);
        } finally {
          deadline.clear();
        }
        const h = this.#hello();
        return { hello: { agent: h.agent, hostname: h.hostname, bootId: h.bootId } };
      },
      [MONITOR_METHODS.qmp]: async (_call, raw) => {
        const p = parse(QmpParamsSchema, raw, MONITOR_METHODS.qmp);
        return { return: await qmp().execute(p.execute, p.arguments, { timeoutMs: 30_000 }) };
      },
      [MONITOR_METHODS.suspend]: async (call, raw) => this.#suspend(call.signal, parse(SuspendParamsSchema, raw, MONITOR_METHODS.suspend)),
      [MONITOR_METHODS.stop]: async (_call, raw) => {
        const p = parse(StopParamsSchema, raw, MONITOR_METHODS.stop);
        if (this.#saving) throw new MonitorCallError('ESTATE', `VM ${this.#vm.name}: a suspend is saving its state; stop it after`);
        return this.#stop(p.force === true, p.timeouts ?? {});
      },
      [MONITOR_METHODS.portAdd]: async (_call, raw) => {
        const p = parse(PortAddParamsSchema, raw, MONITOR_METHODS.portAdd);
        await qmp().hostfwdAdd({ netdevId: NETDEV_ID, protocol: p.proto, hostAddr: p.hostAddr, hostPort: p.host, guestPort: p.guest });
        this.#log(`port added: ${p.proto}:${p.hostAddr}:${p.host} → ${p.guest}`);
        this.#forwardsWanted = await this.#forwards();
        return { forwards: this.#forwardsWanted };
      },
      [MONITOR_METHODS.portRemove]: async (_call, raw) => {
        const p = parse(PortRemoveParamsSchema, raw, MONITOR_METHODS.portRemove);
        await qmp().hostfwdRemove({ netdevId: NETDEV_ID, protocol: p.proto, hostAddr: p.hostAddr, hostPort: p.host });
        this.#log(`port removed: ${p.proto}:${p.hostAddr}:${p.host}`);
        this.#forwardsWanted = await this.#forwards();
        return { forwards: this.#forwardsWanted };
      },
      [MONITOR_METHODS.portList]: async () => ({ forwards: await this.#forwards() }),
      [MONITOR_METHODS.console]: (call, raw) => this.#followConsole(call, parse(ConsoleParamsSchema, raw, MONITOR_METHODS.console).from),
    };
  }

  async #forwards(): Promise<Forward[]> {
    if (!this.#qmp) return [];
    return parseUsernet(await this.#qmp.humanMonitorCommand({ commandLine: 'info usernet' }));
  }

  async #status(): Promise<MonitorStatus> {
    const h = this.#link.lastHello;
    return {
      vm: this.#vm.id,
      state: this.#state,
      monitor: { pid: process.pid, adopted: this.#o.adopt, clients: this.#server.clients, startedAt: this.#startedAt },
      qemu: {
        pid: this.#run?.pid ?? null,
        status: this.#qmpStatus?.status ?? null,
        startedAt: this.#run ? new Date(this.#run.startedAt).toISOString() : null,
      },
      agent: { ready: this.#link.ready, hello: h ? { agent: h.agent, hostname: h.hostname, bootId: h.bootId } : null, sessions: this.#link.sessions },
      ports: await this.#forwards().catch(() => []),
      console: { bytes: this.#console?.bytes ?? 0, rotations: this.#console?.rotations ?? 0 },
      restarts: this.#restarts,
      reboots: this.#reboots,
      events: [...this.#events],
    };
  }

  /** `vm console -f`: the files' contents (from: start), then every new byte, until the client stops or the VM ends. */
  async #followConsole(call: LocalCall, from: 'start' | 'now'): Promise<{ bytes: number; dropped: number }> {
    const log = this.#console;
    if (!log) throw new MonitorCallError('ESTATE', `VM ${this.#vm.name} has no console yet`);
    let bytes = 0;
    let dropped = 0;
    let note = false;
    const unsubscribe = await log.follow({
      live: (chunk) => {
        if (note && call.offer('stdout', Buffer.from(`\n[goship: ${dropped} bytes of console output dropped: this reader is slower than the guest]\n`))) note = false;
        if (call.offer('stdout', chunk)) bytes += chunk.length;
        else {
          dropped += chunk.length;
          note = true;
        }
      },
      dropped: (n) => (dropped += n),
      ...(from === 'start'
        ? {
            past: async (chunk: Buffer) => {
              await call.sendChunk('stdout', chunk);
              bytes += chunk.length;
            },
          }
        : {}),
    });
    try {
      await new Promise<void>((resolve) => {
        if (call.signal.aborted) return resolve();
        call.signal.addEventListener('abort', () => resolve(), { once: true });
        void this.#run?.exited.then(() => resolve());
      });
    } finally {
      unsubscribe();
    }
    call.eof('stdout');
    return { bytes, dropped };
  }
}

