// Benchmark (issue: projects), real Debian image under TCG:
//  - `goshipctl project create` → ready (a whole CLI process: validation, overlay,
//    seed, spawn, QMP, agent sync) against plain QEMU with the same argv to the
//    agent's first answer (its start-up hello, then a sync answered): the control plane's overhead,
//    the same milestone on both sides (`--wait agent`: the default also waits for
//    the guest's network and cloud-init, which plain QEMU cannot see), the jail included (its preparation, from GOSHIP_TRACE, printed apart);
//  - the cold start of `goshipctl project list --json` with 50 projects recorded.
//
//   npm run bench -- project [--runs 3]
import { execFileSync, spawnSync } from 'node:child_process';
import { Runtime } from '../dist/lib.mjs';
import { fmt, imageEnv, median, now, plainBootToAgent, report } from './lib.mjs';

const runs = Number(process.argv[process.argv.indexOf('--runs') + 1]) || 3;
const cli = new URL('../bin/goshipctl.cjs', import.meta.url).pathname;
const t = await imageEnv('bp');
const { layout } = t;
const rt = await Runtime.open({ layout });
const g = (...args) => execFileSync(process.execPath, [cli, ...args], { env: t.env, stdio: ['ignore', 'pipe', 'inherit'] });

const goship = [];
const plain = [];
const jail = [];
/** The jail's preparation in one traced `project create`: from "argv built" to "jail prepared" (src/runtime/vms.ts). */
function jailMs(trace) {
  const at = (what) => Number(new RegExp(`\\[\\+([\\d.]+)s\\] vm [^:]+: ${what}`).exec(trace)?.[1]) * 1000;
  return at('jail prepared') - at('argv built');
}
try {
  for (let i = 0; i < runs; i++) {
    // GoShip: the whole CLI command.
    const t0 = now();
    const created = spawnSync(process.execPath, [cli, 'project', 'create', `p${i}`, '--cpus', '2', '--memory', '1G', '--wait', 'agent'], { env: { ...t.env, GOSHIP_TRACE: '1' }, encoding: 'utf8' });
    goship.push(now() - t0);
    if (created.status !== 0) throw new Error(`project create failed: ${created.stderr}`);
    jail.push(jailMs(created.stderr));
    g('project', 'delete', `p${i}`, '--force');

    // Plain QEMU, same argv, same kind of fresh overlay and seed (made by GoShip, not timed).
    plain.push(await plainBootToAgent(rt, g, `q${i}`, ['--cpus', '2', '--memory', '1G']));
  }

  // 50 projects recorded (not started), then the cold start of `project list --json`.
  for (let i = 0; i < 50; i++) g('project', 'create', `l${i}`, '--no-start', '--memory', '256M');
  const list = [];
  for (let i = 0; i < 15; i++) {
    const t0 = now();
    const r = spawnSync(process.execPath, [cli, 'project', 'list', '--json'], { env: t.env, encoding: 'utf8' });
    list.push(now() - t0);
    if (JSON.parse(r.stdout).length !== 50) throw new Error('expected 50 projects');
  }
  const nodeOnly = [];
  for (let i = 0; i < 15; i++) {
    const t0 = now();
    spawnSync(process.execPath, ['-e', '0']);
    nodeOnly.push(now() - t0);
  }

  console.log(`Projects, Debian image under TCG, median of ${runs} runs`);
  report([
    { what: "project create → ready vs plain QEMU → the agent's first answer", goship: median(goship), baseline: median(plain), target: '≤ 1.03×' },
    { what: 'project list --json, 50 projects (cold process)', goship: median(list), baseline: median(nodeOnly), target: '≤ 150 ms (baseline: node -e 0)' },
  ]);
  console.log(`runs: goship ${goship.map(fmt).join(', ')}; plain ${plain.map(fmt).join(', ')}`);
  console.log(`the jail's preparation inside project create (spec paths, overlay header, ownership, cgroup): median ${fmt(median(jail))} (${jail.map(fmt).join(', ')})`);
} finally {
  for (const p of await rt.projects.list().catch(() => [])) await rt.projects.delete(p.project.name, { force: true }).catch(() => {});
  await t.cleanup().catch(() => {});
}
