/**
 * Where the monitor decides what to do next, above all after QEMU exits: its
 * phases as a union and one pure transition function (tested by table). The
 * monitor (keeper.ts) runs each phase's effects and feeds back what happened;
 * how an end is classified is ending.ts.
 *
 *   starting(first) ──started──▶ running ◀──started── starting(reboot|restart)
 *   adopting ─────────started──▶    │
 *                                   │ QEMU ended: afterEnd(end)
 *             ┌──── final ──────────┼──── reboot ──▶ starting(reboot)
 *             ▼                     └──── restart ─▶ backoff ──over──▶ starting(restart)
 *           ended ◀── a stop asked for during the backoff; a reboot or restart that fails to start
 *           failed ◀── the first start (or the adoption) fails: the starter is told why
 */
import type { RestartPolicy } from '../qemu/index.ts';
import { afterEnd, type VmEnd } from './ending.ts';

/** Why a first start or an adoption failed, as the starter is told (a GoshipError's fields and facts). */
export interface StartFailure {
  code: string;
  message: string;
  hint?: string;
  extra?: Record<string, unknown>;
}

export type Phase =
  /** QEMU being started: the VM's first, after a guest reboot, or after a crash (on-crash policy). */
  | { name: 'starting'; cause: 'first' | 'reboot' | 'restart' }
  /** Taking over a QEMU whose monitor died. */
  | { name: 'adopting' }
  /** QEMU runs; the monitor waits for its end. */
  | { name: 'running' }
  /** QEMU crashed and the policy restarts it: `end` is recorded, then a delay that grows with quick crashes. */
  | { name: 'backoff'; end: VmEnd }
  /** The VM's end for good: recorded, then the monitor exits with `exitCode`. */
  | { name: 'ended'; end: VmEnd; exitCode: 0 | 1 }
  /** The first start or the adoption failed: the starter gets the failure, the monitor exits 1. */
  | { name: 'failed'; failure: StartFailure };

export type Happening =
  | { what: 'started' }
  | { what: 'start-failed'; failure: StartFailure }
  | { what: 'qemu-ended'; end: VmEnd }
  | { what: 'backoff-over' };

export interface LifecycleContext {
  restart: RestartPolicy;
  /** A stop was asked for (monitor.stop). */
  stopRequested: boolean;
  /** Now (ISO), for an end this decides itself. */
  at: string;
}

/** The phases that end the monitor. */
export const FINAL_PHASES = new Set<Phase['name']>(['ended', 'failed']);

/** Pure: the phase after `happened` in `phase`. A happening a phase cannot see is a bug (throws). */
export function nextPhase(phase: Phase, happened: Happening, c: LifecycleContext): Phase {
  const unexpected = (): never => {
    throw new Error(`monitor lifecycle: ${happened.what} cannot happen while ${phase.name}`);
  };
  switch (phase.name) {
    case 'starting':
    case 'adopting':
      if (happened.what === 'started') return { name: 'running' };
      if (happened.what !== 'start-failed') return unexpected();
      if (phase.name === 'adopting' || phase.cause === 'first') return { name: 'failed', failure: happened.failure };
      return {
        name: 'ended',
        exitCode: 1,
        end: {
          at: c.at,
          kind: 'crashed',
          summary: phase.cause === 'reboot' ? `the guest rebooted and QEMU did not start again: ${happened.failure.message}` : `restart failed: ${happened.failure.message}`,
        },
      };
    case 'running': {
      if (happened.what !== 'qemu-ended') return unexpected();
      const after = afterEnd(happened.end, { restart: c.restart, stopRequested: c.stopRequested });
      if (after === 'reboot') return { name: 'starting', cause: 'reboot' };
      if (after === 'restart') return { name: 'backoff', end: happened.end };
      return { name: 'ended', end: happened.end, exitCode: 0 };
    }
    case 'backoff':
      if (happened.what !== 'backoff-over') return unexpected();
      if (c.stopRequested) return { name: 'ended', exitCode: 0, end: { at: c.at, kind: 'stopped', summary: 'stopped by GoShip while waiting to restart' } };
      return { name: 'starting', cause: 'restart' };
    case 'ended':
    case 'failed':
      return unexpected();
  }
}
