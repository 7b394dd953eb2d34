/**
 * Projects end to end through goshipctl: two projects with their own VMs on
 * the real Debian image, list/info, stop/start/delete, nothing left behind;
 * crash safety (kill -9 of goshipctl inside create and delete); 20 concurrent
 * goshipctl processes; bad input.
 */
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { readFile, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isOurProcess, processMarker } from '../../src/qemu/index.ts';
import { CLI, goshipctl } from '../helpers/cli.ts';
import { projectEnv, type ProjectEnv } from '../helpers/project-env.ts';
import { banner, freePort } from '../helpers/net.ts';

let env: ProjectEnv;

interface ProjectJson {
  name: string;
  state: string;
  lastError?: string;
  spec: { cpus: number; memoryBytes: number; ports: { proto: string; host: number; guest: number }[] };
  vm: { id: string; state: string; pid: number | null; agent: { hostname: string } | null; paths: { overlay?: string; qmpSocket: string } } | null;
  boot?: { wait: string; steps: { step: string; atMs: number; skipped?: string }[]; totalMs: number };
}

/** What a project's guest says, at once, about its boot: network-online.target, cloud-init, cloud-init's view of GoShip's user-data. */
async function guestBoot(name: string): Promise<string[]> {
  const r = await g(['vm', 'exec', name, '--', 'sh', '-c', 'systemctl is-active network-online.target; cloud-init status; cloud-init schema --system >/dev/null 2>&1 && echo schema valid']);
  return r.stdout.trim().split('\n');
}

const g = (args: string[], timeoutMs = 400_000) => goshipctl(args, env.env, { timeoutMs });
const json = async <T>(args: string[]): Promise<T> => {
  const r = await g([...args, '--json']);
  if (r.code !== 0) throw new Error(`goshipctl ${args.join(' ')} failed (${r.code}): ${r.stderr}`);
  return JSON.parse(r.stdout) as T;
};

async function qemuOfEnv(): Promise<number[]> {
  const { stdout } = await execa('pgrep', ['-f', `path=${env.layout.run}/`], { reject: false });
  return stdout.split('\n').filter(Boolean).map(Number);
}

beforeAll(async () => {
  env = await projectEnv('ep');
}, 600_000);

afterAll(async () => {
  await env?.cleanupAll();
}, 60_000);

describe('two projects, each with its own VM', () => {
  it('create, list, info, exec, stop, start, delete; nothing left behind', async () => {
    const sshPort = await freePort();
    const alpha = await json<ProjectJson>(['project', 'create', 'alpha', '--cpus', '1', '--memory', '768M', '--disk', '3G', '--port', `${sshPort}:22`]);
    // Ready means usable: network online, cloud-init done (and happy with the user-data), the forward answering, at once.
    expect(await guestBoot('alpha')).toEqual(['active', 'status: done', 'schema valid']);
    expect(await banner(sshPort)).toBe('SSH-2.0');
    expect((await g(['vm', 'exec', 'alpha', '--', 'hostname'])).stdout.trim()).toBe('alpha');
    expect(alpha.boot?.wait).toBe('boot');
    expect(alpha.boot?.steps.map((s) => [s.step, s.skipped ?? null])).toEqual([
      ['qemu', null],
      ['agent', null],
      ['network', null],
      ['cloud-init', null],
    ]);
    const at = alpha.boot!.steps.map((s) => s.atMs);
    expect([...at].sort((x, y) => x - y)).toEqual(at);
    expect(alpha.boot!.totalMs).toBeGreaterThanOrEqual(at.at(-1)!);
    // --wait agent: ready as soon as the agent answers (today's earlier "ready"); nothing after it is waited for.
    const beta = await json<ProjectJson>(['project', 'create', 'beta', '--cpus', '1', '--memory', '768M', '--wait', 'agent']);
    expect(beta.boot?.wait).toBe('agent');
    expect(beta.boot?.steps.map((s) => s.step)).toEqual(['qemu', 'agent']);
    for (const [p, name] of [
      [alpha, 'alpha'],
      [beta, 'beta'],
    ] as const) {
      expect(p.name).toBe(name);
      expect(p.state).toBe('ready');
      expect(p.vm?.state).toBe('ready');
      expect(await isOurProcess(p.vm!.pid!, processMarker(name))).toBe(true);
    }
    expect(alpha.vm!.pid).not.toBe(beta.vm!.pid);
    expect(alpha.vm!.paths.overlay).not.toBe(beta.vm!.paths.overlay);

    const list = await json<ProjectJson[]>(['project', 'list']);
    expect(list.map((p) => [p.name, p.state, p.vm?.state, p.spec.cpus])).toEqual([
      ['alpha', 'ready', 'ready', 1],
      ['beta', 'ready', 'ready', 1],
    ]);
    const info = await json<ProjectJson & { diskUsageBytes: number }>(['project', 'info', 'alpha']);
    expect(info.spec.memoryBytes).toBe(768 * 1024 * 1024);
    expect(info.spec.ports).toEqual([{ proto: 'tcp', host: sshPort, guest: 22 }]);
    expect(info.diskUsageBytes).toBeGreaterThan(0);
    expect(info.vm?.agent).not.toBeNull();

    // Each VM has its own hostname (set by cloud-init), and the forwarded port reaches alpha's sshd.
    for (const name of ['alpha', 'beta']) {
      let host = '';
      for (let i = 0; i < 120 && host !== name; i++) {
        host = (await g(['vm', 'exec', name, '--', 'hostname'])).stdout.trim();
        if (host !== name) await new Promise((r) => setTimeout(r, 1000));
      }
      expect(host).toBe(name);
    }
    const exit = await g(['vm', 'exec', 'alpha', '--', 'sh', '-c', 'exit 7']);
    expect(exit.code).toBe(7);

    // `vm exec … | head`: a closed stdout ends goshipctl quietly (141, like SIGPIPE) and cancels the command in the guest.
    const piped = await execa(
      'bash',
      ['-c', `node "$CLI" vm exec alpha -- sh -c 'seq 1 1000000; exec sleep 300' | head -c 6; echo " \${PIPESTATUS[0]}"`],
      { env: { ...env.env, CLI }, reject: false },
    );
    expect([piped.stdout, piped.stderr]).toEqual(['1\n2\n3\n 141', '']);
    let left = 'sleep';
    for (let i = 0; i < 50 && left.includes('sleep'); i++) {
      left = (await g(['vm', 'exec', 'alpha', '--', 'ps', '-eo', 'args'])).stdout.split('\n').filter((l) => l === 'sleep 300').join();
      if (left) await new Promise((r) => setTimeout(r, 200));
    }
    expect(left).toBe('');

    const stop = await json<{ state: string; endedBy: string; vm: { state: string } }>(['project', 'stop', 'alpha']);
    expect(stop.state).toBe('stopped');
    expect(stop.vm.state).toBe('stopped');
    expect(stop.endedBy).toBe('agent');
    expect(await isOurProcess(alpha.vm!.pid!, processMarker('alpha'))).toBe(false);
    const started = await json<ProjectJson>(['project', 'start', 'alpha']);
    expect(started.state).toBe('ready');
    // A second boot is ready in the same sense.
    expect(started.boot?.steps.map((s) => s.step)).toEqual(['qemu', 'agent', 'network', 'cloud-init']);
    expect(await guestBoot('alpha')).toEqual(['active', 'status: done', 'schema valid']);
    expect(await banner(sshPort)).toBe('SSH-2.0');

    // A project whose VM crashed (kill -9 of its QEMU, no restart policy) says so, with the reason and what to run.
    process.kill(beta.vm!.pid!, 'SIGKILL');
    let crashed: ProjectJson | undefined;
    for (let i = 0; i < 100 && crashed?.state !== 'crashed'; i++) {
      crashed = (await json<ProjectJson[]>(['project', 'list'])).find((p) => p.name === 'beta');
      if (crashed?.state !== 'crashed') await new Promise((r) => setTimeout(r, 200));
    }
    expect([crashed?.state, crashed?.vm?.state]).toEqual(['crashed', 'crashed']);
    expect(crashed?.lastError).toMatch(/^its VM crashed: QEMU was killed by SIGKILL.*; start it again: goshipctl project start beta \(the VM's logs: goshipctl vm status beta\)$/);
    expect((await g(['project', 'list'])).stdout).toMatch(/^beta +local +crashed +crashed /m);

    const refuse = await g(['project', 'delete', 'alpha']);
    expect(refuse.code).toBe(4);
    expect(refuse.stderr.split('\n')[0]).toBe('goshipctl: error: project alpha is running');
    expect((await g(['project', 'delete', 'alpha', '--force'])).code).toBe(0);
    expect((await g(['project', 'delete', 'beta', '--force'])).code).toBe(0);

    expect(await qemuOfEnv()).toEqual([]);
    expect(existsSync(alpha.vm!.paths.overlay!)).toBe(false);
    expect(existsSync(beta.vm!.paths.overlay!)).toBe(false);
    expect(existsSync(env.layout.run) ? await readdir(env.layout.run) : []).toEqual([]);
    expect(await readdir(env.layout.vmsDir)).toEqual([]);
    expect(await json<unknown[]>(['project', 'list'])).toEqual([]);
    expect(await json<unknown[]>(['vm', 'list'])).toEqual([]);
  }, 900_000);
});

describe('crash safety', () => {
  it('kill -9 of goshipctl inside project create and delete leaves a state the next command recovers from', async () => {
    // Kill create after its VM has been spawned (QEMU is up, the agent not yet ready).
    const child = spawn(process.execPath, [CLI, 'project', 'create', 'crashy'], { env: env.env, stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const exited = new Promise((r) => child.once('exit', r));
    const deadline = Date.now() + 60_000;
    while ((await qemuOfEnv()).length === 0 && Date.now() < deadline && child.exitCode === null) await new Promise((r) => setTimeout(r, 50));
    expect({ qemus: (await qemuOfEnv()).length, stderr }).toEqual({ qemus: 1, stderr: '' });
    child.kill('SIGKILL');
    await exited;

    const list = await json<ProjectJson[]>(['project', 'list']);
    const crashy = list.find((p) => p.name === 'crashy')!;
    expect(crashy.state).toBe('broken');
    expect(crashy.lastError).toMatch(/^create was interrupted \(goshipctl pid \d+ is gone\)/);
    // The orphaned QEMU is accounted for: the VM record knows its PID.
    const [qemu] = await qemuOfEnv();
    expect(crashy.vm?.pid).toBe(qemu);

    // Kill delete in the middle; the next delete finishes the job.
    const del = spawn(process.execPath, [CLI, 'project', 'delete', 'crashy', '--force'], { env: env.env, stdio: 'ignore' });
    const delExited = new Promise((r) => del.once('exit', r));
    await new Promise((r) => setTimeout(r, 400));
    del.kill('SIGKILL');
    await delExited;
    const after = await json<ProjectJson[]>(['project', 'list']);
    if (after.some((p) => p.name === 'crashy')) {
      const again = await g(['project', 'delete', 'crashy', '--force']);
      if (again.code !== 0) console.log('SECOND DELETE', again.stderr, await readFile(join(env.layout.vmDir('crashy'), 'monitor.log'), 'utf8').catch(() => 'no log'));
      expect(again.code).toBe(0);
    }
    expect(await json<unknown[]>(['project', 'list'])).toEqual([]);
    expect(await qemuOfEnv()).toEqual([]);
    expect(await json<unknown[]>(['vm', 'list'])).toEqual([]);
  }, 300_000);
});

describe('concurrency', () => {
  it('20 goshipctl processes changing the state at once lose no update', async () => {
    const first = Array.from({ length: 10 }, (_, i) => `c${i + 1}`);
    const second = Array.from({ length: 10 }, (_, i) => `c${i + 11}`);
    const made = await Promise.all(first.map((n) => g(['project', 'create', n, '--no-start', '--memory', '256M'])));
    expect(made.map((r) => r.code)).toEqual(first.map(() => 0));
    // 20 at once: 10 creates and 10 deletes of other projects.
    const mixed = await Promise.all([
      ...second.map((n) => g(['project', 'create', n, '--no-start', '--memory', '256M'])),
      ...first.map((n) => g(['project', 'delete', n])),
    ]);
    expect(mixed.map((r) => [r.code, r.stderr])).toEqual(mixed.map(() => [0, '']));
    // Only this test's projects count: a project another test left behind (a failure there) must not fail this one too.
    const mine = (names: string[]) => names.filter((n) => /^c\d+$/.test(n)).sort();
    const list = (await json<ProjectJson[]>(['project', 'list'])).filter((p) => /^c\d+$/.test(p.name));
    expect(list.map((p) => p.name).sort()).toEqual([...second].sort());
    expect(list.every((p) => p.state === 'stopped' && p.vm?.state === 'defined')).toBe(true);
    expect(mine(await readdir(env.layout.vmsDir))).toEqual([...second].sort());
    await Promise.all(second.map((n) => g(['project', 'delete', n])));
    expect(mine((await json<ProjectJson[]>(['project', 'list'])).map((p) => p.name))).toEqual([]);
  }, 300_000);

  it('two project create of the same name at once: exactly one wins, the other gets a clear error', async () => {
    const rs = await Promise.all([0, 1].map(() => g(['project', 'create', 'twin', '--no-start', '--memory', '256M'])));
    expect(rs.map((r) => r.code).sort()).toEqual([0, 4]);
    const loser = rs.find((r) => r.code === 4)!;
    expect(loser.stderr.split('\n')[0]).toBe('goshipctl: error: project twin already exists');
    expect((await json<ProjectJson[]>(['project', 'list'])).map((p) => p.name).filter((n) => n === 'twin')).toEqual(['twin']);
    expect((await g(['project', 'delete', 'twin'])).code).toBe(0);
  }, 120_000);
});

describe('bad input: one line, an exit code, no change', () => {
  it.each([
    [['--memory', '0'], '--memory:'],
    [['--cpus', '1000'], '--cpus: expected a whole number from 1 to'],
    [['--port', '70000:22'], '--port[0]: host port 70000 is out of range'],
    [['--port', '2222:22', '--port', '2222:80'], '--port[1]: host port tcp:2222 is already forwarded (to guest port 22)'],
    [['--image', 'nope'], 'image nope does not exist'],
    [['--cpus', '0x2'], '--cpus: expected a whole number of vCPUs, got "0x2"'],
    [['--wait', 'network'], '--wait: expected boot or agent, got "network"'],
  ])('project create %j', async (args, needle) => {
    await g(['project', 'create', 'taken', '--no-start', '--memory', '256M']);
    const before = await json<unknown>(['project', 'list']);
    const r = await g(['project', 'create', 'fresh', ...(args as string[])]);
    expect([2, 3]).toContain(r.code);
    const [line, ...rest] = r.stderr.split('\n');
    expect(line).toContain(needle);
    expect(rest.every((l) => l.startsWith('hint: '))).toBe(true);
    expect(await json<unknown>(['project', 'list'])).toEqual(before);
    const again = await g(['project', 'create', 'taken', '--no-start']);
    expect(again.code).toBe(4);
    expect(again.stderr.split('\n')[0]).toBe('goshipctl: error: project taken already exists');
    await g(['project', 'delete', 'taken']);
  }, 60_000);
});
