/**
 * Shapes of QMP messages and of the replies the typed wrappers return.
 * Reply objects keep QEMU's own field names (`frontend-open`, `cpu-index`):
 * they are what QEMU sent, typed, not renamed.
 */

/** `{"qemu": {"major", "minor", "micro"}, "package"}` as in the greeting and `query-version`. */
export interface QmpVersionInfo {
  qemu: { major: number; minor: number; micro: number };
  /** Distribution package string, e.g. `Debian 1:7.2+dfsg-7+deb12u18`. */
  package: string;
}

/** What QEMU announced in its greeting. */
export interface QmpGreeting {
  version: QmpVersionInfo;
  /** Capabilities offered (`oob`, …). */
  capabilities: string[];
}

/** An asynchronous QMP event, passed through as QEMU sent it. */
export interface QmpEvent<D extends Record<string, unknown> = Record<string, unknown>> {
  /** Event name: `SHUTDOWN`, `POWERDOWN`, `RESET`, `STOP`, `RESUME`, `GUEST_PANICKED`, `VSERPORT_CHANGE`… */
  event: string;
  /** The event's `data` member; `{}` when QEMU sent none (POWERDOWN, STOP, RESUME). */
  data: D;
  /** When QEMU emitted it (host clock). */
  timestamp: { seconds: number; microseconds: number };
}

/** QEMU's RunState. */
export type QmpRunState =
  | 'debug'
  | 'inmigrate'
  | 'internal-error'
  | 'io-error'
  | 'paused'
  | 'postmigrate'
  | 'prelaunch'
  | 'finish-migrate'
  | 'restore-vm'
  | 'running'
  | 'save-vm'
  | 'shutdown'
  | 'suspended'
  | 'watchdog'
  | 'guest-panicked'
  | 'colo';

/** Reply of `query-status`. */
export interface QmpStatusInfo {
  running: boolean;
  status: QmpRunState;
  /** Present up to QEMU 8.x. */
  singlestep?: boolean;
}

/** One entry of `query-block`. */
export interface QmpBlockInfo {
  device: string;
  qdev?: string;
  type?: string;
  removable: boolean;
  locked: boolean;
  'tray_open'?: boolean;
  'io-status'?: string;
  inserted?: Record<string, unknown>;
  [key: string]: unknown;
}

/** One entry of `query-chardev`. */
export interface QmpChardevInfo {
  label: string;
  filename: string;
  'frontend-open': boolean;
}

/** One entry of `query-cpus-fast`. */
export interface QmpCpuInfoFast {
  'cpu-index': number;
  'qom-path': string;
  'thread-id': number;
  target: string;
  props?: Record<string, unknown>;
  [key: string]: unknown;
}

/** `query-migrate`'s status (QAPI MigrationStatus). */
export type QmpMigrationStatus =
  | 'none'
  | 'setup'
  | 'cancelling'
  | 'cancelled'
  | 'active'
  | 'postcopy-active'
  | 'postcopy-paused'
  | 'postcopy-recover'
  | 'completed'
  | 'failed'
  | 'colo'
  | 'pre-switchover'
  | 'device'
  | 'wait-unplug';

/** A job of `query-jobs` (QAPI JobInfo). */
export interface QmpJobInfo {
  id: string;
  type: string;
  /** `created`, `running`, …, `concluded` (done, well or not), `null`. */
  status: string;
  'current-progress': number;
  'total-progress': number;
  /** Set once a job concluded with a failure. */
  error?: string;
}

/** What GoShip reads of `query-migrate` (QAPI MigrationInfo). */
export interface QmpMigrationInfo {
  status?: QmpMigrationStatus;
  /** Present once RAM moves: bytes sent or received, and the guest's RAM size. */
  ram?: { transferred: number; total: number; remaining: number; 'normal-bytes'?: number; duplicate?: number };
  'total-time'?: number;
  'error-desc'?: string;
}
