// Benchmark (issue: first boot and the guest agent), real Debian image under TCG:
//  - boot to agent ready: GoShip `vm start` (spawn → QMP cont → agent hello), median of fresh first boots;
//  - agent round-trip time (ping), median of 50;
//  - upload throughput against the raw throughput of the same virtio-serial port
//    (bytes written straight to the chardev socket, counted by `head -c` in the guest),
//    medians of 3 each, once the guest has settled (cloud-init done);
//  - reboot cycle: `systemctl reboot` in the guest → the agent answers with a new
//    boot id, median of --runs, against the fresh boot above (goal ≤ 1.5×).
//
//   npm run bench -- agent [--runs 3]
import { randomBytes } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { connect } from 'node:net';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { Runtime, Layout, buildImage } from '../dist/lib.mjs';
import { cacheDir, fmt, median, now, tempEnv, openCached } from './lib.mjs';

const runs = Number(process.argv[process.argv.indexOf('--runs') + 1]) || 3;
const throughputRuns = 3;
const agentBundle = new URL('../dist/goship-agent.mjs', import.meta.url).pathname;
// The same inputs as the tests' image (test/helpers/debian-image.ts): the cache is shared.
const image = await buildImage({ name: 'default', agentBundle, imagesDir: cacheDir('images'), debCacheDir: cacheDir('debs'), bootProbe: true });
await openCached(image.dir);
const t = await tempEnv('ba');
const layout = new Layout(t.env.GOSHIP_HOME, t.env.GOSHIP_RUN);
const rt = await Runtime.open({ layout });
const boot = { kernel: image.kernel, initrd: image.initrd, cmdline: image.cmdline };

async function fresh(name) {
  await rt.vms.create({
    spec: { name, cpu: { count: 2 }, memory: '1G' },
    base: { path: image.base, name: 'default', ...boot },
    seed: { instanceId: `iid-${name}`, hostname: name, sshKeys: [] },
  });
}

const sink = () => new Writable({ write: (_c, _e, cb) => cb() });
const MiB = 1024 * 1024;

/**
 * The raw port: stop the agent, let `head -c` count SIZE bytes from the port,
 * start the agent again. The host connects before `head` opens the port: a
 * virtio port reads as EOF while no host is connected, which would end `head`
 * at once. Returns the time the host took to write the bytes and what the
 * guest counted.
 */
async function rawPort(vmName, size) {
  let agent = await rt.vms.agent(vmName, 60_000);
  const port = '/dev/virtio-ports/org.goship.agent.0';
  await agent.exec(['systemd-run', '--unit=goship-rawcount', '--collect', 'sh', '-c',
    `sleep 2; systemctl stop goship-agent; head -c ${size} ${port} | wc -c > /var/tmp/raw-count; systemctl start goship-agent`], { stdout: sink(), stderr: sink() });
  await agent.close();
  const vm = await rt.vms.get(vmName);
  // The VM's monitor holds the agent's chardev: kill it (QEMU runs on); the next command adopts the VM again.
  process.kill(vm.monitor.pid, 'SIGKILL');
  await new Promise((r) => setTimeout(r, 300));
  const raw = connect(vm.paths.agentSocket);
  raw.on('data', () => {}); // whatever the agent still says is dropped
  await new Promise((resolve, reject) => raw.once('connect', resolve).once('error', reject));
  await new Promise((r) => setTimeout(r, 6000)); // the agent stops, head opens the port
  const chunk = Buffer.alloc(MiB, 0x5a);
  const t0 = now();
  for (let sent = 0; sent < size; sent += chunk.length) {
    if (!raw.write(chunk)) await new Promise((r) => raw.once('drain', r));
  }
  await new Promise((r) => raw.end(r));
  const ms = now() - t0;
  agent = await rt.vms.agent(vmName, 60_000);
  const counted = [];
  await agent.exec(['cat', '/var/tmp/raw-count'], { stdout: new Writable({ write: (c, _e, cb) => (counted.push(c), cb()) }), stderr: sink() });
  await agent.close();
  return { ms, counted: Number(Buffer.concat(counted).toString().trim()) };
}

const bootIdOf = async (agent) => {
  const out = [];
  await agent.exec(['cat', '/proc/sys/kernel/random/boot_id'], { stdout: new Writable({ write: (c, _e, cb) => (out.push(c), cb()) }), stderr: sink() });
  return Buffer.concat(out).toString().trim();
};

/** In-guest reboot until the agent answers from the new boot: ms. */
async function rebootCycle(vmName) {
  let agent = await rt.vms.agent(vmName, 60_000);
  const before = await bootIdOf(agent);
  const t0 = now();
  // The reboot may close the agent's session before the exec's answer arrives.
  await agent.exec(['systemctl', 'reboot', '--no-block'], { stdout: sink(), stderr: sink() }).catch((err) => {
    if (err.code !== 'EAGENT_CLOSED') throw err;
  });
  await agent.close();
  for (;;) {
    agent = await rt.vms.agent(vmName, 5_000).catch(() => undefined);
    const id = agent ? await bootIdOf(agent).catch(() => undefined) : undefined;
    await agent?.close().catch(() => {});
    if (id && id !== before) return now() - t0;
    if (now() - t0 > 600_000) throw new Error('the guest did not come back within 600 s');
    await new Promise((r) => setTimeout(r, 100));
  }
}

try {
  // 1. Boot to agent ready, fresh VMs (first boot each time).
  const readyMs = [];
  for (let i = 0; i < runs; i++) {
    const name = `b${i}`;
    await fresh(name);
    const t0 = now();
    await rt.vms.start(name, { waitAgent: true, agentTimeoutMs: 240_000 });
    readyMs.push(now() - t0);
    if (i < runs - 1) await rt.vms.destroy(name, { force: true });
  }
  const vmName = `b${runs - 1}`;
  const agent = await rt.vms.agent(vmName, 30_000);

  // 2. Round-trip time.
  const rtt = [];
  for (let i = 0; i < 50; i++) rtt.push((await agent.ping()).rttMs);

  // 3. Upload throughput vs the raw port, once the guest has settled: right
  // after ready, cloud-init's later stages still take the guest's CPUs, which
  // would slow whichever of the two measurements ran first.
  await agent.exec(['cloud-init', 'status', '--wait'], { stdout: sink(), stderr: sink() });
  await agent.exec(['systemctl', 'is-system-running', '--wait'], { stdout: sink(), stderr: sink() });
  const size = 64 * MiB;
  const file = join(t.root, 'blob');
  await writeFile(file, randomBytes(size));
  const uploadMs = [];
  for (let i = 0; i < throughputRuns; i++) {
    const up0 = now();
    await agent.upload(file, '/var/tmp/blob');
    uploadMs.push(now() - up0);
  }
  await agent.close();
  const rawMs = [];
  const rawCounts = [];
  for (let i = 0; i < throughputRuns; i++) {
    const r = await rawPort(vmName, size);
    rawMs.push(r.ms);
    rawCounts.push(r.counted);
  }

  // 4. Reboot cycles, on the settled guest.
  const rebootMs = [];
  for (let i = 0; i < runs; i++) rebootMs.push(await rebootCycle(vmName));

  const mibs = (ms) => size / MiB / (ms / 1000);
  const upMiBs = mibs(median(uploadMs));
  const rawMiBs = mibs(median(rawMs));
  const rates = (ms) => ms.map((x) => mibs(x).toFixed(1)).join(', ');
  console.log(`Guest agent, Debian image under TCG (${runs} fresh boots; 50 pings; ${size / MiB} MiB transfers)`);
  console.log(`boot → agent ready (median)   ${fmt(median(readyMs))}   runs: ${readyMs.map(fmt).join(', ')}   target ≤ 15 s`);
  console.log(`agent round trip (median)     ${fmt(median(rtt))}`);
  console.log(`upload (sha256 + fsync)       ${upMiBs.toFixed(1)} MiB/s (median)   runs: ${rates(uploadMs)} MiB/s`);
  console.log(`raw port                      ${rawMiBs.toFixed(1)} MiB/s (median)   runs: ${rates(rawMs)} MiB/s`);
  console.log(`upload / raw                  ${(upMiBs / rawMiBs).toFixed(2)}×   target ≥ 0.8×`);
  console.log(`reboot → agent again (median) ${fmt(median(rebootMs))}   runs: ${rebootMs.map(fmt).join(', ')}`);
  console.log(`reboot / fresh boot           ${(median(rebootMs) / median(readyMs)).toFixed(2)}×   target ≤ 1.5×`);
  for (const c of rawCounts) if (c !== size) console.log(`warning: the guest counted ${c} of ${size} bytes`);
} finally {
  for (const v of await rt.vms.list().catch(() => [])) await rt.vms.destroy(v.name, { force: true }).catch(() => {});
  await t.cleanup().catch(() => {});
}
