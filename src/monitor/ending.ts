/**
 * How a VM ended, decided from what the monitor saw, never from what the
 * guest wrote: QMP's SHUTDOWN event and its reason, GUEST_PANICKED, a burst
 * of guest resets, the step of GoShip's own stop that was running, and the
 * exit status or signal of QEMU (known when QEMU is the monitor's child).
 * Pure: evidence in, a record out.
 */
import type { EndKind, StopStepName, VmEnd } from '../store/index.ts';

export type { EndKind, VmEnd };

/** What a monitor saw of one run of QEMU. */
export interface EndEvidence {
  at: string;
  /** The reason of the SHUTDOWN event, if one came (`guest-shutdown`, `host-qmp-quit`, `host-signal`, `guest-panic`, …). */
  shutdownReason?: string;
  /** A GUEST_PANICKED event came. */
  panicked?: boolean;
  /** The monitor stopped the guest because it kept resetting. */
  resetLoop?: { resets: number; withinMs: number };
  /** GoShip's own stop was running: the step it was at when QEMU went. */
  stopStep?: StopStepName;
  /** QEMU's exit, when QEMU was the monitor's child (an adopted QEMU cannot be waited for). */
  exit?: { code: number | null; signal: string | null };
  /** The kernel's OOM killer killed in the VM's memory cgroup during this run: its limit, in bytes. */
  memoryLimit?: number;
  /** The end of qemu.log. */
  logTail: string;
}

/** Kinds after which the VM is `crashed` rather than `stopped`. */
export const CRASH_KINDS: ReadonlySet<EndKind> = new Set(['panic', 'reset-loop', 'crashed', 'lost']);

/** Kinds a `restart: on-crash` VM is started again after (a reset loop is not: it would loop). */
export const RESTARTABLE_KINDS: ReadonlySet<EndKind> = new Set(['panic', 'crashed']);

function lastLine(text: string): string {
  return text.trim().split('\n').at(-1)?.trim() ?? '';
}

/** SHUTDOWN reasons of a reset that `-no-reboot` turned into an exit: the guest's own, or `system_reset` over QMP. */
export const REBOOT_REASONS: ReadonlySet<string> = new Set(['guest-reset', 'host-qmp-system-reset']);

/** What the monitor does once a QEMU has ended: start it again at once (a reboot), after a backoff (the restart policy), or end. */
export type AfterEnd = 'reboot' | 'restart' | 'final';

/** Pure: the next step after `end`. A stop GoShip asked for always ends the VM. */
export function afterEnd(end: Pick<VmEnd, 'kind'>, opts: { restart: 'no' | 'on-crash'; stopRequested: boolean }): AfterEnd {
  if (opts.stopRequested) return 'final';
  if (end.kind === 'reboot') return 'reboot';
  if (opts.restart === 'on-crash' && RESTARTABLE_KINDS.has(end.kind)) return 'restart';
  return 'final';
}

/** Pure: the evidence → how the VM ended. */
export function classifyEnd(e: EndEvidence): VmEnd {
  const exit: Pick<VmEnd, 'exitCode' | 'signal'> = {};
  if (e.exit?.code !== undefined && e.exit.code !== null) exit.exitCode = e.exit.code;
  if (e.exit?.signal) exit.signal = e.exit.signal;
  const reason = e.shutdownReason === undefined ? {} : { shutdownReason: e.shutdownReason };
  const base = { at: e.at, ...reason, ...exit };
  if (e.stopStep !== undefined) {
    return { ...base, kind: 'stopped', step: e.stopStep, summary: `stopped by GoShip (${e.stopStep})` };
  }
  if (e.resetLoop) {
    const s = Math.round(e.resetLoop.withinMs / 1000);
    return { ...base, kind: 'reset-loop', summary: `the guest reset ${e.resetLoop.resets} times within ${s} s; the monitor stopped it`, logTail: e.logTail };
  }
  if (e.panicked || e.shutdownReason === 'guest-panic') {
    return { ...base, kind: 'panic', summary: 'the guest kernel panicked (GUEST_PANICKED)', logTail: e.logTail };
  }
  if (e.shutdownReason !== undefined && REBOOT_REASONS.has(e.shutdownReason)) {
    const who = e.shutdownReason === 'guest-reset' ? 'the guest rebooted' : 'QEMU was reset over QMP (system_reset)';
    return { ...base, kind: 'reboot', summary: `${who}; its monitor starts QEMU again` };
  }
  switch (e.shutdownReason) {
    case undefined:
      break;
    case 'guest-shutdown':
      return { ...base, kind: 'poweroff', summary: 'the guest powered itself off' };
    case 'host-signal':
      return { ...base, kind: 'killed', summary: 'QEMU was asked to end by a signal from outside GoShip (SHUTDOWN host-signal)' };
    case 'host-qmp-quit':
      return { ...base, kind: 'quit', summary: 'QEMU was told to quit over QMP, not by GoShip' };
    default:
      return { ...base, kind: 'quit', summary: `QEMU shut down (SHUTDOWN ${e.shutdownReason})` };
  }
  if (e.exit === undefined) {
    return { ...base, kind: 'lost', summary: 'QEMU is gone and no monitor saw how it ended', logTail: e.logTail };
  }
  const words = lastLine(e.logTail);
  const tail = words ? `: ${words}` : '';
  if (e.exit.signal === 'SIGKILL' && e.memoryLimit !== undefined) {
    const mib = Math.round(e.memoryLimit / (1024 * 1024));
    return { ...base, kind: 'crashed', memoryLimit: e.memoryLimit, summary: `QEMU was killed by the memory limit of its cgroup (${mib} MiB: the guest's memory and QEMU's overhead)`, logTail: e.logTail };
  }
  if (e.exit.signal) return { ...base, kind: 'crashed', summary: `QEMU was killed by ${e.exit.signal}${tail}`, logTail: e.logTail };
  return { ...base, kind: 'crashed', summary: `QEMU exited with code ${e.exit.code ?? '?'} without shutting down${tail}`, logTail: e.logTail };
}
