/**
 * Stop escalation: graceful first, then harder, each step after a timeout.
 * agent `shutdown` → ACPI `system_powerdown` → QMP `quit` → SIGTERM → SIGKILL.
 */
import { GoshipError } from '../errors.ts';
import type { StopStepName } from '../store/index.ts';

export type { StopStepName };

export interface StopStep {
  name: StopStepName;
  /** Asks for the stop. A step that cannot be tried (no agent, QMP unreachable) throws and the next one runs at once. */
  request: () => Promise<void>;
  /** How long to wait for the process to go after the request. */
  waitMs: number;
  /**
   * Repeat the request this often while waiting. A guest still booting can
   * miss one ACPI power-button event (its handler not listening yet).
   */
  repeatMs?: number;
}

export interface EscalationResult {
  /** The step after which the process was gone; 'already' when it was gone before any step. */
  endedBy: StopStepName | 'already';
  /** What each step did, for `--json` and logs. */
  attempts: { step: StopStepName; outcome: 'ended' | 'timeout' | 'unavailable'; detail?: string }[];
}

/**
 * Runs the steps in order until `gone(waitMs)` says the process has exited.
 * `gone` must resolve true as soon as the process is gone, false after waitMs.
 */
export async function escalate(
  steps: readonly StopStep[],
  gone: (waitMs: number) => Promise<boolean>,
): Promise<EscalationResult> {
  const attempts: EscalationResult['attempts'] = [];
  if (await gone(0)) return { endedBy: 'already', attempts };
  for (const step of steps) {
    try {
      await step.request();
    } catch (err) {
      attempts.push({ step: step.name, outcome: 'unavailable', detail: err instanceof Error ? err.message : String(err) });
      if (await gone(0)) return { endedBy: step.name, attempts };
      continue;
    }
    if (await waitRepeating(step, gone)) {
      attempts.push({ step: step.name, outcome: 'ended' });
      return { endedBy: step.name, attempts };
    }
    attempts.push({ step: step.name, outcome: 'timeout' });
  }
  throw new GoshipError('ESTOP', `the process is still running after ${attempts.map((a) => a.step).join(', ')}`, {
    hint: 'look for it with ps; a process in uninterruptible sleep (state D) cannot be killed until its I/O ends',
  });
}

/** Waits up to step.waitMs, re-sending the request every repeatMs (errors of a repeat are ignored). */
async function waitRepeating(step: StopStep, gone: (waitMs: number) => Promise<boolean>): Promise<boolean> {
  if (!step.repeatMs || step.repeatMs >= step.waitMs) return gone(step.waitMs);
  const deadline = Date.now() + step.waitMs;
  for (;;) {
    const left = deadline - Date.now();
    if (await gone(Math.max(0, Math.min(step.repeatMs, left)))) return true;
    if (Date.now() >= deadline) return false;
    await step.request().catch(() => undefined);
  }
}
