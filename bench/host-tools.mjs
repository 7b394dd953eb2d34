// Benchmark (issue: the host's own tools), real Debian image under TCG, 1 vCPU, 1 GiB:
//  - `docker run --rm IMAGE true` by Debian's Docker CLI on the host through
//    `project docker`'s relayed socket (a whole docker process, as a user runs
//    it), against the same command run inside the guest by the guest's docker
//    CLI, timed in the guest (no goshipctl in the baseline);
//  - `ssh -F (ssh-config) goship-NAME true` (a whole ssh, its ProxyCommand a
//    goshipctl), against `goshipctl vm exec NAME -- true`;
//  - the guest reading a 256 MiB host file from a shared folder (`--mount
//    DIR:/mnt/share:ro`, the guest's page cache dropped first, timed in the
//    guest), against `goshipctl vm cp FILE NAME:/var/tmp/big` of it (a whole
//    goshipctl, through the agent channel).
// The image is a static busybox FROM scratch, built through the relay.
//
//   npm run bench -- host-tools [--runs 5]
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { copyFileSync, mkdirSync, openSync, closeSync, writeSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fmt, imageEnv, jsonCli, median, now, report } from './lib.mjs';

const runs = Number(process.argv[process.argv.indexOf('--runs') + 1]) || 5;
const DOCKER = new URL('../.cache/docker-cli/docker', import.meta.url).pathname;
const t = await imageEnv('bh');
const { cli, json: g } = jsonCli(t.env);
const run = (file, args, env = t.env) => {
  const t0 = now();
  const r = spawnSync(file, args, { env, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  if (r.status !== 0) throw new Error(`${file} ${args.join(' ')}: exit ${r.status}: ${r.stderr}`);
  return { ms: now() - t0, out: r.stdout };
};

try {
  // The shared folder: root's (or this user's) and read-only, 256 MiB of random bytes.
  const share = join(t.root, 'share');
  mkdirSync(share, { recursive: true });
  const big = join(share, 'big');
  const fd = openSync(big, 'w');
  for (let i = 0; i < 256; i++) writeSync(fd, randomBytes(1024 * 1024));
  closeSync(fd);
  g('project', 'create', 'tools', '--mount', `${share}:/mnt/share:ro`);
  const dockerEnv = { PATH: process.env.PATH, HOME: t.root, DOCKER_HOST: g('project', 'docker', 'tools').dockerHost };
  const ctx = join(t.root, 'ctx');
  mkdirSync(ctx, { recursive: true });
  copyFileSync('/bin/busybox', join(ctx, 'busybox'));
  writeFileSync(join(ctx, 'Dockerfile'), 'FROM scratch\nCOPY busybox /busybox\nENTRYPOINT ["/busybox"]\n');
  run(DOCKER, ['build', '-q', '-t', 'bench/bb', ctx], dockerEnv);
  // Warm: dockerd started (socket-activated) and the image's layers in the page cache.
  run(DOCKER, ['run', '--rm', 'bench/bb', 'true'], dockerEnv);
  const inGuest = () => {
    const script = 'a=$(date +%s%N); docker run --rm bench/bb true; b=$(date +%s%N); echo $(( (b - a) / 1000 ))';
    return Number(run(process.execPath, [cli, 'vm', 'exec', 'tools', '--', 'sh', '-c', script]).out.trim()) / 1000;
  };
  const host = [];
  const guest = [];
  for (let i = 0; i < runs; i++) {
    host.push(run(DOCKER, ['run', '--rm', 'bench/bb', 'true'], dockerEnv).ms);
    guest.push(inGuest());
  }
  const config = join(t.root, 'ssh_config');
  writeFileSync(config, g('ssh-config', 'tools').config);
  const ssh = [];
  const exec = [];
  for (let i = 0; i < runs; i++) {
    ssh.push(run('ssh', ['-F', config, 'goship-tools', 'true']).ms);
    exec.push(run(process.execPath, [cli, 'vm', 'exec', 'tools', '--', 'true']).ms);
  }
  const inGuestMs = (script) => Number(run(process.execPath, [cli, 'vm', 'exec', 'tools', '--', 'sh', '-c', `sync; echo 3 > /proc/sys/vm/drop_caches; a=$(date +%s%N); ${script}; b=$(date +%s%N); echo $(( (b - a) / 1000 ))`]).out.trim()) / 1000;
  const mount = [];
  const cp = [];
  for (let i = 0; i < runs; i++) {
    mount.push(inGuestMs('cat /mnt/share/big > /dev/null'));
    cp.push(run(process.execPath, [cli, 'vm', 'cp', big, 'tools:/var/tmp/big']).ms);
  }
  console.log(`The host's tools, Debian image under TCG, 1 vCPU, 1 GiB; median of ${runs} runs`);
  report([
    { what: 'docker run --rm IMAGE true: host CLI via project docker vs in the guest', goship: median(host), baseline: median(guest), target: '≤ 1.2×' },
    { what: 'ssh -F (ssh-config) goship-NAME true vs goshipctl vm exec NAME -- true', goship: median(ssh), baseline: median(exec) },
    { what: 'the guest reads a 256 MiB host file: from a shared folder vs vm cp of it', goship: median(mount), baseline: median(cp) },
  ]);
  console.log(`runs: host ${host.map(fmt).join(', ')}; guest ${guest.map(fmt).join(', ')}; ssh ${ssh.map(fmt).join(', ')}; vm exec ${exec.map(fmt).join(', ')}; mount ${mount.map(fmt).join(', ')}; vm cp ${cp.map(fmt).join(', ')}`);
} finally {
  spawnSync(process.execPath, [cli, 'project', 'delete', 'tools', '--force'], { env: t.env });
  await t.cleanup().catch(() => {});
}
