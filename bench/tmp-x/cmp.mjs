import { execFileSync, spawnSync } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { Runtime, AgentClient, QmpClient } from '../../dist/lib.mjs';
import { imageEnv, now, spawnPlain, waitForFile } from '../lib.mjs';
import { setTimeout as sleep } from 'node:timers/promises';
const cli = new URL('../../bin/goshipctl.cjs', import.meta.url).pathname;
const t = await imageEnv('bx');
const rt = await Runtime.open({ layout: t.layout });
const g = (...args) => execFileSync(process.execPath, [cli, ...args], { env: t.env, stdio: ['ignore', 'pipe', 'inherit'] }).toString();
const analyze = async (a) => { let out = ''; const { Writable } = await import('node:stream'); const w = new Writable({ write(c, e, cb) { out += c; cb(); } }); await a.exec(['systemd-analyze'], { stdout: w, timeoutMs: 60000 }); return out.split('\n')[0]; };
for (let i = 0; i < 2; i++) {
  const t0 = now();
  const r = spawnSync(process.execPath, [cli, 'project', 'create', `g${i}`, '--cpus', '2', '--memory', '1G', '--wait', 'agent'], { env: { ...t.env, GOSHIP_TRACE: '1' }, encoding: 'utf8' });
  const ms = now() - t0;
  const vm = await rt.vms.get(`g${i}`);
  const mon = execFileSync('ps', ['-o', 'times=', '-p', String(vm.monitor.pid)]).toString().trim();
  const up = g('vm', 'exec', `g${i}`, '--', 'sh', '-c', 'cut -d" " -f1 /proc/uptime; systemd-analyze | head -1; journalctl -b -o short-monotonic -u goship-agent | head -3').trim();
  console.log(`goship ${ms.toFixed(0)} ms; monitor cpu ${mon} s\n${up}`);
  console.log(r.stderr.split('\n').filter((l) => /qemu|agent|spawn|running|ready/i.test(l)).slice(0, 12).join('\n'));
  g('project', 'delete', `g${i}`, '--force');
  // plain
  g('project', 'create', `q${i}`, '--cpus', '2', '--memory', '1G', '--no-start');
  const pv = await rt.vms.get(`q${i}`);
  const argv = await rt.vms.argvFor(pv.config);
  mkdirSync(dirname(pv.paths.qmpSocket), { recursive: true, mode: 0o700 });
  const p0 = now();
  const { child, exited } = spawnPlain(argv);
  await waitForFile(pv.paths.qmpSocket);
  let q; for (;;) { try { q = await QmpClient.connect(pv.paths.qmpSocket, { timeoutMs: 5000 }); break; } catch { await sleep(5); } }
  await q.cont(); await q.close();
  const a = await AgentClient.connect(pv.paths.agentSocket, { timeoutMs: 240000 });
  const pms = now() - p0;
  let out = ''; const { Writable } = await import('node:stream'); const w = new Writable({ write(c, e, cb) { out += c; cb(); } });
  await a.exec(['sh', '-c', 'cut -d" " -f1 /proc/uptime; systemd-analyze | head -1; journalctl -b -o short-monotonic -u goship-agent | head -3'], { stdout: w, timeoutMs: 60000 });
  console.log(`plain ${pms.toFixed(0)} ms\n${out.trim()}`);
  await a.close(); child.kill('SIGKILL'); await exited;
  g('project', 'delete', `q${i}`, '--force');
}
await t.cleanup?.();
