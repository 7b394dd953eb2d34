/**
 * GoShip's domain types, as they are stored in `GOSHIP_HOME/state.json`.
 *
 * Every timestamp is an ISO-8601 string in UTC (`new Date().toISOString()`).
 * Collections are records keyed by the record's own name (or id, for VMs;
 * `appKey(project, name)` for apps), never arrays: lookups are by key and two
 * writers can never append the same record twice.
 */

/** The schema version this code reads and writes. Older files are migrated on read. */
export const SCHEMA_VERSION = 3;

/** The name of the node GoShip runs on. */
export const LOCAL_NODE = 'local';

/** An ISO-8601 timestamp (`2024-05-01T12:00:00.000Z`). */
export type Timestamp = string;

/**
 * A host that runs VMs: this one (`local`, implicit), or another host's GoShip
 * reached over SSH (`goshipctl node add`). A remote node's projects live in
 * that node's own store; this record only says where they are.
 */
export interface Node {
  name: string;
  createdAt: Timestamp;
  /** `ssh://USER@HOST[:PORT]`, parsed. Absent for the local node. */
  address?: { user: string; host: string; port: number };
  /** The private key ssh logs in with (`-o IdentityFile`), an absolute path. */
  identity?: string;
  /** The known_hosts file ssh checks the node's host key against, an absolute path: `--known-hosts`, or GoShip's own for the node (`HOME/nodes/NAME.known_hosts`, its key recorded at node add). */
  knownHosts?: string;
  /** The host key fingerprints recorded at node add (`SHA256:… (ED25519)`), when GoShip keeps the known_hosts. */
  hostKeys?: string[];
  /** The argv that runs goshipctl on the node (default `goshipctl`). */
  cli?: string[];
  /** What the node said when it was added or last checked. */
  report?: NodeReport;
  /** Projects placed on this node (name → when), so commands on them are routed there. */
  /** Our projects placed there; `monitorSocket`: the node's path of the project VM's monitor socket, once learnt (commands reach it through ssh's forwarding). */
  projects?: Record<string, { createdAt: Timestamp; monitorSocket?: string }>;
}

/** A node's own `version --json` and `host --json`, as far as `node list` shows them. */
export interface NodeReport {
  checkedAt: Timestamp;
  goship: string;
  protocol: number;
  accel: string;
  accelReason: string;
  cpus: number;
  memoryBytes: number;
  /** Where the node's GoShip keeps its state (`version --json` paths.home): `project list` reads it there. */
  home?: string;
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
  /** The VM's restart policy (absent: `no`). */
  restart?: 'no' | 'on-crash';
  /** Shared folders (absent: none). */
  mounts?: SharedFolder[];
}

/** A host directory the project's guest mounts (virtio-fs). */
export interface SharedFolder {
  /** The host directory, its real path at create. */
  host: string;
  /** Where the guest mounts it. */
  guest: string;
  /** Served from a read-only bind mount: the guest cannot write it. */
  readOnly: boolean;
}

/**
 * An operation a `goshipctl` process is carrying out on a record. Written before
 * the first side effect and removed after the last, so a process killed in
 * between leaves a trace that the next command's reconcile turns into `broken`.
 */
export interface PendingOp {
  kind: (typeof OP_KINDS)[number];
  /** PID of the goshipctl process doing it. */
  pid: number;
  startedAt: Timestamp;
}

/** What a goshipctl can be doing to a record: `suspend` saves a VM's state, `snapshot` takes, applies or deletes a snapshot of its disk, `move` carries a project to a node. */
export const OP_KINDS = ['create', 'start', 'stop', 'delete', 'suspend', 'snapshot', 'move'] as const;

/** `crashed`: its VM crashed (reconcile follows the VM; `lastError` says how and what to run); `suspended`: its VM's memory and devices are saved, and its next start restores them. */
export const PROJECT_STATES = ['creating', 'ready', 'stopped', 'suspended', 'crashed', 'deleting', 'broken'] as const;
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

/** `suspended`: no QEMU runs, and the VM's memory and devices are saved (`Vm.saved`): its next start restores them. */
export const VM_STATES = ['defined', 'starting', 'running', 'ready', 'stopping', 'stopped', 'suspended', 'crashed'] as const;
export type VmState = (typeof VM_STATES)[number];

/** The steps of GoShip's stop, in order: agent `shutdown`, ACPI power button, QMP `quit`, SIGTERM, SIGKILL. */
export const STOP_STEPS = ['agent', 'acpi', 'quit', 'sigterm', 'sigkill'] as const;
export type StopStepName = (typeof STOP_STEPS)[number];

export const END_KINDS = ['poweroff', 'stopped', 'quit', 'killed', 'panic', 'reset-loop', 'reboot', 'crashed', 'lost'] as const;
/**
 * How a run of a VM ended, as its monitor saw it (src/monitor/ending.ts):
 * - `poweroff`: the guest powered itself off (SHUTDOWN guest-shutdown);
 * - `stopped`: GoShip stopped it (`step` says which step of the escalation it took);
 * - `quit`: someone else told QEMU to quit over QMP (the people's socket);
 * - `killed`: a signal from outside asked QEMU to end (SIGTERM, SIGINT, SIGHUP: SHUTDOWN host-signal);
 * - `panic`: the guest kernel panicked (GUEST_PANICKED, pvpanic);
 * - `reset-loop`: the guest kept resetting; the monitor stopped it;
 * - `reboot`: the guest rebooted (QEMU runs with `-no-reboot`, so a reset ends it: SHUTDOWN
 *   guest-reset); the monitor starts QEMU again at once, so this is an end of one QEMU
 *   process, not of the VM;
 * - `crashed`: QEMU died without a SHUTDOWN (a signal such as SIGKILL or SIGSEGV, or a failure exit);
 * - `lost`: QEMU is gone and nothing saw how (no monitor was watching).
 */
export type EndKind = (typeof END_KINDS)[number];

/** How a VM's last run ended, with the evidence. No guest-written text decides any of it. */
export interface VmEnd {
  at: Timestamp;
  kind: EndKind;
  /** One line for people. */
  summary: string;
  /** The reason of QMP's SHUTDOWN event (`guest-shutdown`, `host-qmp-quit`, `host-signal`, `guest-panic`…). */
  shutdownReason?: string;
  /** The step of GoShip's stop that ended it (kind `stopped`). */
  step?: StopStepName;
  exitCode?: number;
  signal?: string;
  /** QEMU was killed by the memory limit of the VM's cgroup, this many bytes. */
  memoryLimit?: number;
  /** The last lines of `qemu.log`, when QEMU's own words may say why. */
  logTail?: string;
}

/** The VM's monitor process (one per running VM: QEMU's parent, holder of QMP and the agent session). */
export interface VmMonitor {
  pid: number;
  startedAt: Timestamp;
  /** It took over a QEMU whose first monitor had gone (it cannot wait for QEMU's exit status). */
  adopted?: boolean;
}

/** Restarts by the restart policy (`restart: on-crash`). */
export interface VmRestarts {
  count: number;
  lastAt?: Timestamp;
  /** The end that caused the last restart. */
  lastReason?: string;
}

/** Where a VM's files and sockets are (see `Layout`). */
export interface VmPaths {
  dir: string;
  overlay?: string;
  seed?: string;
  /** GoShip's QMP socket: the monitor's. */
  qmpSocket: string;
  /** The people's QMP socket. */
  qmpUserSocket: string;
  /** The agent's chardev: the monitor's. */
  agentSocket: string;
  /** The serial console's chardev: the monitor reads it into consoleLog. */
  consoleSocket: string;
  /** Where the monitor serves GoShip's clients. */
  monitorSocket: string;
  consoleLog: string;
  qemuLog: string;
  monitorLog: string;
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
  /** How the last run ended, with its evidence. */
  end?: VmEnd;
  /** Something the next command should tell the user (an interrupted create). */
  note?: string;
  /** The VM's monitor, while one runs. */
  monitor?: VmMonitor;
  restarts?: VmRestarts;
  /** Guest reboots its monitors followed (each starts a fresh QEMU). */
  reboots?: { count: number; lastAt?: Timestamp };
  /** The QEMU argv actually run. */
  argv?: string[];
  paths: VmPaths;
  /** The operation in progress, if any. */
  op?: PendingOp;
  /** What the guest agent said in its last hello. */
  agent?: VmAgentInfo;
  /** The resolved VM spec. Opaque to the store: it is kept, never interpreted. */
  config: Record<string, unknown>;
  /** The base image the VM's overlay was made on, as GoShip chose it: the only backing file its overlay may name. */
  base?: { path: string; format: string };
  /** The VM's jail (docs/security.md). */
  jail?: VmJail;
  /** Its memory and devices, saved by a suspend while its disk stood still: the next start restores them, once. */
  saved?: VmSaved;
  /** Internal snapshots of its disk (qcow2), by tag, as GoShip took them. */
  snapshots?: Record<string, VmSnapshot>;
}

/** An internal snapshot of a VM's disk (`project snapshot create`), with the guest's memory and devices when `memory`. */
export interface VmSnapshot {
  tag: string;
  createdAt: Timestamp;
  memory: boolean;
  /** How long taking it took. */
  ms: number;
}

/** A VM's saved state (`project suspend`): QEMU's migration stream in `file`, root's, 0600, in the VM's directory. */
export interface VmSaved {
  file: string;
  /** Its size as written: a file of another size is refused. */
  bytes: number;
  at: Timestamp;
  /** The argv it was saved from, its own paths as placeholders (runtime/templates.ts argvShape): a start with another argv refuses it. */
  argvShape: string[];
}

/** A VM's identity and limits, as its last start set them. */
export interface VmJail {
  /** QEMU's uid and gid (GoShip runs as root): the VM's own, from the jail's range. Absent: QEMU runs as GoShip's user. */
  uid?: number;
  gid?: number;
  /** The VM's cgroup: its version, directories and limits. */
  cgroup?: { version: 1 | 2; vmDirs: string[]; cpuWeight?: number; memoryBytes: number; cpuQuotaUs: number; cpuPeriodUs: number; pids: number };
  /** Why the VM has no cgroup (no limits). */
  noLimits?: string;
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

/** A port of an app: the host port (127.0.0.1, forwarded to the same guest port) → the program's port. */
export interface AppPortRecord {
  proto: 'tcp' | 'udp';
  host: number;
  container: number;
}

/** An app's spec as deployed: what the next deploy replaces and what listings compare Docker against. */
export interface AppSpecRecord {
  source: { kind: 'build'; dir: string } | { kind: 'archive'; file: string } | { kind: 'image'; ref: string } | { kind: 'binary'; file: string } | { kind: 'command' };
  ports: AppPortRecord[];
  env: string[];
  volumes: Array<{ name: string; path: string }>;
  restart: { name: 'no' | 'on-failure' | 'always' | 'unless-stopped'; maxRetries?: number };
  memoryBytes?: number;
  cpus?: number;
  cmd?: string[];
  workdir?: string;
  user?: string;
}

/** A workload inside a project's VM. Stored under `appKey(project, name)`. */
export interface App {
  project: string;
  name: string;
  kind: AppKind;
  /** The image deployed (`kind: 'container'`): its first tag, or its id. */
  image?: string;
  createdAt: Timestamp;
  updatedAt?: Timestamp;
  /** GoShip's intent: `deploying`, `deployed`, `stopped`. Docker (or systemd) says how it really runs. */
  state: string;
  /** Each deploy is one more generation; its container is `goship-APP-GEN`. */
  generation?: number;
  /** The container (or unit) of the deployed generation. */
  container?: string;
  spec?: AppSpecRecord;
  /** Why the last deploy failed (the version before runs on). */
  lastError?: string;
  op?: PendingOp;
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
