/** Errors the runtime raises itself: records in the wrong state, busy records, bad requests. */
import { GoshipError, type ErrorCode, type Issue } from '../errors.ts';
import type { PendingOp } from '../store/index.ts';

export type RuntimeErrorCode = Extract<ErrorCode, 'ESTATE' | 'EINVALID' | 'ENOTSUP' | 'EPORT_TAKEN' | 'EIMAGE_MISSING' | 'EMONITOR' | 'ENOTFOUND' | 'EAPP_START' | 'EAGENT_TIMEOUT' | 'EAGENT_RUNTIME' | 'EAGENT_BUNDLE' | 'EGUEST' | 'EGUEST_BOOT' | 'EJAIL' | 'ESTOP' | 'ENODE_UNREACHABLE' | 'ENODE_VERSION' | 'EEXIST' | 'EREAD'>;

export class RuntimeError extends GoshipError {
  declare readonly code: RuntimeErrorCode;

  constructor(code: RuntimeErrorCode, message: string, options: { hint?: string; cause?: unknown } = {}) {
    super(code, message, options);
  }
}

/** The VM or project is in the wrong state for the command (exit code 4). */
export function stateError(message: string, hint?: string): RuntimeError {
  return new RuntimeError('ESTATE', message, hint === undefined ? {} : { hint });
}

/** Another goshipctl is carrying out an operation on the record. */
export function busyError(what: string, op: PendingOp, hint?: string): RuntimeError {
  return stateError(`${what} is busy: goshipctl (pid ${op.pid}) is running ${op.kind} on it`, hint);
}

/** Host ports that another project, VM or program has (exit code 4). */
export class PortTakenError extends RuntimeError {
  readonly issues: Issue[];

  constructor(issues: Issue[]) {
    super('EPORT_TAKEN', `host port taken: ${issues.map((i) => i.message).join('; ')}`, { hint: 'pick another host port; goshipctl project list shows which project forwards what' });
    this.issues = issues;
  }
}
