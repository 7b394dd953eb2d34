/**
 * pidAlive on real processes: a live one, one that is gone, and a zombie (an
 * exited child its parent never reaps), which must count as gone.
 */
import { spawn } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { expect, it } from 'vitest';
import { pidAlive, statState } from '../../src/proc.ts';

it('a live process is alive; a reaped one is not', async () => {
  const child = spawn('sleep', ['5'], { stdio: 'ignore' });
  await new Promise((r) => child.once('spawn', r));
  expect(pidAlive(child.pid!)).toBe(true);
  child.kill('SIGKILL');
  await new Promise((r) => child.once('exit', r));
  expect(pidAlive(child.pid!)).toBe(false);
});

it('a zombie is gone, although kill(pid, 0) still succeeds on it', async () => {
  // The shell starts a short sleep in the background and becomes `sleep 5`, which never reaps it:
  // once the short one exits (after the exec), it stays a zombie.
  const parent = spawn('sh', ['-c', 'sleep 0.3 & echo $!; exec sleep 5'], { stdio: ['ignore', 'pipe', 'ignore'] });
  const pid = Number((await new Promise<Buffer>((r) => parent.stdout.once('data', r))).toString().trim());
  let state: string | undefined;
  for (let i = 0; i < 200 && state !== 'Z'; i++) {
    state = statState(await readFile(`/proc/${pid}/stat`, 'latin1'));
    if (state !== 'Z') await new Promise((r) => setTimeout(r, 10));
  }
  expect(state).toBe('Z');
  expect(() => process.kill(pid, 0)).not.toThrow();
  expect(pidAlive(pid)).toBe(false);
  parent.kill('SIGKILL');
});

it('refuses PIDs that cannot be processes', () => {
  expect(pidAlive(0)).toBe(false);
  expect(pidAlive(-1)).toBe(false);
  expect(pidAlive(1.5)).toBe(false);
});
