/** Errors of the host probe. The probe itself never throws for what it finds on a host; these are misuse. */
import { GoshipError } from '../errors.ts';

/** A fixture reader was pointed at something that is not a fixture. */
export class HostFixtureError extends GoshipError {
  readonly root: string;

  constructor(root: string, why: string) {
    super('EHOSTFIXTURE', `host fixture ${root}: ${why}`, {
      hint: 'point it at a directory laid out like / (proc/cpuinfo, sys/devices/system/cpu/…)',
    });
    this.root = root;
  }
}
