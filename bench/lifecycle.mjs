// Benchmark (issue: VM lifecycle): GoShip `vm start` → QMP running against
// plain QEMU with the same argv to the same point, and `vm stop --force` →
// process gone against a bare QMP quit. Fast test guest, TCG. Medians of N runs.
//
//   npm run bench -- lifecycle [--runs 10]
import { execFileSync } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { QmpClient, Runtime, Layout } from '../dist/lib.mjs';
import { ensureFastGuest } from '../dist/test-support.mjs';
import { cacheDir, median, now, openCached, report, spawnPlain, tempEnv, waitForFile } from './lib.mjs';

const runs = Number(process.argv[process.argv.indexOf('--runs') + 1]) || 10;
const guest = await ensureFastGuest(cacheDir('fastguest'));
await openCached(dirname(guest.kernel));
const t = await tempEnv('bl');
const layout = new Layout(t.env.GOSHIP_HOME, t.env.GOSHIP_RUN);
const rt = await Runtime.open({ layout });
const spec = { name: 'bench', memory: '256M', boot: { kernel: guest.kernel, initrd: guest.initrd, cmdline: guest.cmdline }, network: { mode: 'none' } };
await rt.vms.create({ spec });

const startLib = [];
const stopLib = [];
const startCli = [];
const stopCli = [];
const startPlain = [];
const stopPlain = [];
const cli = new URL('../bin/goshipctl.cjs', import.meta.url).pathname;

try {
  for (let i = 0; i < runs; i++) {
    // GoShip library: Runtime.vms.start resolves once QMP says running.
    let t0 = now();
    const vm = await rt.vms.start('bench');
    startLib.push(now() - t0);
    t0 = now();
    await rt.vms.stop('bench', { force: true });
    stopLib.push(now() - t0);

    // GoShip CLI: a whole goshipctl process (node start-up included).
    t0 = now();
    execFileSync(process.execPath, [cli, 'vm', 'start', 'bench', '--no-wait'], { env: t.env, stdio: 'ignore' });
    startCli.push(now() - t0);
    t0 = now();
    execFileSync(process.execPath, [cli, 'vm', 'stop', 'bench', '--force'], { env: t.env, stdio: 'ignore' });
    stopCli.push(now() - t0);

    // Plain QEMU, same argv (paused with -S, like GoShip): spawn → QMP → cont → running.
    const argv = vm.argv;
    const sock = vm.paths.qmpSocket;
    mkdirSync(dirname(sock), { recursive: true, mode: 0o700 });
    t0 = now();
    const { exited } = spawnPlain(argv);
    await waitForFile(sock);
    const q = await QmpClient.connect(sock, { timeoutMs: 5000 });
    await q.cont();
    const st = await q.queryStatus();
    startPlain.push(now() - t0);
    if (st.status !== 'running') throw new Error(`plain QEMU: ${st.status}`);
    t0 = now();
    await q.quit();
    await exited;
    stopPlain.push(now() - t0);
    await q.close();
  }
} finally {
  await rt.vms.destroy('bench', { force: true }).catch(() => {});
  await t.cleanup();
}

const rows = [
  { what: 'start → running (library)', goship: median(startLib), baseline: median(startPlain), target: 'none (retired: ~300 ms is fine)' },
  { what: 'start → running (goshipctl process)', goship: median(startCli), baseline: median(startPlain) },
  { what: 'stop --force → gone (library)', goship: median(stopLib), baseline: median(stopPlain), target: '≤ 100 ms' },
  { what: 'stop --force → gone (goshipctl process)', goship: median(stopCli), baseline: median(stopPlain) },
];
console.log(`VM lifecycle, fast guest under TCG, median of ${runs} runs (baseline: plain QEMU, same argv)`);
report(rows);
if (process.argv.includes('--json')) console.log(JSON.stringify({ runs, rows }));
