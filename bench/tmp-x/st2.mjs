import { execFileSync, spawnSync } from 'node:child_process';
import { imageEnv } from '../lib.mjs';
const cli = new URL('../../bin/goshipctl.cjs', import.meta.url).pathname;
const t = await imageEnv('bv');
const g = (...args) => execFileSync(process.execPath, [cli, ...args], { env: t.env, stdio: ['ignore', 'pipe', 'inherit'] }).toString();
const r = spawnSync('strace', ['-f', '-tt', '-e', 'trace=execve', '-o', '/tmp/cli.strace', process.execPath, cli, 'project', 'create', 'h3', '--cpus', '2', '--memory', '1G', '--wait', 'agent'], { env: { ...t.env, GOSHIP_TRACE: '1' }, encoding: 'utf8' });
console.log(r.stderr.split('\n').filter(l => l.startsWith('[+')).join('\n'));
g('project', 'delete', 'h3', '--force');
