// The store under real concurrent processes: each worker is a separate `node`
// running test/helpers/store-worker.mjs against src/store bundled by esbuild.
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { build } from 'esbuild';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { DEFAULT_LOCK_TIMINGS, Store } from '../../src/store/index.ts';
import type { State } from '../../src/store/index.ts';

const WORKER = resolve('test/helpers/store-worker.mjs');
const REQUIRE_SHIM = "import { createRequire as __goshipCreateRequire } from 'node:module'; const require = __goshipCreateRequire(import.meta.url);";

let tmp: string;
let bundle: string;
let stateFile: string;
const children = new Set<ChildProcess>();

beforeAll(async () => {
  tmp = await mkdtemp(join(tmpdir(), 'goship-store-conc-'));
  bundle = join(tmp, 'store.mjs');
  await build({
    entryPoints: ['src/store/index.ts'],
    bundle: true,
    platform: 'node',
    format: 'esm',
    target: 'node20',
    outfile: bundle,
    banner: { js: REQUIRE_SHIM },
    logLevel: 'warning',
  });
});

afterAll(async () => {
  for (const child of children) child.kill('SIGKILL');
  await rm(tmp, { recursive: true, force: true });
});

let caseNo = 0;
beforeEach(() => {
  stateFile = join(tmp, `home-${++caseNo}`, 'state.json');
});

interface Outcome {
  child: ChildProcess;
  done: Promise<{ code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string }>;
}

function startWorker(mode: string, params: object): Outcome {
  const child = spawn(process.execPath, [WORKER, bundle, stateFile, mode, JSON.stringify(params)], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.add(child);
  let stdout = '';
  let stderr = '';
  child.stdout?.on('data', (b: Buffer) => (stdout += b.toString()));
  child.stderr?.on('data', (b: Buffer) => (stderr += b.toString()));
  const done = new Promise<{ code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string }>((res) => {
    child.on('close', (code, signal) => {
      children.delete(child);
      res({ code, signal, stdout, stderr });
    });
  });
  return { child, done };
}

async function runWorker(mode: string, params: object): Promise<Record<string, unknown>> {
  const { code, stdout, stderr } = await startWorker(mode, params).done;
  expect(stderr).toBe('');
  expect(code).toBe(0);
  return JSON.parse(stdout) as Record<string, unknown>;
}

async function readValid(): Promise<State> {
  const text = await readFile(stateFile, 'utf8');
  return JSON.parse(text) as State; // throws on invalid JSON
}

async function waitFor(path: string, timeoutMs: number): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (!existsSync(path)) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${path}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe('store under concurrent processes', () => {
  it('20 processes × 50 read-modify-write updates lose nothing', { timeout: 120_000 }, async () => {
    const WORKERS = 20;
    const N = 50;
    const stopFile = join(tmp, `stop-${caseNo}`);
    const reader = runWorker('read', { stopFile });
    const results = await Promise.all(Array.from({ length: WORKERS }, (_, worker) => runWorker('count', { worker, n: N })));
    expect(results).toEqual(Array.from({ length: WORKERS }, () => ({ ok: true })));
    await writeFile(stopFile, '');
    // A reader without the lock saw only whole snapshots, each consistent, the counter never going back.
    const seen = await reader;
    expect(seen).toMatchObject({ ok: true, last: WORKERS * N });
    expect(seen.reads).toBeGreaterThan(10);

    const state = await readValid();
    expect(state.vms.counter?.config.count).toBe(WORKERS * N);
    const expected = Array.from({ length: WORKERS }, (_, w) => Array.from({ length: N }, (_, i) => `w${w}-${i}`)).flat();
    expect(Object.keys(state.images).sort()).toEqual(expected.sort());
    // The store reads it back as a valid state, and no temporary file or lock is left behind.
    expect(await (await Store.openFile(stateFile)).read()).toEqual(state);
    expect(await readdir(join(stateFile, '..'))).toEqual(['state.json']);
  });

  it('two processes creating the same project at once: exactly one wins, the other gets EEXIST', async () => {
    for (let round = 0; round < 3; round++) {
      const startAt = Date.now() + 400;
      const name = `web${round}`;
      const [a, b] = await Promise.all([runWorker('create', { name, startAt }), runWorker('create', { name, startAt })]);
      const winners = [a, b].filter((r) => r.ok === true);
      const losers = [a, b].filter((r) => r.ok === false);
      expect(winners).toHaveLength(1);
      expect(losers).toHaveLength(1);
      expect(losers[0]).toMatchObject({ code: 'EEXIST', message: `project ${name} already exists` });
      const state = await readValid();
      expect(state.projects[name]?.vmId).toBe(`vm-${winners[0]?.pid}`);
    }
  });

  it('a writer gives up with ESTORE_LOCK after lockWaitMs while a live process holds the lock', async () => {
    const marker = join(tmp, `held-${caseNo}`);
    const holder = startWorker('hold', { marker });
    try {
      await waitFor(marker, 10_000);
      const t0 = Date.now();
      const result = await runWorker('count', { worker: 0, n: 1, options: { lockWaitMs: 800 } });
      expect(Date.now() - t0).toBeGreaterThanOrEqual(800);
      expect(result).toEqual({
        ok: false,
        code: 'ESTORE_LOCK',
        message: `cannot lock ${stateFile}: another GoShip process held ${stateFile}.lock for more than 800 ms`,
        hint: 'Wait for the other goshipctl to finish. A lock left by a killed process is taken over after 5000 ms.',
      });
    } finally {
      holder.child.kill('SIGKILL');
      await holder.done;
    }
  });

  it('a holder killed with SIGKILL inside update(): the next process gets the lock after the stale period, the file is intact', { timeout: 30_000 }, async () => {
    await runWorker('count', { worker: 0, n: 3 });
    const before = await readFile(stateFile);
    const staleMs = DEFAULT_LOCK_TIMINGS.staleMs; // what ships, not a test-only value

    const marker = join(tmp, `held-${caseNo}`);
    const holder = startWorker('hold', { marker });
    await waitFor(marker, 10_000);
    expect((await stat(`${stateFile}.lock`)).isDirectory()).toBe(true);
    holder.child.kill('SIGKILL');
    expect((await holder.done).signal).toBe('SIGKILL');
    // The lock outlives its holder: SIGKILL runs no exit handler.
    expect(existsSync(`${stateFile}.lock`)).toBe(true);
    expect(await readFile(stateFile)).toEqual(before);
    const lastRefresh = (await stat(`${stateFile}.lock`)).mtimeMs;

    expect(await runWorker('count', { worker: 1, n: 1 })).toEqual({ ok: true });
    // Taken over once stale, not before.
    expect(Date.now()).toBeGreaterThanOrEqual(lastRefresh + staleMs);

    const state = await readValid();
    expect(state.vms.counter?.config.count).toBe(4);
    expect(state.nodes.held).toBeUndefined(); // the killed holder's change never landed
    expect(Object.keys(state.images).sort()).toEqual(['w0-0', 'w0-1', 'w0-2', 'w1-0']);
    expect(existsSync(`${stateFile}.lock`)).toBe(false);
  });
});
