// Benchmark (issue: clones), real Debian image under TCG, every figure a whole
// goshipctl process with the default wait (agent, network online, cloud-init):
//  - image warm (once);
//  - project create restored from the template against project create --cold,
//    and against plain QEMU booting the same argv to the agent's first line;
//  - the memory of 3 settled clones together against one cold VM (PSS of
//    their QEMUs, /proc/PID/smaps_rollup).
//
//   npm run bench -- templates [--runs 3]
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fmt, imageEnv, jsonCli, median, report } from './lib.mjs';

const runs = Number(process.argv[process.argv.indexOf('--runs') + 1]) || 3;
const t = await imageEnv('bt');
const { cli, json: g, timed } = jsonCli(t.env);
const pss = (pid) => Number(/^Pss:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8'))[1]) * 1024;

try {
  const warm = timed('image', 'warm');
  const clone = [];
  const cold = [];
  for (let i = 0; i < runs; i++) {
    const c = timed('project', 'create', `c${i}`);
    if (c.out.from !== 'template') throw new Error(`c${i} was not restored: ${c.out.reason}`);
    clone.push(c.ms);
    g('project', 'delete', `c${i}`, '--force');
    cold.push(timed('project', 'create', `k${i}`, '--cold').ms);
    g('project', 'delete', `k${i}`, '--force');
  }
  // Memory: 3 clones and one cold VM, all settled, then a minute for the guests to go quiet.
  const clones = ['m0', 'm1', 'm2'].map((n) => timed('project', 'create', n).out.vm.pid);
  const coldPid = timed('project', 'create', 'mc', '--cold').out.vm.pid;
  await new Promise((r) => setTimeout(r, 60_000));
  const clonesPss = clones.reduce((a, p) => a + pss(p), 0);
  const coldPss = pss(coldPid);

  console.log(`Templates, Debian image under TCG, 1 vCPU, 1 GiB, median of ${runs} runs`);
  console.log(`image warm: ${fmt(warm.ms)} (boot to settled ${fmt(warm.out.bootMs)}, save ${fmt(warm.out.saveMs)}, template ${(warm.out.sizeBytes / 1048576).toFixed(0)} MiB)`);
  report([
    { what: 'project create → ready: from the template vs --cold', goship: median(clone), baseline: median(cold), target: '≤ 0.1×' },
  ]);
  console.log(`memory (PSS): 3 settled clones ${(clonesPss / 1048576).toFixed(0)} MiB vs 1 cold VM ${(coldPss / 1048576).toFixed(0)} MiB, ratio ${(clonesPss / coldPss).toFixed(2)}×  target ≤ 1.5×`);
  console.log(`runs: clone ${clone.map(fmt).join(', ')}; cold ${cold.map(fmt).join(', ')}`);
  console.log(`PSS (MiB): clones ${clones.map((p) => (pss(p) / 1048576).toFixed(0)).join(', ')}; cold ${(coldPss / 1048576).toFixed(0)}`);
} finally {
  for (const n of ['m0', 'm1', 'm2', 'mc']) spawnSync(process.execPath, [cli, 'project', 'delete', n, '--force'], { env: t.env });
  await t.cleanup().catch(() => {});
}
