// Benchmark (issues: apps, process mode), real Debian image under TCG, one project VM, medians:
//  containers
//   - `app deploy --build` → first HTTP 200 through the host port, against the same steps by hand
//     in the guest (`docker build`, `docker run -p`, an HTTP GET inside the VM until 200);
//   - `app logs` throughput (8 MiB of output to /dev/null on the host; GoShip's containers keep
//     3 × 10 MB of json-file logs, about 15 MiB of output) against `docker logs`
//     in the guest (to /dev/null there);
//   - `app exec -- true` round trip against `vm exec -- true` (whole goshipctl processes).
//  processes
//   - `app deploy --binary` → first HTTP 200 through the host port, against by hand
//     (`vm cp` the file, `systemd-run` it, an HTTP GET inside the VM until 200);
//   - kill -9 → answering again (systemd's restart latency), timed inside the guest.
//
//   npm run bench -- apps [--runs 3] [--only containers|processes]
import { execFileSync } from 'node:child_process';
import { copyFileSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fmt, goshipctl, imageEnv, median, now, report } from './lib.mjs';

const runs = Number(process.argv[process.argv.indexOf('--runs') + 1]) || 3;
/** `--only containers` or `--only processes`: one half (the other costs minutes under TCG). */
const only = process.argv.includes('--only') ? process.argv[process.argv.indexOf('--only') + 1] : undefined;
if (only !== undefined && only !== 'containers' && only !== 'processes') throw new Error('--only: containers or processes');
const t = await imageEnv('bapp');
const g = (...args) => goshipctl(t.env, ...args);
const sh = (script) => g('vm', 'exec', 'bench', '--', 'bash', '-c', script);
const MiB = 1024 * 1024;

/** An HTTP GET loop inside the guest, in bash alone (no curl in the image): until a 200 from 127.0.0.1:PORT, failing after 2 minutes. */
const getUntil200 = (port) =>
  `end=$((SECONDS + 120)); until (exec 3<>/dev/tcp/127.0.0.1/${port}; printf 'GET / HTTP/1.0\\r\\n\\r\\n' >&3; head -1 <&3 | grep -q ' 200 ') 2>/dev/null; do [ $SECONDS -lt $end ] || { echo "nothing answers 200 on port ${port} in the guest" >&2; exit 1; }; sleep 0.02; done`;

/** Polls the host port until it answers 200; fails after 2 minutes. */
async function hostUntil200(port) {
  const end = Date.now() + 120_000;
  for (;;) {
    if (Date.now() > end) throw new Error(`nothing answers 200 on host port ${port}`);
    try {
      const r = await fetch(`http://127.0.0.1:${port}/`);
      await r.arrayBuffer();
      if (r.status === 200) return;
    } catch {
      /* not yet */
    }
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** A build context: the host's static busybox serving a page (different each run: the COPY is rebuilt). */
function context(name, page) {
  const dir = join(t.root, name);
  mkdirSync(join(dir, 'www'), { recursive: true });
  copyFileSync('/bin/busybox', join(dir, 'busybox'));
  writeFileSync(join(dir, 'www', 'index.html'), page);
  writeFileSync(join(dir, 'Dockerfile'), 'FROM scratch\nCOPY busybox /bin/busybox\nCOPY www /www\nCMD ["/bin/busybox", "httpd", "-f", "-p", "80", "-h", "/www"]\n');
  return dir;
}

const rows = [];
const notes = [];
/** Each result is printed as soon as it is measured (a long run cut short keeps what it had). */
const row = (r) => {
  rows.push(r);
  report([r]);
};
try {
  g('project', 'create', 'bench', '--cpus', '2', '--memory', '1536M');
  sh('systemctl is-system-running --wait >/dev/null; cloud-init status --wait >/dev/null; docker info >/dev/null');

  if (only !== 'processes') {
    // Containers: deploy → first 200.
    const deploy = [];
    const manual = [];
    for (let i = 0; i < runs; i++) {
      const port = 18100 + i;
      const dir = context(`ctx-g${i}`, `goship run ${i}\n`);
      let t0 = now();
      g('app', 'deploy', 'bench', `web${i}`, '--build', dir, '--port', `${port}:80`);
      await hostUntil200(port);
      deploy.push(now() - t0);
      g('app', 'remove', 'bench', `web${i}`);

      // By hand: the context is copied in first (not timed), then build, run, GET, timed from the host.
      const mdir = context(`ctx-m${i}`, `manual run ${i}\n`);
      const tarFile = join(t.root, `ctx-m${i}.tar`);
      execFileSync('tar', ['-C', mdir, '-cf', tarFile, '.']);
      g('vm', 'cp', tarFile, `bench:/var/tmp/ctx-m${i}.tar`);
      sh(`mkdir -p /var/tmp/ctx-m${i} && tar -C /var/tmp/ctx-m${i} -xf /var/tmp/ctx-m${i}.tar`);
      t0 = now();
      sh(`docker build -q -t manual:${i} /var/tmp/ctx-m${i} >/dev/null && docker run -d --name manual${i} -p ${19100 + i}:80 manual:${i} >/dev/null && ${getUntil200(19100 + i)}`);
      manual.push(now() - t0);
      sh(`docker rm -f manual${i} >/dev/null`);
    }
    row({ what: 'container: app deploy --build → first 200 on the host port', goship: median(deploy), baseline: median(manual), target: '≤ 1.2× (baseline: docker build + run + GET in the guest)' });
    notes.push(`deploy runs: goship ${deploy.map(fmt).join(', ')}; by hand ${manual.map(fmt).join(', ')}`);

    // Container logs: 8 MiB of 1 KiB lines (within the containers' log rotation: 3 × 10 MB of
    // JSON). The container marks the end of its output with a file, so the wait below asks
    // `test -e` every two seconds instead of re-reading MiBs of logs (which, under TCG, slows the
    // writer it waits for).
    const LOG = 8 * MiB;
    const logDir = join(t.root, 'ctx-logs');
    mkdirSync(logDir, { recursive: true });
    copyFileSync('/bin/busybox', join(logDir, 'busybox'));
    const line = 'a line of application output, '.padEnd(1023, 'x');
    writeFileSync(
      join(logDir, 'Dockerfile'),
      `FROM scratch\nCOPY busybox /bin/busybox\nCMD ["/bin/busybox", "sh", "-c", "/bin/busybox yes '${line}' | /bin/busybox head -c ${LOG}; /bin/busybox touch /done; exec /bin/busybox sleep 1000000"]\n`,
    );
    g('app', 'deploy', 'bench', 'noisy', '--build', logDir);
    sh('until docker exec goship-noisy-1 /bin/busybox test -e /done; do sleep 2; done');
    const appLogs = [];
    const dockerLogs = [];
    for (let i = 0; i < runs; i++) {
      const t0 = now();
      const out = g('app', 'logs', 'bench', 'noisy');
      appLogs.push(now() - t0);
      if (out.length < LOG) throw new Error(`app logs gave ${out.length} bytes`);
      const ns = Number(sh('s=$(date +%s%N); docker logs goship-noisy-1 >/dev/null 2>&1; e=$(date +%s%N); echo $((e - s))').trim());
      dockerLogs.push(ns / 1e6);
    }
    const rate = (ms) => (LOG / MiB / (ms / 1000)).toFixed(1);
    console.log(`app logs ${LOG / MiB} MiB: goship ${fmt(median(appLogs))} (${rate(median(appLogs))} MiB/s); docker logs in the guest ${fmt(median(dockerLogs))} (${rate(median(dockerLogs))} MiB/s); throughput ratio ${(median(dockerLogs) / median(appLogs)).toFixed(2)}× (target ≥ 0.8×)`);
    row({ what: `container: app logs, ${LOG / MiB} MiB (time)`, goship: median(appLogs), baseline: median(dockerLogs), target: 'throughput ≥ 0.8× of docker logs in the guest' });

    // exec round trips.
    const appExec = [];
    const vmExec = [];
    for (let i = 0; i < 10; i++) {
      let t0 = now();
      g('app', 'exec', 'bench', 'noisy', '--', '/bin/busybox', 'true');
      appExec.push(now() - t0);
      t0 = now();
      g('vm', 'exec', 'bench', '--', 'true');
      vmExec.push(now() - t0);
    }
    row({ what: 'container: app exec -- true (process)', goship: median(appExec), baseline: median(vmExec), target: 'report (baseline: vm exec -- true)' });
    g('app', 'remove', 'bench', 'noisy');
  }

  if (only !== 'containers') {
    // Processes: deploy → first 200.
    const busybox = join(t.root, 'busybox');
    copyFileSync('/bin/busybox', busybox);
    sh('mkdir -p /srv/www && echo process > /srv/www/index.html');
    const pDeploy = [];
    const pManual = [];
    for (let i = 0; i < runs; i++) {
      const port = 18200 + i;
      let t0 = now();
      g('app', 'deploy', 'bench', `proc${i}`, '--binary', busybox, '--port', `${port}:${port}`, '--', 'httpd', '-f', '-p', String(port), '-h', '/srv/www');
      await hostUntil200(port);
      pDeploy.push(now() - t0);
      g('app', 'remove', 'bench', `proc${i}`);

      const mport = 19200 + i;
      // busybox picks its applet by the name it runs as: the copy keeps the name busybox.
      sh(`mkdir -p /var/tmp/bb${i}`);
      t0 = now();
      g('vm', 'cp', busybox, `bench:/var/tmp/bb${i}/busybox`, '--mode', '0755');
      sh(`systemd-run --quiet --unit manual-bb${i} /var/tmp/bb${i}/busybox httpd -f -p ${mport} -h /srv/www && ${getUntil200(mport)}`);
      pManual.push(now() - t0);
      sh(`systemctl stop manual-bb${i}`);
    }
    row({ what: 'process: app deploy --binary → first 200 on the host port', goship: median(pDeploy), baseline: median(pManual), target: '≤ 1.2× (baseline: vm cp + systemd-run + GET in the guest)' });
    notes.push(`process deploy runs: goship ${pDeploy.map(fmt).join(', ')}; by hand ${pManual.map(fmt).join(', ')}`);

    // Process restart latency: kill -9 → answering again, inside the guest.
    g('app', 'deploy', 'bench', 'keeper', '--binary', busybox, '--restart', 'always', '--', 'httpd', '-f', '-p', '18300', '-h', '/srv/www');
    const restarts = [];
    // At most 4 kills: with the first start that stays within the start limit (5 starts in 60 s).
    for (let i = 0; i < Math.min(runs, 4); i++) {
      const pid = JSON.parse(g('app', 'info', 'bench', 'keeper', '--json')).process.pid;
      const ns = Number(sh(`s=$(date +%s%N); kill -9 ${pid}; sleep 0.05; ${getUntil200(18300)}; e=$(date +%s%N); echo $((e - s))`).trim());
      restarts.push(ns / 1e6);
      for (;;) {
        const a = JSON.parse(g('app', 'info', 'bench', 'keeper', '--json'));
        if (a.state === 'running' && a.process.pid !== pid) break;
      }
    }
    row({ what: 'process: kill -9 → answering again (in the guest)', goship: median(restarts), target: '≤ 2 s' });
    notes.push(`restart latency runs: ${restarts.map(fmt).join(', ')}`);
  }

  console.log(`Apps, Debian image under TCG, median of ${runs} runs (exec: 10); all rows:`);
  report(rows);
  for (const n of notes) console.log(n);
} finally {
  try {
    g('project', 'delete', 'bench', '--force');
  } catch {
    /* already gone */
  }
  await t.cleanup().catch(() => {});
}
