import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { Runtime } from '../../dist/lib.mjs';
import { imageEnv } from '../lib.mjs';
const cli = new URL('../../bin/goshipctl.cjs', import.meta.url).pathname;
const t = await imageEnv('bw');
const rt = await Runtime.open({ layout: t.layout });
const g = (...args) => execFileSync(process.execPath, [cli, ...args], { env: t.env, stdio: ['ignore', 'pipe', 'inherit'] }).toString();
g('project', 'create', 'h2', '--cpus', '2', '--memory', '1G', '--wait', 'agent');
const vm = await rt.vms.get('h2');
const cg = readFileSync(`/proc/${vm.pid}/cgroup`, 'utf8').trim();
console.log(cg);
const dir = '/sys/fs/cgroup' + cg.split('::')[1];
for (const f of ['cpu.max', 'cpu.weight', 'cpu.stat', 'memory.max', 'memory.current', 'memory.events', 'io.pressure', 'cpu.pressure', 'memory.pressure']) { try { console.log(f, '=>', readFileSync(`${dir}/${f}`, 'utf8').trim().replace(/\n/g, ' | ')); } catch (e) { console.log(f, e.code); } }
console.log(readFileSync(`/proc/${vm.pid}/status`, 'utf8').split('\n').filter(l => /Cpus_allowed_list|voluntary|Uid/.test(l)).join('\n'));
g('project', 'delete', 'h2', '--force');
