import { describe, expect, it } from 'vitest';
import { escalate, type StopStep } from '../../src/monitor/escalate.ts';

/** A fake process that goes away after `goneAfter` requests of the named step. */
function world(goneOn: string | undefined, afterRequests = 1) {
  const log: string[] = [];
  let alive = true;
  const counts = new Map<string, number>();
  const step = (name: StopStep['name'], extra: Partial<StopStep> = {}): StopStep => ({
    name,
    waitMs: 50,
    request: async () => {
      log.push(name);
      counts.set(name, (counts.get(name) ?? 0) + 1);
      if (name === goneOn && counts.get(name)! >= afterRequests) alive = false;
    },
    ...extra,
  });
  const gone = async (ms: number) => {
    if (!alive) return true;
    await new Promise((r) => setTimeout(r, Math.min(ms, 5)));
    return !alive;
  };
  return { log, step, gone };
}

describe('escalate', () => {
  it('stops at the first step after which the process is gone, and reports each step', async () => {
    const w = world('quit');
    const r = await escalate([w.step('acpi'), w.step('quit'), w.step('sigterm')], w.gone);
    expect(r).toEqual({ endedBy: 'quit', attempts: [{ step: 'acpi', outcome: 'timeout' }, { step: 'quit', outcome: 'ended' }] });
    expect(w.log).toEqual(['acpi', 'quit']);
  });

  it('moves on at once past a step that cannot be tried', async () => {
    const w = world('acpi');
    const failing: StopStep = { name: 'agent', waitMs: 10_000, request: async () => Promise.reject(new Error('no agent answered')) };
    const r = await escalate([failing, w.step('acpi')], w.gone);
    expect(r.attempts).toEqual([{ step: 'agent', outcome: 'unavailable', detail: 'no agent answered' }, { step: 'acpi', outcome: 'ended' }]);
  });

  it('repeats a request while waiting when asked to (a guest can miss the first power-button press)', async () => {
    const w = world('acpi', 3);
    const r = await escalate([w.step('acpi', { waitMs: 1000, repeatMs: 20 }), w.step('quit')], w.gone);
    expect(r.endedBy).toBe('acpi');
    expect(w.log).toEqual(['acpi', 'acpi', 'acpi']);
  });

  it("reports 'already' for a process gone before any step", async () => {
    const w = world(undefined);
    const r = await escalate([w.step('acpi')], async () => true);
    expect(r).toEqual({ endedBy: 'already', attempts: [] });
    expect(w.log).toEqual([]);
  });

  it('throws when the process survives every step', async () => {
    const w = world(undefined);
    await expect(escalate([w.step('quit'), w.step('sigkill')], w.gone)).rejects.toMatchObject({
      code: 'ESTOP',
      message: 'the process is still running after quit, sigkill',
    });
  });
});
