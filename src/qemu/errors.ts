/**
 * Every error src/qemu raises: the QEMU binary, qemu-img, option encoding,
 * spec files and QEMU processes. Messages read "<what failed>: <why>"; `hint`
 * is the fix.
 */
import { GoshipError, type ErrorCode } from '../errors.ts';

export type QemuErrorCode = Extract<
  ErrorCode,
  'EQEMU_MISSING' | 'EQEMU_VERSION' | 'EQEMU_START' | 'EQEMU_EXIT' | 'EQEMU_OPTS' | 'EQEMU_IMG' | 'EIMAGE_FORMAT' | 'EIMAGE_MISSING' | 'EPARSE' | 'EREAD' | 'EINVALID'
>;

export class QemuError extends GoshipError {
  declare readonly code: QemuErrorCode;

  constructor(code: QemuErrorCode, message: string, options: { hint?: string; cause?: unknown } = {}) {
    super(code, message, options);
  }
}

/** QEMU exited while it was being started: its exit status, the end of its log and the argv it ran. */
export class QemuExitError extends QemuError {
  constructor(
    readonly exitCode: number | null,
    readonly signal: string | null,
    readonly logTail: string,
    readonly argv: readonly string[],
    logPath: string,
  ) {
    const how = signal ? `was killed by ${signal}` : `exited with code ${exitCode}`;
    const tail = logTail ? `: ${logTail.split('\n').slice(-3).join(' | ')}` : '';
    super('EQEMU_EXIT', `QEMU ${how} during start${tail}`, { hint: `read ${logPath}; the argv is in the VM's argv.json` });
  }
}
