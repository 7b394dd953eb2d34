import { execFileSync, spawn } from 'node:child_process';
import { readFileSync, existsSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { Runtime } from '../../dist/lib.mjs';
import { imageEnv } from '../lib.mjs';
const cli = new URL('../../bin/goshipctl.cjs', import.meta.url).pathname;
const t = await imageEnv('bz');
const rt = await Runtime.open({ layout: t.layout });
const g = (...args) => execFileSync(process.execPath, [cli, ...args], { env: t.env, stdio: ['ignore', 'pipe', 'inherit'] }).toString();
const c = spawn(process.execPath, [cli, 'project', 'create', 'h1', '--cpus', '2', '--memory', '1G', '--wait', 'agent'], { env: t.env, stdio: 'inherit' });
let pid;
for (;;) { await sleep(50); try { const vm = await rt.vms.get('h1'); if (vm?.monitor?.pid) { pid = vm.monitor.pid; break; } } catch {} }
const s = spawn('strace', ['-c', '-f', '-p', String(pid), '-o', '/tmp/mon.strace'], { stdio: 'inherit' });
await new Promise((r) => c.once('exit', r));
s.kill('SIGINT');
await new Promise((r) => s.once('exit', r));
console.log(readFileSync('/tmp/mon.strace', 'utf8').split('\n').slice(0, 25).join('\n'));
console.log(readFileSync((await rt.vms.get('h1')).paths.consoleLog).length, 'console bytes');
g('project', 'delete', 'h1', '--force');
