// Benchmark (issue: nodes over SSH), a second node on this machine (test/support/ssh-node.ts:
// Debian's sshd on loopback, an unprivileged user with its own GoShip state):
//  - `goshipctl --json project list` across this host and the node, against the same
//    command on a host without nodes (the local part alone);
//  - `goshipctl vm exec NAME -- true` on a project on the node, against the same command
//    on a local project;
// medians of --runs (default 15), the two sides' runs interleaved, after a warm-up and with
// both guests past cloud-init: ssh's shared connection is open, as it is for a user who runs
// one command after another (ControlPersist 60 s);
//  - `goshipctl project move` of a settled 1 GiB project (suspend, disk copy, transfer,
//    checks, resume there, removal here), against `scp` of the same files (its overlay and
//    saved state, suspended) to the node with the same key (the classic protocol, -O: the
//    test sshd has no SFTP); one run each.
//
//   npm run bench -- nodes [--runs 15]
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { startSshNode } from '../dist/test-support.mjs';
import { fmt, goshipctl, imageEnv, median, now, report, tempEnv } from './lib.mjs';

const runs = Number(process.argv[process.argv.indexOf('--runs') + 1]) || 15;
const cli = new URL('../bin/goshipctl.cjs', import.meta.url).pathname;
const t = await imageEnv('bn');
const bare = await tempEnv('bn0');
const node = await startSshNode(join(t.root, 'node'));

/** Whole-process time of goshipctl ARGS in env, in ms (exit 0 required). */
function timed(env, ...args) {
  const t0 = now();
  const r = spawnSync(process.execPath, [cli, ...args], { env, encoding: 'utf8' });
  const ms = now() - t0;
  if (r.status !== 0) throw new Error(`goshipctl ${args.join(' ')} failed (${r.status}): ${r.stderr}`);
  return ms;
}
/**
 * Medians of a and b (each [env, ...args]), their runs interleaved (a, b, a, b…)
 * after one warm-up of each (and the shared ssh connection), so a host that
 * gets busier or quieter during the benchmark weighs on both sides alike.
 */
function pairedMedians(a, b) {
  timed(...a);
  timed(...b);
  const as = [];
  const bs = [];
  for (let i = 0; i < runs; i++) {
    as.push(timed(...a));
    bs.push(timed(...b));
  }
  return [median(as), median(bs)];
}

try {
  goshipctl(t.env, 'node', 'add', 'box', node.url, ...node.keyArgs, '--install');
  goshipctl(t.env, 'project', 'create', 'loc', '--memory', '768M');
  goshipctl(t.env, 'project', 'create', 'rem', '--node', 'box', '--memory', '768M');
  goshipctl(bare.env, 'project', 'list');
  // Both guests settled first: a guest still in cloud-init under TCG answers slower, and one side would pay for it.
  for (const vm of ['loc', 'rem']) goshipctl(t.env, 'vm', 'exec', vm, '--', 'sh', '-c', 'cloud-init status --wait >/dev/null || true');

  const [listTwo, listLocal] = pairedMedians([t.env, '--json', 'project', 'list'], [bare.env, '--json', 'project', 'list']);
  const [execRemote, execLocal] = pairedMedians([t.env, 'vm', 'exec', 'rem', '--', 'true'], [t.env, 'vm', 'exec', 'loc', '--', 'true']);
  console.log(`Nodes over SSH (loopback sshd, connection shared), medians of ${runs}, interleaved`);
  report([
    { what: 'project list --json, this host + 1 node (vs no nodes)', goship: listTwo, baseline: listLocal, target: `≤ +100 ms (added ${fmt(listTwo - listLocal)})` },
    { what: 'vm exec NAME -- true, project on the node (vs local)', goship: execRemote, baseline: execLocal, target: `≤ +100 ms (added ${fmt(execRemote - execLocal)})` },
  ]);

  // A move against scp of the same files: a settled 1 GiB project, suspended for the copy, resumed, then moved.
  goshipctl(t.env, 'project', 'create', 'mv');
  await new Promise((r) => setTimeout(r, 30_000));
  const saved = JSON.parse(goshipctl(t.env, 'project', 'suspend', 'mv', '--json')).saved;
  const files = [t.layout.vmFile('mv', 'overlay'), saved.file];
  const scpArgs = ['-q', '-O', '-P', String(node.port), '-i', node.identity, '-o', `UserKnownHostsFile=${node.knownHosts}`, '-o', 'StrictHostKeyChecking=yes', ...files, `${node.user}@127.0.0.1:/tmp/`];
  const s0 = now();
  const scp = spawnSync('scp', scpArgs, { encoding: 'utf8' });
  const scpMs = now() - s0;
  if (scp.status !== 0) throw new Error(`scp failed: ${scp.stderr}`);
  spawnSync('ssh', ['-p', String(node.port), '-i', node.identity, '-o', `UserKnownHostsFile=${node.knownHosts}`, `${node.user}@127.0.0.1`, 'rm', '-f', '/tmp/disk.qcow2', '/tmp/saved.state']);
  goshipctl(t.env, 'project', 'resume', 'mv');
  const m0 = now();
  const moved = JSON.parse(goshipctl(t.env, 'project', 'move', 'mv', '--to', 'box', '--json'));
  const moveMs = now() - m0;
  report([{ what: `project move of a settled 1 GiB project (${(moved.bytes / 1048576).toFixed(0)} MiB sent) vs scp of its files`, goship: moveMs, baseline: scpMs }]);
} finally {
  spawnSync(process.execPath, [cli, 'project', 'delete', 'mv', '--force'], { env: t.env });
  spawnSync(process.execPath, [cli, 'project', 'delete', 'rem', '--force'], { env: t.env });
  spawnSync(process.execPath, [cli, 'project', 'delete', 'loc', '--force'], { env: t.env });
  await node.cleanup().catch(() => {});
  await t.cleanup().catch(() => {});
  await bare.cleanup().catch(() => {});
}
