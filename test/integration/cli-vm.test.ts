/**
 * goshipctl as a user runs it: the bundled CLI in a real process, against real
 * QEMU and the fast test guest. Covers `vm args` and its bad-input answers,
 * and the VM lifecycle commands.
 */
import { existsSync } from 'node:fs';
import { mkdir, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isOurProcess, processMarker } from '../../src/qemu/index.ts';
import { goshipctl } from '../helpers/cli.ts';
import { fastGuest, type FastGuest } from '../helpers/fast-guest.ts';
import { testEnv, type TestEnv } from '../helpers/runtime-env.ts';

let env: TestEnv;
let guest: FastGuest;
let specDir: string;

async function specFile(name: string, body: string): Promise<string> {
  const f = join(specDir, name);
  await writeFile(f, body);
  return f;
}

beforeAll(async () => {
  guest = await fastGuest();
  env = await testEnv('cv');
  specDir = join(env.root, 'specs');
  await mkdir(specDir, { recursive: true });
}, 300_000);

afterAll(async () => {
  const { stdout } = await execa('pgrep', ['-f', 'process=goship-cv-'], { reject: false });
  for (const pid of stdout.split('\n').filter(Boolean)) process.kill(Number(pid), 'SIGKILL');
  await env.cleanup();
});

describe('goshipctl help and usage errors', () => {
  it('shows the commands with examples when run with no arguments', async () => {
    const r = await goshipctl([], env.env);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('project create NAME');
    expect(r.stdout).toContain('vm args SPEC');
    expect(r.stdout).toContain('Examples');
  });

  it('an unknown command is a one-line error with exit code 2', async () => {
    const r = await goshipctl(['frobnicate'], env.env);
    expect(r.code).toBe(2);
    expect(r.stderr).toBe('goshipctl: error: unknown command: frobnicate\nhint: goshipctl --help lists the commands');
    const r2 = await goshipctl(['vm', 'frobnicate'], env.env);
    expect(r2.code).toBe(2);
    expect(r2.stderr.split('\n')[0]).toBe('goshipctl: error: unknown command: vm frobnicate');
  });
});

describe('goshipctl vm args', () => {
  it('prints the argv shell-quoted on one line, and as a JSON array with --json', async () => {
    const disk = join(env.root, 'my disk,1.qcow2');
    await execa('qemu-img', ['create', '-q', '-f', 'qcow2', disk, '16M']);
    const f = await specFile(
      'web.yaml',
      `name: cv-web\naccel: tcg\nmemory: 256M\nboot:\n  kernel: ${guest.kernel}\n  initrd: ${guest.initrd}\n  cmdline: console=ttyS0\ndisks:\n  - path: ${disk}\nnetwork:\n  mode: none\n`,
    );
    const json = await goshipctl(['vm', 'args', f, '--json'], env.env);
    expect(json.code).toBe(0);
    const argv = JSON.parse(json.stdout) as string[];
    expect(argv[0]).toBe('qemu-system-x86_64');
    expect(argv).toContain(`driver=file,filename=${disk.replace(/,/g, ',,')},node-name=disk0-file,read-only=off,cache.direct=off,cache.no-flush=off,discard=unmap`);
    const human = await goshipctl(['vm', 'args', f], env.env);
    expect(human.code).toBe(0);
    expect(human.stdout.trim().split('\n')).toHaveLength(1);
    // The shell-quoted line, parsed back by a real shell, is the same argv.
    const back = await execa('bash', ['-c', `printf '%s\\0' ${human.stdout.trim()}`]);
    expect(back.stdout.split('\0').filter((x, i, all) => i < all.length - 1 || x !== '')).toEqual(argv);
  });

  it('the example --help names, examples/vm.yaml, exists and becomes an argv', async () => {
    const repo = join(import.meta.dirname, '..', '..');
    expect((await goshipctl([], env.env)).stdout).toContain('goshipctl vm args examples/vm.yaml --json');
    const r = await goshipctl(['vm', 'args', 'examples/vm.yaml', '--json'], env.env, { cwd: repo });
    expect([r.code, r.stderr]).toEqual([0, '']);
    const argv = JSON.parse(r.stdout) as string[];
    expect(argv.slice(0, 3)).toEqual(['qemu-system-x86_64', '-name', 'guest=example,process=goship-example']);
    expect(argv).toContain('user,id=net0,hostfwd=tcp:127.0.0.1:8022-:22,hostfwd=udp:127.0.0.1:5353-:53');
    expect(argv[argv.indexOf('-m') + 1]).toBe('size=512M');
  });

  const bad: [string, string, string][] = [
    ['a name with /', 'name: "a/b"', 'name: expected 1-63 lowercase letters, digits or "-", not starting with "-" (it is used in file names), got "a/b"'],
    ['a name with ..', 'name: ".."', 'name: expected 1-63 lowercase letters, digits or "-", not starting with "-" (it is used in file names), got ".."'],
    ['an empty name', 'name: ""', 'name: expected 1-63 lowercase letters, digits or "-", not starting with "-" (it is used in file names), got an empty string'],
    ['a 64-character name', `name: ${'a'.repeat(64)}`, 'got 64 characters'],
    ['memory 0', 'name: x\nmemory: 0', 'memory:'],
    ['memory -1', 'name: x\nmemory: -1', 'memory:'],
    ['memory abc', 'name: x\nmemory: abc', 'memory:'],
    ['more memory than the host has', 'name: x\nmemory: 100T', 'memory:'],
    ['0 vCPUs', 'name: x\ncpu:\n  count: 0', 'cpu.count:'],
    ['more vCPUs than the host allows', 'name: x\ncpu:\n  count: 4096', 'cpu.count:'],
    ['a disk that does not exist', 'name: x\ndisks:\n  - path: /nonexistent/disk.qcow2', 'disks[0].path:'],
    ['an unknown accelerator', 'name: x\naccel: hvf', 'accel: expected'],
    ['sev-snp on a host without it', 'name: x\nconfidential:\n  type: sev-snp', 'confidential.type:'],
    ['a YAML file that does not parse', 'name: [unclosed', 'cannot parse VM spec'],
  ];
  for (const [what, body, needle] of bad) {
    it(`refuses ${what}: one line, exit 2, nothing written`, async () => {
      const f = await specFile(`bad-${what.replace(/\W+/g, '-')}.yaml`, `${body}\n`);
      const r = await goshipctl(['vm', 'args', f], env.env);
      expect(r.code).toBe(2);
      expect(r.stdout).toBe('');
      const [line, hint, ...more] = r.stderr.split('\n');
      expect(line).toMatch(/^goshipctl: error: /);
      expect(line).toContain(needle);
      expect(hint ?? '').toMatch(/^(hint: .*)?$/);
      expect(more).toEqual([]);
      expect(existsSync(join(env.layout.home, 'state.json'))).toBe(false);
      expect(existsSync(env.layout.vmsDir)).toBe(false);
    });
  }
});

describe('goshipctl vm lifecycle (fast guest)', () => {
  it('create, start, list, status, qmp, console, stop, destroy', async () => {
    const f = await specFile(
      'life.yaml',
      `name: cv-life\nmemory: 256M\nboot:\n  kernel: ${guest.kernel}\n  initrd: ${guest.initrd}\n  cmdline: ${guest.cmdline}\nnetwork:\n  mode: none\n`,
    );
    expect((await goshipctl(['vm', 'create', f], env.env)).code).toBe(0);
    const dup = await goshipctl(['vm', 'create', f], env.env);
    expect(dup.code).toBe(4);
    expect(dup.stderr.split('\n')[0]).toBe('goshipctl: error: vm cv-life already exists');

    const started = await goshipctl(['vm', 'start', 'cv-life', '--no-wait', '--json'], env.env);
    expect(started.code).toBe(0);
    const vm = JSON.parse(started.stdout) as { state: string; pid: number };
    expect(vm.state).toBe('running');
    // goshipctl has exited; QEMU lives on (detached).
    expect(await isOurProcess(vm.pid, processMarker('cv-life'))).toBe(true);

    const list = JSON.parse((await goshipctl(['vm', 'list', '--json'], env.env)).stdout) as { name: string; state: string; pid: number }[];
    expect(list.map((v) => [v.name, v.state, v.pid])).toEqual([['cv-life', 'running', vm.pid]]);

    const status = JSON.parse((await goshipctl(['vm', 'status', 'cv-life', '--json'], env.env)).stdout) as { qmp: { status: string } };
    expect(status.qmp).toEqual({ status: 'running', running: true });

    const qmp = await goshipctl(['vm', 'qmp', 'cv-life', '{"execute":"query-status"}'], env.env);
    expect(qmp.code).toBe(0);
    expect(JSON.parse(qmp.stdout)).toMatchObject({ return: { status: 'running', running: true } });
    const badQmp = await goshipctl(['vm', 'qmp', 'cv-life', '{"execute":"no-such-command"}'], env.env);
    expect(badQmp.code).toBe(1);
    expect(badQmp.stderr).toContain("The command no-such-command has not been found");

    // The console log fills as the guest boots.
    let consoleText = '';
    for (let i = 0; i < 100 && !consoleText.includes('goship-fastguest: up'); i++) {
      consoleText = (await goshipctl(['vm', 'console', 'cv-life'], env.env)).stdout;
      await new Promise((r) => setTimeout(r, 200));
    }
    expect(consoleText).toContain('goship-fastguest: up');

    const again = await goshipctl(['vm', 'start', 'cv-life', '--no-wait'], env.env);
    expect(again.code).toBe(4);
    expect(again.stderr.split('\n')[0]).toBe(`goshipctl: error: VM cv-life is already running (pid ${vm.pid})`);

    const stop = await goshipctl(['vm', 'stop', 'cv-life', '--force', '--json'], env.env);
    expect(stop.code).toBe(0);
    expect(JSON.parse(stop.stdout)).toMatchObject({ endedBy: 'quit', vm: { state: 'stopped' } });
    expect(await isOurProcess(vm.pid, processMarker('cv-life'))).toBe(false);

    const stopAgain = await goshipctl(['vm', 'stop', 'cv-life'], env.env);
    expect(stopAgain.code).toBe(4);
    expect(stopAgain.stderr.split('\n')[0]).toBe('goshipctl: error: VM cv-life is not running (state: stopped)');

    expect((await goshipctl(['vm', 'destroy', 'cv-life'], env.env)).code).toBe(0);
    expect(existsSync(env.layout.vmDir('cv-life'))).toBe(false);
    const gone = await goshipctl(['vm', 'destroy', 'cv-life'], env.env);
    expect(gone.code).toBe(3);
    expect(gone.stderr.split('\n')[0]).toBe('goshipctl: error: vm cv-life does not exist');
    expect(existsSync(env.layout.run) ? await readdir(env.layout.run) : []).toEqual([]);
  }, 120_000);

  it('vm create --base ./relative.qcow2 takes the path relative to the caller, not to the overlay', async () => {
    await execa('qemu-img', ['create', '-q', '-f', 'qcow2', join(specDir, 'rel-base.qcow2'), '32M']);
    await specFile(
      'rel.yaml',
      `name: cv-rel\nmemory: 256M\nboot:\n  kernel: ${guest.kernel}\n  initrd: ${guest.initrd}\n  cmdline: ${guest.cmdline}\nnetwork:\n  mode: none\n`,
    );
    const made = await goshipctl(['vm', 'create', 'rel.yaml', '--base', './rel-base.qcow2', '--json'], env.env, { cwd: specDir });
    expect([made.code, made.stderr]).toEqual([0, '']);
    const overlay = (JSON.parse(made.stdout) as { paths: { overlay: string } }).paths.overlay;
    const info = JSON.parse((await execa('qemu-img', ['info', '--output=json', overlay])).stdout) as { 'backing-filename': string };
    expect(info['backing-filename']).toBe(join(specDir, 'rel-base.qcow2'));
    const started = await goshipctl(['vm', 'start', 'cv-rel', '--no-wait'], env.env);
    expect([started.code, started.stderr]).toEqual([0, '']);
    expect((await goshipctl(['vm', 'destroy', 'cv-rel', '--force'], env.env)).code).toBe(0);
  }, 120_000);

  it('a kill -9 of QEMU shows as crashed in vm list, with the signal and the end of its log', async () => {
    const f = await specFile(
      'crash.yaml',
      `name: cv-crash\nmemory: 256M\nboot:\n  kernel: ${guest.kernel}\n  initrd: ${guest.initrd}\n  cmdline: ${guest.cmdline}\nnetwork:\n  mode: none\n`,
    );
    await goshipctl(['vm', 'create', f], env.env);
    const vm = JSON.parse((await goshipctl(['vm', 'start', 'cv-crash', '--no-wait', '--json'], env.env)).stdout) as { pid: number };
    process.kill(vm.pid, 'SIGKILL');
    // The VM's monitor records the end as soon as QEMU is gone.
    type Listed = { name: string; state: string; end?: { kind: string; signal?: string; logTail?: string } };
    let listed: Listed | undefined;
    for (let i = 0; i < 100 && listed?.state !== 'crashed'; i++) {
      listed = (JSON.parse((await goshipctl(['vm', 'list', '--json'], env.env)).stdout) as Listed[]).find((v) => v.name === 'cv-crash');
      if (listed?.state !== 'crashed') await new Promise((r) => setTimeout(r, 100));
    }
    expect(listed).toMatchObject({ state: 'crashed', end: { kind: 'crashed', signal: 'SIGKILL', logTail: expect.any(String) } });
    const status = await goshipctl(['vm', 'status', 'cv-crash'], env.env);
    expect(status.stdout).toMatch(/^ended {5}\S+: QEMU was killed by SIGKILL/m);
    expect((await goshipctl(['vm', 'destroy', 'cv-crash'], env.env)).code).toBe(0);
  }, 120_000);
});
