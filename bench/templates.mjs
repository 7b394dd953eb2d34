// Benchmark (issue: clones), real Debian image under TCG, every figure a whole
// goshipctl process with the default wait (agent, network online, cloud-init):
//  - image warm (once);
//  - project create restored from the template against project create --cold,
//    and plain QEMU booting the same argv to the agent's first answer (the
//    baseline of a boot, no GoShip in it), all in one run;
//  - the memory of 3 settled clones together against one cold VM: PSS of
//    their QEMUs (/proc/PID/smaps_rollup), the clones' shared memfd of the
//    template's memory counted once, whole (its allocated size, the pages no
//    clone has touched yet included) in place of its share in their PSS.
//
//   npm run bench -- templates [--runs 3]
import { spawnSync } from 'node:child_process';
import { readFileSync, readlinkSync, statSync } from 'node:fs';
import { Runtime } from '../dist/lib.mjs';
import { fmt, goshipctl, imageEnv, jsonCli, median, plainBootToAgent, report } from './lib.mjs';

const runs = Number(process.argv[process.argv.indexOf('--runs') + 1]) || 3;
const t = await imageEnv('bt');
const { cli, json: g, timed } = jsonCli(t.env);
const rt = await Runtime.open({ layout: t.layout });
const rollup = (pid) => {
  const text = readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8');
  const kb = (k) => Number(new RegExp(`^${k}:\\s+(\\d+) kB`, 'm').exec(text)?.[1] ?? 0) * 1024;
  return { pss: kb('Pss'), shmem: kb('Pss_Shmem') };
};
const pss = (pid) => rollup(pid).pss;
/** The template memfds that these QEMUs hold (their descriptor 3), by inode: allocated bytes. */
const memfds = (pids) => {
  const out = new Map();
  for (const pid of pids) {
    const fd = `/proc/${pid}/fd/3`;
    try {
      if (!readlinkSync(fd).startsWith('/memfd:goship-')) continue;
      const st = statSync(fd);
      out.set(st.ino, st.blocks * 512);
    } catch {
      // no descriptor 3: a QEMU that booted
    }
  }
  return out;
};

try {
  const warm = timed('image', 'warm');
  const clone = [];
  const cold = [];
  const plain = [];
  for (let i = 0; i < runs; i++) {
    const c = timed('project', 'create', `c${i}`);
    if (c.out.from !== 'template') throw new Error(`c${i} was not restored: ${c.out.reason}`);
    clone.push(c.ms);
    g('project', 'delete', `c${i}`, '--force');
    cold.push(timed('project', 'create', `k${i}`, '--cold').ms);
    g('project', 'delete', `k${i}`, '--force');
    plain.push(await plainBootToAgent(rt, (...a) => goshipctl(t.env, ...a), `b${i}`));
  }
  // Memory: 3 clones and one cold VM, all settled, then a minute for the guests to go quiet.
  const clones = ['m0', 'm1', 'm2'].map((n) => timed('project', 'create', n).out.vm.pid);
  const coldPid = timed('project', 'create', 'mc', '--cold').out.vm.pid;
  await new Promise((r) => setTimeout(r, 60_000));
  const own = clones.reduce((a, p) => a + rollup(p).pss - rollup(p).shmem, 0);
  const shared = [...memfds(clones).values()].reduce((a, b) => a + b, 0);
  const clonesPss = own + shared;
  const coldPss = pss(coldPid);

  console.log(`Templates, Debian image under TCG, 1 vCPU, 1 GiB, median of ${runs} runs`);
  console.log(`image warm: ${fmt(warm.ms)} (boot to settled ${fmt(warm.out.bootMs)}, save ${fmt(warm.out.saveMs)}, template ${(warm.out.sizeBytes / 1048576).toFixed(0)} MiB)`);
  report([
    { what: 'project create → ready: from the template vs --cold', goship: median(clone), baseline: median(cold), target: '≤ 0.1×' },
    { what: 'project create → ready: from the template vs plain QEMU boot → agent', goship: median(clone), baseline: median(plain) },
  ]);
  console.log(`memory (PSS): 3 settled clones ${(clonesPss / 1048576).toFixed(0)} MiB vs 1 cold VM ${(coldPss / 1048576).toFixed(0)} MiB, ratio ${(clonesPss / coldPss).toFixed(2)}×  target ≤ 1.5×`);
  console.log(`  the clones: their QEMUs' own ${(own / 1048576).toFixed(0)} MiB + the template's memory, one memfd shared by them, ${(shared / 1048576).toFixed(0)} MiB`);
  console.log(`runs: clone ${clone.map(fmt).join(', ')}; cold ${cold.map(fmt).join(', ')}; plain QEMU → agent ${plain.map(fmt).join(', ')}`);
  console.log(`PSS (MiB): clones ${clones.map((p) => (pss(p) / 1048576).toFixed(0)).join(', ')}; cold ${(coldPss / 1048576).toFixed(0)}`);
} finally {
  for (const n of ['m0', 'm1', 'm2', 'mc']) spawnSync(process.execPath, [cli, 'project', 'delete', n, '--force'], { env: t.env });
  await t.cleanup().catch(() => {});
}
