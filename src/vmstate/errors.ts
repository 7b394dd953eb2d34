/** Errors of a VM's saved state: it cannot be written, or a file is not a state QEMU can restore. */
import { GoshipError } from '../errors.ts';

export class VmStateError extends GoshipError {
  declare readonly code: 'EVMSTATE';

  constructor(message: string, options: { hint?: string; cause?: unknown } = {}) {
    super('EVMSTATE', message, options);
  }
}
