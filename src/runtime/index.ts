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
import { QEMU_BINARY } from '../qemu/index.ts';
import { Store } from '../store/index.ts';
import { hostFacts } from './host.ts';
import { VmService } from './vms.ts';
import { ProjectService } from './projects.ts';
import { ImageService, type ImageSource } from './images.ts';

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
  private hostCache: Promise<HostFacts> | undefined;

  private constructor(
    readonly layout: Layout,
    readonly store: Store,
    opts: RuntimeOptions,
  ) {
    if (opts.host) this.hostCache = Promise.resolve(opts.host);
    this.vms = new VmService({
      layout,
      store,
      host: () => this.host(),
      now: () => new Date().toISOString(),
      qemuBinary: opts.qemuBinary ?? QEMU_BINARY,
    });
    this.images = new ImageService(layout, store, () => new Date().toISOString());
    this.projects = new ProjectService({
      store,
      vms: this.vms,
      images: opts.images ?? this.images,
      host: () => this.host(),
      now: () => new Date().toISOString(),
    });
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
}

export { VmService } from './vms.ts';
export { ProjectService, parsePort, validateProjectOptions, readSshKeys, PROJECT_DEFAULTS } from './projects.ts';
export type { CreateProjectOptions, ProjectView, ProjectInfo } from './projects.ts';
export { ImageService, agentBundlePath, type ImageSource, type ResolvedImage } from './images.ts';
export type { CreateVmOptions, StartVmOptions, StopVmOptions, StopVmResult, ReconcileChange } from './vms.ts';
export type { EscalationResult, StopStepName } from './escalate.ts';
export { DEFAULT_STOP_TIMEOUTS, type StopTimeouts } from './machine.ts';
