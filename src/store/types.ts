/**
 * GoShip's domain types, as they are stored in `GOSHIP_HOME/state.json`.
 *
 * Every timestamp is an ISO-8601 string in UTC (`new Date().toISOString()`).
 * Collections are records keyed by the record's own name (or id, for VMs;
 * `appKey(project, name)` for apps), never arrays: lookups are by key and two
 * writers can never append the same record twice.
 */

/** The schema version this code reads and writes. Older files are migrated on read. */
export const SCHEMA_VERSION = 1;

/** The name of the node GoShip runs on. */
export const LOCAL_NODE = 'local';

/** An ISO-8601 timestamp (`2024-05-01T12:00:00.000Z`). */
export type Timestamp = string;

/** A host that runs VMs. Today only `local`; remote nodes (over SSH) come later. */
export interface Node {
  name: string;
  createdAt: Timestamp;
}

/** A port forwarded from the host to the guest (QEMU user networking `hostfwd`). */
export interface PortForward {
  proto: 'tcp' | 'udp';
  host: number;
  guest: number;
}

/** What the user asked for when creating a project. */
export interface ProjectSpec {
  cpus: number;
  memoryBytes: number;
  diskBytes: number;
  /** Name of an `Image`. */
  image: string;
  ports: PortForward[];
  /** Public key lines (`ssh-ed25519 AAAA… comment`). */
  sshKeys: string[];
}

/**
 * An operation a `goshipctl` process is carrying out on a record. Written before
 * the first side effect and removed after the last, so a process killed in
 * between leaves a trace that the next command's reconcile turns into `broken`.
 */
export interface PendingOp {
  kind: 'create' | 'start' | 'stop' | 'delete';
  /** PID of the goshipctl process doing it. */
  pid: number;
  startedAt: Timestamp;
}

export const PROJECT_STATES = ['creating', 'ready', 'stopped', 'deleting', 'broken'] as const;
export type ProjectState = (typeof PROJECT_STATES)[number];

/** A project owns one VM per node; every workload of the project runs inside it. */
export interface Project {
  name: string;
  createdAt: Timestamp;
  /** Name of the `Node` the project's VM lives on. */
  node: string;
  /** Id of the project's `Vm`. */
  vmId: string;
  spec: ProjectSpec;
  state: ProjectState;
  /** The message of the error that left the project `broken`. */
  lastError?: string;
  /** The operation in progress, if any. */
  op?: PendingOp;
}

export const VM_STATES = ['defined', 'starting', 'running', 'ready', 'stopping', 'stopped', 'crashed'] as const;
export type VmState = (typeof VM_STATES)[number];

/** What is known about a QEMU process that exited without being asked to. */
export interface VmCrash {
  at: Timestamp;
  exitCode?: number;
  signal?: string;
  /** The last lines of `qemu.log`. */
  logTail: string;
}

/** Where a VM's files and sockets are (see `Layout`). */
export interface VmPaths {
  dir: string;
  overlay?: string;
  seed?: string;
  qmpSocket: string;
  agentSocket: string;
  consoleLog: string;
  qemuLog: string;
  pidfile: string;
}

/** The guest agent, as its hello described it. */
export interface VmAgentInfo {
  version: string;
  protocol: number;
  hostname: string;
  bootId: string;
  readyAt: Timestamp;
}

export interface Vm {
  id: string;
  name: string;
  /** Name of the owning `Project`, if any. */
  project?: string;
  node: string;
  createdAt: Timestamp;
  /** Name of the base `Image`, if the VM boots one. */
  image?: string;
  state: VmState;
  pid?: number;
  startedAt?: Timestamp;
  stoppedAt?: Timestamp;
  /** Why the VM stopped (`user`, `agent-shutdown`, `crash`…): free text for people. */
  stopReason?: string;
  crash?: VmCrash;
  /** The QEMU argv actually run. */
  argv?: string[];
  paths: VmPaths;
  /** The operation in progress, if any. */
  op?: PendingOp;
  /** What the guest agent said in its last hello. */
  agent?: VmAgentInfo;
  /** The resolved VM spec. Opaque to the store: it is kept, never interpreted. */
  config: Record<string, unknown>;
}

export const IMAGE_KINDS = ['built', 'imported'] as const;
export type ImageKind = (typeof IMAGE_KINDS)[number];

export interface Image {
  name: string;
  createdAt: Timestamp;
  kind: ImageKind;
  /** `images/NAME/`. */
  dir: string;
  /** sha256 of `base.qcow2`, hex. */
  sha256?: string;
  sizeBytes?: number;
  packages?: string[];
  /** Path of the kernel for direct boot. */
  kernel?: string;
  /** Path of the initrd for direct boot. */
  initrd?: string;
}

export const APP_KINDS = ['container', 'process'] as const;
export type AppKind = (typeof APP_KINDS)[number];

/** A workload inside a project's VM. Stored under `appKey(project, name)`. */
export interface App {
  project: string;
  name: string;
  kind: AppKind;
  /** Container image reference (`kind: 'container'`). */
  image?: string;
  createdAt: Timestamp;
  state: string;
}

/** The whole state file. */
export interface State {
  schemaVersion: number;
  nodes: Record<string, Node>;
  projects: Record<string, Project>;
  /** Keyed by VM id. */
  vms: Record<string, Vm>;
  images: Record<string, Image>;
  /** Keyed by `appKey(project, name)` (`project/name`). */
  apps: Record<string, App>;
}

/** The collections of `State`, by the kind of record they hold. */
export const COLLECTIONS = {
  node: 'nodes',
  project: 'projects',
  vm: 'vms',
  image: 'images',
  app: 'apps',
} as const satisfies Record<string, Exclude<keyof State, 'schemaVersion'>>;

export type RecordKind = keyof typeof COLLECTIONS;

/** The record type stored for each kind. */
export interface RecordOf {
  node: Node;
  project: Project;
  vm: Vm;
  image: Image;
  app: App;
}

/** A fresh, empty state at the current schema version. */
export function emptyState(): State {
  return { schemaVersion: SCHEMA_VERSION, nodes: {}, projects: {}, vms: {}, images: {}, apps: {} };
}

/** The key of an app in `State.apps`: apps are named per project. */
export function appKey(project: string, name: string): string {
  return `${project}/${name}`;
}
