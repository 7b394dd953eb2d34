/**
 * The monitor's `monitor.wait` deadline fires although the heap is collected
 * while it runs: a wait that outlived its deadline once made `vm exec
 * --agent-timeout 3` fail on the client's own timeout instead.
 */
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { expect, it } from 'vitest';
import { withDeadline } from '../../src/monitor/deadline.ts';

setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

it('aborts at the deadline with its reason after garbage collections, and not before', async () => {
  const outer = new AbortController();
  const d = withDeadline(outer.signal, 300, () => new Error('deadline passed'));
  const fired = new Promise<unknown>((r) => d.signal.addEventListener('abort', () => r(d.signal.reason), { once: true }));
  gc();
  await sleep(100);
  gc();
  expect(d.signal.aborted).toBe(false);
  expect(((await fired) as Error).message).toBe('deadline passed');
});

it("aborts at once with the outer signal's reason; clear() stops the timer", async () => {
  const outer = new AbortController();
  const d = withDeadline(outer.signal, 60_000, () => new Error('deadline passed'));
  outer.abort(new Error('client left'));
  expect((d.signal.reason as Error).message).toBe('client left');
  const kept = withDeadline(new AbortController().signal, 50, () => new Error('deadline passed'));
  kept.clear();
  await sleep(150);
  expect(kept.signal.aborted).toBe(false);
});
