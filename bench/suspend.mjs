// Benchmark (issue: VM state), real Debian image under TCG, 1 vCPU, 1 GiB,
// every figure a whole goshipctl process:
//  - project create --cold → ready (network online, cloud-init done): the baseline;
//  - project suspend of the settled project, serving an app (python3 http.server);
//  - project resume → ready (clock set, network, cloud-init) and then → the
//    app answers on its forwarded port again, against the cold create;
//  - project snapshot create --memory of the settled project, and its restore
//    → the app answers again.
//
//   npm run bench -- suspend [--runs 3]
import { spawnSync } from 'node:child_process';
import { createServer } from 'node:net';
import { fmt, imageEnv, jsonCli, median, now, report } from './lib.mjs';

const runs = Number(process.argv[process.argv.indexOf('--runs') + 1]) || 3;
const t = await imageEnv('bs');
const { cli, json: g, timed } = jsonCli(t.env);
const freePort = () =>
  new Promise((resolve) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
const answers = async (port) => {
  try {
    return (await fetch(`http://127.0.0.1:${port}/`, { signal: AbortSignal.timeout(5000) })).status === 200;
  } catch {
    return false;
  }
};

try {
  const cold = timed('project', 'create', 'nap', '--cold');
  const port = await freePort();
  g('app', 'deploy', 'nap', 'web', '--command', '--port', `${port}:8080`, '--', '/usr/bin/python3', '-m', 'http.server', '8080');
  const pid = g('app', 'info', 'nap', 'web').process.pid;
  // Settled: the guest quiet, its page cache as a running project's is.
  await new Promise((r) => setTimeout(r, 30_000));
  const suspend = [];
  const resume = [];
  const serving = [];
  let bytes = 0;
  for (let i = 0; i < runs; i++) {
    const s = timed('project', 'suspend', 'nap');
    suspend.push(s.ms);
    bytes = s.out.saved.bytes;
    const t0 = now();
    const r = timed('project', 'resume', 'nap');
    if (!r.out.resumed) throw new Error('the project was not resumed');
    resume.push(r.ms);
    while (!(await answers(port))) await new Promise((res) => setTimeout(res, 20));
    serving.push(now() - t0);
    const after = g('app', 'info', 'nap', 'web').process.pid;
    if (after !== pid) throw new Error(`the app's process changed across the resume (${pid} → ${after})`);
    await new Promise((res) => setTimeout(res, 10_000));
  }
  const snap = [];
  const back = [];
  for (let i = 0; i < runs; i++) {
    snap.push(timed('project', 'snapshot', 'create', 'nap', `s${i}`, '--memory').ms);
    await new Promise((res) => setTimeout(res, 5_000));
    const t0 = now();
    timed('project', 'snapshot', 'restore', 'nap', `s${i}`);
    while (!(await answers(port))) await new Promise((res) => setTimeout(res, 20));
    back.push(now() - t0);
    await new Promise((res) => setTimeout(res, 10_000));
  }
  console.log(`Suspend and resume, Debian image under TCG, 1 vCPU, 1 GiB, an app serving; median of ${runs} runs`);
  console.log(`project suspend: ${fmt(median(suspend))} (state ${(bytes / 1048576).toFixed(0)} MiB)`);
  report([
    { what: 'project resume → ready vs create --cold → ready', goship: median(resume), baseline: cold.ms },
    { what: 'project resume → app serving vs create --cold → ready', goship: median(serving), baseline: cold.ms, target: '≤ 0.2×' },
  ]);
  console.log(`project snapshot create --memory: ${fmt(median(snap))}; snapshot restore → app serving: ${fmt(median(back))}`);
  console.log(`runs: snapshot ${snap.map(fmt).join(', ')}; restore → serving ${back.map(fmt).join(', ')}`);
  console.log(`runs: suspend ${suspend.map(fmt).join(', ')}; resume ${resume.map(fmt).join(', ')}; serving ${serving.map(fmt).join(', ')}; cold create ${fmt(cold.ms)}`);
} finally {
  spawnSync(process.execPath, [cli, 'project', 'delete', 'nap', '--force'], { env: t.env });
  await t.cleanup().catch(() => {});
}
