/**
 * The one way QEMU starts (src/monitor/qemu-child.ts) for real, with a
 * stand-in for QEMU: it gets exactly its words (spaces, commas, empty words,
 * `--` and `-n` intact), no stdin, its own log, its own session, through its
 * jailed command (src/jail/command.ts): a scrubbed environment, umask 077,
 * its PID in the cgroup files named, the identity asked for with only the
 * groups asked for; the spawner (the monitor) is its parent and gets its exit
 * status.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { jailedCommand, type Identity } from '../../src/jail/index.ts';
import { spawnQemu } from '../../src/monitor/index.ts';
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
  'printf "ppid<%s>\\n" "$(cut -d" " -f4 /proc/$$/stat)"',
  'sleep 0.3',
  '[ "$end" = kill ] && kill -9 $$',
  'exit "$end"',
].join('\n');

let launches = 0;

async function launch(end: string, jail: { identity?: Identity; groups?: number[]; cgroupProcs?: string[] } = {}) {
  const log = join(dir.dir, `qemu-${end}-${++launches}.log`);
  const qemuArgv = ['/bin/sh', '-c', FAKE_QEMU, 'fake-qemu', end, 'a b', '', '--', 'file=/x,,y', '-n', '*'];
  const q = spawnQemu({ exec: jailedCommand({ qemuArgv, ...jail }), log });
  await q.spawned;
  const exit = await q.exited;
  return { pid: q.pid, exit, log: await readFile(log, 'utf8') };
}

describe('spawnQemu: the one way QEMU starts', () => {
  it('runs QEMU with exactly its words, as a child of the spawner, which gets its exit code', async () => {
    const r = await launch('7');
    expect(r.exit).toEqual({ code: 7, signal: null });
    const lines = r.log.trim().split('\n');
    expect(lines.slice(0, 6)).toEqual(['arg<a b>', 'arg<>', 'arg<-->', 'arg<file=/x,,y>', 'arg<-n>', 'arg<*>']);
    expect(lines).toContain('stdin</dev/null>');
    expect(lines).toContain('fd3<none>');
    // setsid without a fork: QEMU's PID is the one spawned, the leader of its own session, the spawner's child.
    expect(lines).toContain(`pid<${r.pid}> sid<${r.pid}>`);
    expect(lines).toContain(`ppid<${process.pid}>`);
    expect(lines).toContain('arena<unsetunset>');
    // Nothing of the spawner's environment (its secrets, the monitor's malloc settings): only the jail's PATH.
    expect(lines).toContain('env<PATH >');
    expect(lines).toContain('path</usr/sbin:/usr/bin:/sbin:/bin>');
    expect(lines).toContain('umask<0077>');
  });

  it('a QEMU killed by a signal: the spawner gets the signal', async () => {
    const r = await launch('kill');
    expect(r.exit).toEqual({ code: null, signal: 'SIGKILL' });
  });

  it('as root (the tests run as root), QEMU runs as the identity asked for, with no supplementary groups', async () => {
    const r = await launch('0', { identity: { uid: 65534, gid: 65534 } });
    expect(r.log).toContain('uid<65534> groups<65534>');
    expect(r.exit).toEqual({ code: 0, signal: null });
  });

  it('keeps exactly the supplementary groups asked for (a KVM VM keeps the group of /dev/kvm)', async () => {
    const r = await launch('0', { identity: { uid: 65534, gid: 65534 }, groups: [44] });
    expect(r.log).toContain('uid<65534> groups<65534 44>');
  });

  it("writes QEMU's PID into each cgroup file named before QEMU runs, and a file it cannot write stops QEMU with 125", async () => {
    const procs = [join(dir.dir, 'memory.procs'), join(dir.dir, 'cpu.procs')];
    const r = await launch('0', { cgroupProcs: procs });
    for (const p of procs) expect(await readFile(p, 'utf8')).toBe(`${r.pid}\n`);
    const refused = await launch('0', { cgroupProcs: [join(dir.dir, 'no-such-dir', 'cgroup.procs')] });
    expect(refused.exit).toEqual({ code: 125, signal: null });
    expect(refused.log).not.toContain('arg<a b>');
  });

  it('a binary that does not exist: spawned rejects with ENOENT', async () => {
    const q = spawnQemu({ exec: ['/nonexistent/qemu-system-x86_64'], log: join(dir.dir, 'missing.log') });
    await expect(q.spawned).rejects.toMatchObject({ code: 'ENOENT' });
  });
});
