/** `accel: auto` (pure). */
import type { AccelChoice, HostReport } from './types.ts';

/** KVM when the probe says a normal guest can run under it; TCG otherwise, with the reason. */
export function chooseAccel(report: HostReport): AccelChoice {
  if (report.kvm.usable) return { accel: 'kvm', reason: `KVM is usable: ${report.kvm.reason}` };
  return { accel: 'tcg', reason: `KVM is not usable: ${report.kvm.reason}` };
}
