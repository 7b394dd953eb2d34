/**
 * GoShip's library API. Scripts import this instead of parsing CLI output:
 *
 *     import { Runtime } from 'goship';
 *     const rt = await Runtime.open();
 *     const { project } = await rt.projects.create({ name: 'web', cpus: 2, memory: '2G' });
 */
export { GoshipError, ValidationError, type Issue } from './errors.ts';
export { Layout, FILES } from './layout.ts';
export { AGENT_PORT_NAME, PROTOCOL_VERSION } from './protocol/index.ts';
export { Runtime, VmService, ProjectService, parsePort, validateProjectOptions, ImageService, DEFAULT_STOP_TIMEOUTS, qemuVersion } from './runtime/index.ts';
export type {
  RuntimeOptions,
  CreateVmOptions,
  StartVmOptions,
  StopVmOptions,
  StopVmResult,
  ReconcileChange,
  CreateProjectOptions,
  ProjectView,
  ProjectInfo,
  EscalationResult,
  StopStepName,
  StopTimeouts,
  ImageSource,
  ResolvedImage,
} from './runtime/index.ts';
export { buildArgv, resolveSpec, loadSpecFile, qemuOpts, parseSize } from './qemu/index.ts';
export type { VmSpec, VmConfig, HostFacts } from './qemu/index.ts';
export { QmpClient } from './qmp/index.ts';
export { AgentClient } from './serial/index.ts';
export { Store } from './store/index.ts';
export type { State, Project, Vm, Image, App, Node } from './store/index.ts';
export { buildImage } from './image/index.ts';
