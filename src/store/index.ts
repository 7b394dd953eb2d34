// The state store: domain types and the JSON state file under a cross-process lock.
export { Store } from './store.ts';
export type { StoreOptions } from './store.ts';
export { DEFAULT_LOCK_TIMINGS } from './lock.ts';
export type { LockTimings } from './lock.ts';
export { assertNameFree, requireRecord, findRecord, ensureLocalNode } from './invariants.ts';
export {
  StoreCorruptError,
  StoreVersionError,
  StoreLockError,
  StoreInvalidError,
  NameTakenError,
  NotFoundError,
} from './errors.ts';
export { MIGRATIONS } from './migrations.ts';
export type { Migration } from './migrations.ts';
export { checkState } from './schema.ts';
export { decodeState, type Decoded } from './decode.ts';
export {
  SCHEMA_VERSION,
  LOCAL_NODE,
  COLLECTIONS,
  OP_KINDS,
  PROJECT_STATES,
  VM_STATES,
  IMAGE_KINDS,
  APP_KINDS,
  END_KINDS,
  STOP_STEPS,
  emptyState,
  appKey,
} from './types.ts';
export type {
  State,
  Node,
  NodeReport,
  Project,
  ProjectSpec,
  SharedFolder,
  ProjectState,
  PortForward,
  Vm,
  VmState,
  VmEnd,
  VmSaved,
  VmSnapshot,
  EndKind,
  StopStepName,
  VmMonitor,
  VmRestarts,
  VmPaths,
  Image,
  ImageKind,
  App,
  AppKind,
  AppSpecRecord,
  AppPortRecord,
  RecordKind,
  RecordOf,
  Timestamp,
  PendingOp,
  VmAgentInfo,
  VmJail,
} from './types.ts';
