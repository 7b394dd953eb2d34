// Shared pieces of the benchmarks: timing, medians, a plain-QEMU baseline runner.
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { chmod, mkdtemp, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

export const now = () => Number(process.hrtime.bigint()) / 1e6; // ms

export function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

export function fmt(ms) {
  return ms >= 1000 ? `${(ms / 1000).toFixed(2)} s` : `${ms.toFixed(1)} ms`;
}

/** Prints one comparison row and returns it for --json. */
export function report(rows) {
  const w = Math.max(...rows.map((r) => r.what.length));
  for (const r of rows) {
    const ratio = r.baseline ? ` ratio ${(r.goship / r.baseline).toFixed(2)}×` : '';
    const target = r.target ? `  target ${r.target}` : '';
    console.log(`${r.what.padEnd(w)}  goship ${fmt(r.goship).padStart(9)}${r.baseline ? `  baseline ${fmt(r.baseline).padStart(9)}` : ''}${ratio}${target}`);
  }
}

export async function tempEnv(prefix) {
  const root = await mkdtemp(join('/tmp', `${prefix}-`));
  await chmod(root, 0o711); // QEMU (the VM's own identity, when root) passes through to GOSHIP_HOME
  return {
    root,
    env: { ...process.env, GOSHIP_HOME: join(root, 'h'), GOSHIP_RUN: join(root, 'r'), NO_COLOR: '1' },
    cleanup: () => rm(root, { recursive: true, force: true }),
  };
}

export { testCacheBase } from '../dist/test-support.mjs';
import { openToQemu, testCacheBase } from '../dist/test-support.mjs';

/** The test cache the benchmarks share with the tests (test/support/cache.ts). */
export function cacheDir(kind) {
  return join(testCacheBase(), kind);
}

/** The test cache's directories let QEMU's user (the VM's own identity, when root) reach `path`. */
export const openCached = (path) => openToQemu(path);

export async function waitForFile(path, timeoutMs = 10_000) {
  const deadline = Date.now() + timeoutMs;
  while (!existsSync(path)) {
    if (Date.now() > deadline) throw new Error(`${path} did not appear`);
    await sleep(1);
  }
}

/** Spawns argv (plain QEMU, no GoShip); returns the child and an exit promise. */
export function spawnPlain(argv) {
  const child = spawn(argv[0], argv.slice(1), { stdio: 'ignore' });
  const exited = new Promise((r) => child.once('exit', r));
  return { child, exited };
}

/**
 * The baseline of a boot: plain QEMU running the argv of project NAME (made
 * `--no-start` by GoShip, with its fresh overlay and seed, not timed), from
 * its spawn to the agent's first answer (its start-up hello, then a sync
 * answered, by GoShip's own agent client): the milestone of `--wait agent`. Ms; the
 * project is deleted after.
 */
export async function plainBootToAgent(rt, goshipctl, name, createArgs = []) {
  const { AgentClient, QmpClient } = await import('../dist/lib.mjs');
  goshipctl('project', 'create', name, ...createArgs, '--no-start');
  const vm = await rt.vms.get(name);
  const argv = await rt.vms.argvFor(vm.config);
  mkdirSync(dirname(vm.paths.qmpSocket), { recursive: true, mode: 0o700 });
  const t0 = now();
  const { child, exited } = spawnPlain(argv);
  try {
    await waitForFile(vm.paths.qmpSocket);
    let q;
    for (;;) {
      try {
        q = await QmpClient.connect(vm.paths.qmpSocket, { timeoutMs: 5000 });
        break;
      } catch {
        await sleep(5);
      }
    }
    await q.cont();
    await q.close();
    // The agent's first answer (its start-up hello, then our sync answered): what `--wait agent` waits for.
    const agent = await AgentClient.connect(vm.paths.agentSocket, { timeoutMs: 240_000 });
    const ms = now() - t0;
    await agent.close();
    return ms;
  } finally {
    child.kill('SIGKILL');
    await exited;
    goshipctl('project', 'delete', name, '--force');
  }
}

/**
 * The default image (built by GoShip's own builder, cached with the tests'),
 * opened to QEMU's user, and a private environment whose `images/default` links
 * it: what every benchmark on the real Debian image starts from.
 */
export async function imageEnv(prefix) {
  const { buildImage, Layout } = await import('../dist/lib.mjs');
  const { mkdirSync, symlinkSync } = await import('node:fs');
  const agentBundle = new URL('../dist/goship-agent.mjs', import.meta.url).pathname;
  const image = await buildImage({ name: 'default', agentBundle, imagesDir: cacheDir('images'), debCacheDir: cacheDir('debs'), bootProbe: true });
  await openCached(image.dir);
  const t = await tempEnv(prefix);
  const layout = new Layout(t.env.GOSHIP_HOME, t.env.GOSHIP_RUN);
  mkdirSync(layout.imagesDir, { recursive: true, mode: 0o700 });
  symlinkSync(image.dir, layout.imageDir('default'));
  return { ...t, image, layout };
}

/** Runs goshipctl as a whole process; its stdout (throws with its stderr on failure). */
export function goshipctl(env, ...args) {
  const cli = new URL('../bin/goshipctl.cjs', import.meta.url).pathname;
  const r = spawnSync(process.execPath, [cli, ...args], { env, encoding: 'utf8', maxBuffer: 256 * 1024 * 1024 });
  if (r.status !== 0) throw new Error(`goshipctl ${args.join(' ')} failed (${r.status}): ${r.stderr}`);
  return r.stdout;
}

/** goshipctl with --json as whole processes in `env`: `json` parses its output, `timed` also times it. */
export function jsonCli(env) {
  const cli = new URL('../bin/goshipctl.cjs', import.meta.url).pathname;
  // --json before a `--`: what follows it is the guest's command.
  const withJson = (args) => (args.includes('--') ? [...args.slice(0, args.indexOf('--')), '--json', ...args.slice(args.indexOf('--'))] : [...args, '--json']);
  const json = (...args) => JSON.parse(goshipctl(env, ...withJson(args)));
  const timed = (...args) => {
    const t0 = now();
    const r = spawnSync(process.execPath, [cli, ...withJson(args)], { env, encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 });
    if (r.status !== 0) throw new Error(`goshipctl ${args.join(' ')}: ${r.stderr}`);
    return { ms: now() - t0, out: JSON.parse(r.stdout) };
  };
  return { cli, json, timed };
}
