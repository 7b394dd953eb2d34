/**
 * The launcher (src/monitor/launcher.ts) for real: /bin/sh forks a stand-in
 * for QEMU and execs a stand-in for the monitor. What must hold: QEMU gets
 * exactly its words (spaces, commas, empty words, `--` and `-n` intact), no
 * stdin, its own log, its own session, through its jailed command
 * (src/jail/command.ts): a scrubbed environment, umask 077, its PID in the
 * cgroup files named, the identity asked for with only the groups asked for;
 * the monitor gets its words plus `--qemu-pid`, is QEMU's parent, and reads
 * QEMU's exit status from the zombie (src/proc.ts).
 */
import { spawn } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { jailedCommand, type Identity } from '../../src/jail/index.ts';
import { launcherArgv, monitorEnv } from '../../src/monitor/index.ts';
import { statExit } from '../../src/proc.ts';
import { tempDir } from '../helpers/agent-process.ts';

let dir: { dir: string; cleanup: () => Promise<void> };

beforeAll(async () => {
  dir = await tempDir('gs-launch-');
});
afterAll(async () => {
  await dir.cleanup();
});

/** The stand-in for QEMU: says what it got and what it is, then ends as told by its first word. */
const FAKE_QEMU = [
  'end=$1; shift',
  'for a do printf "arg<%s>\\n" "$a"; done',
  'printf "stdin<%s>\\n" "$(readlink /proc/self/fd/0)"',
  'printf "fd3<%s>\\n" "$(readlink /proc/self/fd/3 || echo none)"',
  'set -- $(cut -d" " -f1,6 /proc/$$/stat)',
  'printf "pid<%s> sid<%s>\\n" "$1" "$2"',
  'printf "uid<%s> groups<%s>\\n" "$(id -u)" "$(id -G)"',
  'printf "arena<%s>\\n" "${MALLOC_ARENA_MAX-unset}${MALLOC_MMAP_THRESHOLD_-unset}${GOSHIP_MONITOR_MALLOC-}"',
  'printf "env<%s>\\n" "$(env | cut -d= -f1 | grep -v "^PWD$" | sort | tr "\\n" " ")"',
  'printf "umask<%s>\\n" "$(umask)"',
  'printf "path<%s>\\n" "$PATH"',
  'sleep 0.3',
  '[ "$end" = kill ] && kill -9 $$',
  'exit "$end"',
].join('\n');

/** The stand-in for the monitor: reports its argv, QEMU's parent, and QEMU's /proc/PID/stat once it is a zombie. */
const FAKE_MONITOR = `
const fs = require('node:fs');
const pid = Number(process.argv[process.argv.indexOf('--qemu-pid') + 1]);
const ppid = Number(fs.readFileSync('/proc/' + pid + '/stat', 'latin1').split(') ')[1].split(' ')[1]);
const timer = setInterval(() => {
  const stat = fs.readFileSync('/proc/' + pid + '/stat', 'latin1');
  if (stat.split(') ')[1][0] !== 'Z') return;
  clearInterval(timer);
  console.log(JSON.stringify({ argv: process.argv.slice(1), self: process.pid, ppid, arena: process.env.MALLOC_ARENA_MAX ?? null, mmap: process.env.MALLOC_MMAP_THRESHOLD_ ?? null, stat }));
}, 20);
`;

let launches = 0;

async function launch(end: string, jail: { identity?: Identity; groups?: number[]; cgroupProcs?: string[] } = {}) {
  const log = join(dir.dir, `qemu-${end}-${++launches}.log`);
  const qemuArgv = ['/bin/sh', '-c', FAKE_QEMU, 'fake-qemu', end, 'a b', '', '--', 'file=/x,,y', '-n', '*'];
  const qemuExec = jailedCommand({ qemuArgv, ...jail });
  const argv = launcherArgv({ qemuExec, qemuLog: log, monitorArgv: [process.execPath, '-e', FAKE_MONITOR, 'monitor word'] });
  const child = spawn(argv[0]!, argv.slice(1), { stdio: ['ignore', 'pipe', 'inherit', 'pipe'], env: monitorEnv({ PATH: process.env.PATH, SECRET_TOKEN: 'x' }) });
  let out = '';
  let report = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  child.stdio[3]!.on('data', (d: Buffer) => (report += d.toString()));
  const code = await new Promise<number | null>((r) => child.once('exit', r));
  return { code, pid: child.pid!, out: JSON.parse(out) as { argv: string[]; self: number; ppid: number; arena: string | null; mmap: string | null; stat: string }, report, log: await readFile(log, 'utf8') };
}

describe('the launcher', () => {
  it('forks QEMU with exactly its words and execs the monitor, which is its parent and reads its exit code', async () => {
    const r = await launch('7');
    expect(r.code).toBe(0);
    // exec kept the shell's PID: the monitor is the process the starter spawned, and QEMU's parent.
    expect(r.out.self).toBe(r.pid);
    expect(r.out.ppid).toBe(r.pid);
    const qemuPid = Number(r.out.argv.at(-1));
    expect(r.out.argv).toEqual(['monitor word', '--qemu-pid', String(qemuPid)]);
    expect(r.report).toBe(`{"t":"forked","pid":${qemuPid}}\n`);
    expect(r.out.arena).toBe('1');
    expect(r.out.mmap).toBe('32768');
    expect(statExit(r.out.stat)).toEqual({ code: 7, signal: null });
    const lines = r.log.trim().split('\n');
    expect(lines.slice(0, 6)).toEqual(['arg<a b>', 'arg<>', 'arg<-->', 'arg<file=/x,,y>', 'arg<-n>', 'arg<*>']);
    expect(lines).toContain('stdin</dev/null>');
    expect(lines).toContain('fd3<none>');
    expect(lines).toContain(`pid<${qemuPid}> sid<${qemuPid}>`);
    expect(lines).toContain('arena<unsetunset>');
    // Nothing of the starter's environment (SECRET_TOKEN, the monitor's malloc settings): only the jail's PATH.
    expect(lines).toContain('env<PATH >');
    expect(lines).toContain('path</usr/sbin:/usr/bin:/sbin:/bin>');
    expect(lines).toContain('umask<0077>');
  });

  it('a QEMU killed by a signal: the monitor reads the signal', async () => {
    const r = await launch('kill');
    expect(statExit(r.out.stat)).toEqual({ code: null, signal: 'SIGKILL' });
  });

  it('as root (the tests run as root), QEMU runs as the identity asked for, with no supplementary groups', async () => {
    const r = await launch('0', { identity: { uid: 65534, gid: 65534 } });
    expect(r.log).toContain('uid<65534> groups<65534>');
    expect(statExit(r.out.stat)).toEqual({ code: 0, signal: null });
  });

  it('keeps exactly the supplementary groups asked for (a KVM VM keeps the group of /dev/kvm)', async () => {
    const r = await launch('0', { identity: { uid: 65534, gid: 65534 }, groups: [44] });
    expect(r.log).toContain('uid<65534> groups<65534 44>');
  });

  it('writes QEMU\'s PID into each cgroup file named before QEMU runs, and a file it cannot write stops QEMU with 125', async () => {
    const procs = [join(dir.dir, 'memory.procs'), join(dir.dir, 'cpu.procs')];
    const r = await launch('0', { cgroupProcs: procs });
    const qemuPid = Number(r.out.argv.at(-1));
    for (const p of procs) expect(await readFile(p, 'utf8')).toBe(`${qemuPid}\n`);
    const refused = await launch('0', { cgroupProcs: [join(dir.dir, 'no-such-dir', 'cgroup.procs')] });
    expect(statExit(refused.out.stat)).toEqual({ code: 125, signal: null });
    expect(refused.log).not.toContain('arg<a b>');
  });
});

