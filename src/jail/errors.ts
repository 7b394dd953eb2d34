/** Errors the jail raises: a VM file that is not what GoShip made, a run directory not the user's own, a path QEMU's identity cannot reach. */
import { GoshipError } from '../errors.ts';

export class JailError extends GoshipError {
  declare readonly code: 'EJAIL';

  constructor(message: string, options: { hint?: string; cause?: unknown } = {}) {
    super('EJAIL', message, options);
  }
}
