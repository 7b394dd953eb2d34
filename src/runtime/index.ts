/**
 * The runtime: the one module that combines probe, images, cloud-init, QEMU,
 * QMP, the agent channel and the store. The CLI is a thin shell around it, and
 * scripts can import it instead of parsing CLI output:
 *
 *     import { Runtime } from 'goship';
 *     const rt = await Runtime.open();
 *     await rt.projects.create({ name: 'web', cpus: 2, memory: '2G' });
 */
import { Layout, type Env } from '../layout.ts';
import type { HostFacts } from '../qemu/index.ts';
import { QEMU_BINARY, machineAliases } from '../qemu/index.ts';
import { Store } from '../store/index.ts';
import { PROTOCOL_VERSION } from '../protocol/index.ts';
import { chooseAccel, probeHost, type HostReport } from '../kvm-probe/index.ts';
import { hostFacts, qemuVersion, type VersionReport } from './host.ts';
import { VmService } from './vms.ts';
import { AppService } from './apps.ts';
import { ProjectService } from './projects.ts';
import { ImageService, type ImageSource } from './images.ts';
import { NodeService } from './nodes.ts';
import { moveProject, receiveProject, type MoveReport } from './move.ts';

export interface RuntimeOptions {
  layout?: Layout;
  env?: Env;
  /** Host facts to validate specs against; default: probe this host (once per Runtime). */
  host?: HostFacts;
  qemuBinary?: string;
  /** Where project images come from; default: images/NAME/ under GOSHIP_HOME. */
  images?: ImageSource;
}

export class Runtime {
  readonly vms: VmService;
  readonly projects: ProjectService;
  readonly images: ImageService;
  readonly apps: AppService;
  readonly nodes: NodeService;
  private hostCache: Promise<HostFacts> | undefined;
  private aliasCache: Promise<Map<string, string>> | undefined;
  private readonly qemuBinary: string;

  private constructor(
    readonly layout: Layout,
    readonly store: Store,
    opts: RuntimeOptions,
  ) {
    if (opts.host) this.hostCache = Promise.resolve(opts.host);
    this.qemuBinary = opts.qemuBinary ?? QEMU_BINARY;
    this.vms = new VmService({
      layout,
      store,
      host: () => this.host(),
      now: () => new Date().toISOString(),
      qemuBinary: this.qemuBinary,
      machineAliases: () => {
        this.aliasCache ??= machineAliases(this.qemuBinary);
        return this.aliasCache;
      },
      root: process.getuid?.() === 0,
    });
    this.images = new ImageService(layout, store, () => new Date().toISOString());
    this.nodes = new NodeService({ layout, store, now: () => new Date().toISOString() });
    this.apps = new AppService({ store, vms: this.vms, now: () => new Date().toISOString(), reconcile: () => this.projects.reconcile() });
    this.projects = new ProjectService({
      store,
      vms: this.vms,
      images: opts.images ?? this.images,
      host: () => this.host(),
      now: () => new Date().toISOString(),
      layout,
      qemuBinary: this.qemuBinary,
    });
  }

  /** `project move`: project `name` of this host carried to node `to` (src/runtime/move.ts). */
  move(name: string, to: string, onStep?: (what: string) => void): Promise<MoveReport> {
    return moveProject(this.moveContext(), name, to, onStep);
  }

  /** `project receive`: the node's side of a move. */
  receive(name: string, stream: NodeJS.ReadableStream, o: { start: boolean }): ReturnType<typeof receiveProject> {
    return receiveProject(this.moveContext(), name, stream, o);
  }

  private moveContext() {
    return { store: this.store, layout: this.layout, projects: this.projects, vms: this.vms, nodes: this.nodes, images: this.images, now: () => new Date().toISOString() };
  }

  static async open(opts: RuntimeOptions = {}): Promise<Runtime> {
    const layout = opts.layout ?? Layout.fromEnv(opts.env);
    const store = await Store.open(layout);
    return new Runtime(layout, store, opts);
  }

  /** What this host can do, probed once per Runtime. */
  host(): Promise<HostFacts> {
    this.hostCache ??= hostFacts();
    return this.hostCache;
  }

  /** The probe's whole report of this host (`goshipctl host`). */
  hostReport(): Promise<HostReport> {
    return probeHost();
  }

  /** GoShip's, Node's and QEMU's versions (`--version` and QMP) and the accelerator `auto` picks (`goshipctl version`). */
  async versions(goship: string): Promise<VersionReport> {
    const [qemu, report] = await Promise.all([qemuVersion(this.qemuBinary), probeHost()]);
    return { goship, protocol: PROTOCOL_VERSION, node: process.version, qemu, accel: chooseAccel(report), paths: { home: this.layout.home, run: this.layout.run } };
  }
}

export { VmService } from './vms.ts';
export { MOVE_FORMAT, type MoveReport } from './move.ts';
export { NodeService, DEFAULT_REMOTE_CLI, INSTALL_DIR, type NodeView, type AddNodeOptions } from './nodes.ts';
export { nodeUrl } from '../nodes/index.ts';
export { ProjectService, validateProjectOptions, projectStateFor, readSshKeys, PROJECT_DEFAULTS, DEFAULT_READY_TIMEOUT_MS } from './projects.ts';
export { mountTag } from './mounts.ts';
export { WAIT_LEVELS, bootStepsText, parseCloudInitResult, waitGuestBoot } from './guest-boot.ts';
export type { WaitLevel, BootStep, BootProgress } from './guest-boot.ts';
export { AppService, appsOf, containerSpec, isDockerArchive, type AppView, type AppLogsOptions, type AppExecOptions } from './apps.ts';
export { checkAppOptions, parseAppPort, parseRestart, parseEnvFile, type AppPort, type AppSource, type DeployOptions, type ValidatedApp } from './app-options.ts';
export type { CreateProjectOptions, StartProjectOptions, BootReport, ProjectView, ProjectInfo, PortsView, ProjectOrigin, WarmOptions } from './projects.ts';
export { TEMPLATE_FORMAT, argvShape, templateMismatch, templateName, type TemplateInfo, type TemplateRecord, type TemplateShape } from './templates.ts';
export { parsePort, portClashes, portOwners, hostPortFree, DEFAULT_HOST_ADDR } from './ports.ts';
export { ImageService, agentBundlePath, type ImageSource, type ResolvedImage } from './images.ts';
export type { CreateVmOptions, StartVmOptions, StopVmOptions, StopVmResult, ReconcileChange } from './vms.ts';
export { DEFAULT_STOP_TIMEOUTS, type EscalationResult, type StopStepName, type StopTimeouts, type Forward } from '../monitor/index.ts';
export { LIVE_STATES, reconcileDecision, type ReconcileDecision, type ReconcileFacts } from './reconcile.ts';
export { factsFromReport, qemuVersion, type QemuVersionReport, type VersionReport } from './host.ts';
export { RuntimeError, stateError, busyError } from './errors.ts';
export { openPartial } from '../serial/index.ts';
export { buildContextStream } from './build-context.ts';
export { JAIL_ID_BASE, JAIL_ID_COUNT, ID_REGISTRY, jailedCommand, limitsFor, type Identity } from '../jail/index.ts';
// What the CLI shows of the layers below, through the runtime's door only.
export { formatHostReport, type HostReport, type AccelChoice } from '../kvm-probe/index.ts';
export { loadSpecFile, parseSize, NAME_PATTERN } from '../qemu/index.ts';
export type { ImageInfo, ImageEntry } from '../image/index.ts';
export type { Vm, Project, PortForward } from '../store/index.ts';
