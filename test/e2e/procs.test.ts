/**
 * Process apps on the real Debian image, through goshipctl: the host's static
 * busybox uploaded and run by the guest's systemd (`--binary`), a program
 * already in the guest (`--command`); kill -9 and systemd's restart, a crash
 * loop that ends `failed`, an agent restart that leaves the PID alone, a VM
 * restart, logs of both runs, redeploys that work and that fail, bad input,
 * and a remove that leaves no unit, no files and no user. One project VM,
 * restored from a template (test/helpers/test-template.ts), is shared by the
 * tests of this file; they run in order.
 */
import { chmod, copyFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cliOf } from '../helpers/cli.ts';
import { restartGuestAgent } from '../helpers/agent-restart.ts';
import { freePort, httpGet, until } from '../helpers/net.ts';
import { projectEnv, type ProjectEnv } from '../helpers/project-env.ts';
import { createFromTemplate, installTestTemplate } from '../helpers/test-template.ts';

let env: ProjectEnv;
const { g, ok, json } = cliOf(() => env.env, 600_000);
const guest = (script: string) => ok(['vm', 'exec', 'work', '--', 'sh', '-c', script]);
/** What is left of an app in the guest: its unit, its directory, its user (empty when nothing). */
const leftovers = (app: string) =>
  guest(`ls -d /etc/systemd/system/goship-app-${app}.service /var/lib/goship/apps/${app} 2>/dev/null; getent passwd goship-${app}; systemctl list-units --all --no-legend 'goship-app-${app}.service'; true`).then((t) => t.trim());

interface AppJson {
  name: string;
  kind: string;
  state: string;
  image: string | null;
  restarts: number | null;
  startedAt: string | null;
  generation: number | null;
  process: { unit: string; pid: number | null; user: string; argv: string[]; exitCode: number | null; signal: string | null; result: string } | null;
  lastError: string | null;
}
const info = (app: string) => json<AppJson>(['app', 'info', 'work', app]);
const page = (port: number, path = '/') => until(`127.0.0.1:${port}${path}`, async () => (await httpGet(port, path))?.body, 120_000, 250);

let busybox: string;
let web: number;

beforeAll(async () => {
  env = await projectEnv('eproc');
  web = await freePort();
  busybox = join(env.root, 'busybox');
  await copyFile('/bin/busybox', busybox);
  await chmod(busybox, 0o755);
  // What is tested here is not the boot: the guest is restored from a template.
  await installTestTemplate(env, { cpus: 2, memory: '1G' });
  await createFromTemplate(env, ['work', '--cpus', '2', '--memory', '1G']);
  await guest('mkdir -p /srv/www /srv/www2 && echo "page one" > /srv/www/index.html && echo "page two" > /srv/www2/index.html');
}, 1_200_000);

afterAll(async () => {
  await env?.cleanupAll();
}, 60_000);

describe('a program uploaded and supervised by the guest\'s systemd', () => {
  it('deploys with its file name kept, runs as a user of its own, and the host reaches it', async () => {
    const r = await g(['app', 'deploy', 'work', 'files', '--binary', busybox, '--port', `${web}:8080`, '--restart', 'always', '--', 'httpd', '-f', '-vv', '-p', '8080', '-h', '/srv/www']);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(new RegExp(`^app work/files is running \\(goship-app-files\\.service, pid \\d+\\)\\nports: 127\\.0\\.0\\.1:${web}→8080$`));
    expect(await page(web)).toBe('page one\n');
    const a = await info('files');
    expect(a).toMatchObject({ kind: 'process', state: 'running', restarts: 0, generation: 1, image: '/var/lib/goship/apps/files/1/busybox' });
    // The deploy read the new unit's main PID from its cgroup and /proc: it is systemd's.
    const deployedPid = Number(/pid (\d+)\)/.exec(r.stdout)![1]);
    expect((await guest('systemctl show -p MainPID goship-app-files.service')).trim()).toBe(`MainPID=${deployedPid}`);
    expect(a.process!.pid).toBe(deployedPid);
    expect(a.process).toMatchObject({ unit: 'goship-app-files.service', user: 'goship-files', argv: ['/var/lib/goship/apps/files/1/busybox', 'httpd', '-f', '-vv', '-p', '8080', '-h', '/srv/www'] });
    // The program in the guest: byte for byte the host's, run by that user, under systemd with the unit enabled.
    const [hostSum] = (await import('node:child_process')).execFileSync('sha256sum', [busybox], { encoding: 'utf8' }).split(' ');
    expect((await guest('sha256sum /var/lib/goship/apps/files/1/busybox')).split(' ')[0]).toBe(hostSum);
    expect((await guest(`ps -o user= -p ${a.process!.pid}`)).trim()).toBe('goship-files');
    expect((await guest('systemctl is-enabled goship-app-files.service')).trim()).toBe('enabled');
    expect((await ok(['app', 'list', 'work'])).split('\n')[1]).toMatch(new RegExp(`^work\\s+files\\s+process\\s+/var/lib/goship/apps/files/1/busybox\\s+running\\s+127\\.0\\.0\\.1:${web}→8080\\s+0\\s`));
  }, 600_000);

  it('kill -9 of its process: systemd starts it again with a new PID, and the restart is counted', async () => {
    await httpGet(web, '/before-kill');
    const before = await info('files');
    await guest(`kill -9 ${before.process!.pid}`);
    const after = await until('the restart', async () => {
      const a = await info('files');
      return a.state === 'running' && a.restarts === 1 ? a : undefined;
    });
    expect(after.process!.pid).not.toBe(before.process!.pid);
    expect(await page(web)).toBe('page one\n');
    await httpGet(web, '/after-kill');
  }, 300_000);

  it('app logs: the journal of both runs in order, with timestamps and a tail', async () => {
    const logs = await until('both requests in the logs', async () => {
      const out = await ok(['app', 'logs', 'work', 'files']);
      return out.includes('url:/after-kill') ? out : undefined;
    });
    expect(logs.indexOf('url:/before-kill')).toBeGreaterThan(-1);
    expect(logs.indexOf('url:/before-kill')).toBeLessThan(logs.indexOf('url:/after-kill'));
    const stamped = (await ok(['app', 'logs', 'work', 'files', '--timestamps', '--tail', '2'])).trim().split('\n');
    expect(stamped).toHaveLength(2);
    for (const line of stamped) expect(line).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z /);
    expect((await ok(['app', 'logs', 'work', 'files', '--since', '1h'])).includes('url:/after-kill')).toBe(true);
  }, 300_000);

  it('app exec runs as the app\'s user in its directory; the exit code passes through', async () => {
    const r = await g(['app', 'exec', 'work', 'files', '--', 'sh', '-c', 'id -un; pwd; exit 4']);
    expect([r.code, r.stdout]).toEqual([4, 'goship-files\n/var/lib/goship/apps/files/data']);
  }, 120_000);

  it('an agent restart leaves the program alone: same PID', async () => {
    const before = await info('files');
    const pids = await restartGuestAgent(guest);
    expect(pids.after).not.toBe(pids.before);
    const after = await until('the agent back', async () => {
      const r = await g(['app', 'info', 'work', 'files', '--json']);
      return r.code === 0 ? (JSON.parse(r.stdout) as AppJson) : undefined;
    });
    expect([after.process!.pid, after.startedAt, after.restarts]).toEqual([before.process!.pid, before.startedAt, before.restarts]);
  }, 300_000);

  it('a redeploy swaps the program: a new generation, the old one\'s files gone', async () => {
    await ok(['app', 'deploy', 'work', 'files', '--binary', busybox, '--port', `${web}:8080`, '--restart', 'always', '--', 'httpd', '-f', '-vv', '-p', '8080', '-h', '/srv/www2']);
    expect(await page(web)).toBe('page two\n');
    const a = await info('files');
    expect([a.generation, a.restarts, a.image]).toEqual([2, 0, '/var/lib/goship/apps/files/2/busybox']);
    expect((await guest('ls /var/lib/goship/apps/files')).trim().split('\n')).toEqual(['2', 'app.json', 'data']);
  }, 300_000);

  it('a redeploy whose program exits at once is rolled back, with its last output', async () => {
    const r = await g(['app', 'deploy', 'work', 'files', '--binary', busybox, '--port', `${web}:8080`, '--restart', 'always', '--', 'httpd', '-p', 'not-a-port']);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/app work\/files: the new version did not start: it (keeps restarting|failed).*its last output: .*not-a-port/s);
    expect(r.stderr).toMatch(/the version that ran before runs again/);
    expect(await page(web)).toBe('page two\n');
    const a = await info('files');
    expect([a.generation, a.state]).toEqual([2, 'running']);
    expect(a.process!.argv.at(-1)).toBe('/srv/www2');
    expect((await guest('ls /var/lib/goship/apps/files')).trim().split('\n')).toEqual(['2', 'app.json', 'data']);
  }, 300_000);

  it('after the VM stops and starts again it serves on the same port; the journal keeps the runs before', async () => {
    await httpGet(web, '/before-reboot');
    await ok(['project', 'stop', 'work']);
    await ok(['project', 'start', 'work']);
    expect(await page(web)).toBe('page two\n');
    expect((await info('files')).state).toBe('running');
    const logs = await ok(['app', 'logs', 'work', 'files']);
    expect(logs).toContain('url:/before-kill');
    expect(logs).toContain('url:/before-reboot');
  }, 900_000);
});

describe('a program already in the guest (--command)', () => {
  it('a crash loop backs off and ends failed with its exit code', async () => {
    await ok(['app', 'deploy', 'work', 'flaky', '--command', '--restart', 'always', '--', '/bin/sh', '-c', 'echo run; sleep 4; exit 3']);
    const failed = await until(
      'the start limit',
      async () => {
        const a = await info('flaky');
        return a.state === 'failed' ? a : undefined;
      },
      180_000,
      1000,
    );
    // systemd (252) gave up after StartLimitBurst starts; the unit's result stays that of the last run.
    expect(failed.process).toMatchObject({ exitCode: 3, signal: null, result: 'exit-code' });
    // Five starts (StartLimitBurst); systemd counts the restart it then refuses in NRestarts or not, by timing.
    expect(failed.restarts === 4 || failed.restarts === 5).toBe(true);
    expect((await ok(['app', 'logs', 'work', 'flaky'])).trim().split('\n')).toEqual(['run', 'run', 'run', 'run', 'run']);
    // A start by hand clears the failure.
    expect((await json<AppJson>(['app', 'start', 'work', 'flaky'])).state).toBe('running');
    await ok(['app', 'stop', 'work', 'flaky']);
    expect((await info('flaky')).state).toBe('stopped');
  }, 300_000);

  it('--env values reach the program from a root-only file: the world-readable unit and other guest users never see them', async () => {
    const secret = 'p4ss "quoted" $NOT_EXPANDED';
    // Into its data directory, its working directory (its /tmp and /var/tmp are private: PrivateTmp=yes).
    await ok(['app', 'deploy', 'work', 'envy', '--command', '--env', `SECRET=${secret}`, '--', '/bin/sh', '-c', 'printf %s "$SECRET" > seen; exec sleep 3600']);
    try {
      await checkEnvy(secret);
    } finally {
      await g(['app', 'remove', 'work', 'envy']);
    }
  }, 300_000);

  /** What the app saw, and what the guest's files show of it. */
  async function checkEnvy(secret: string): Promise<void> {
    expect(await guest('cat /var/lib/goship/apps/envy/data/seen')).toBe(secret);
    const unit = await guest('cat /etc/systemd/system/goship-app-envy.service');
    expect(unit).toContain('EnvironmentFile=/var/lib/goship/apps/envy/1/app.env');
    expect(unit).not.toContain('p4ss');
    expect((await guest('stat -c "%U %a" /etc/systemd/system/goship-app-envy.service /var/lib/goship/apps/envy/1/app.env')).trim().split('\n')).toEqual(['root 644', 'root 600']);
    // The app's own user (and so any other) cannot read the file.
    expect((await g(['vm', 'exec', 'work', '--', 'runuser', '-u', 'goship-envy', '--', 'cat', '/var/lib/goship/apps/envy/1/app.env'])).code).not.toBe(0);
  }

  it('a program that exits at once on its first deploy is not recorded, and leaves nothing in the guest', async () => {
    const r = await g(['app', 'deploy', 'work', 'dud', '--command', '--restart', 'always', '--', '/bin/sh', '-c', 'echo cannot run here >&2; exit 1']);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/app work\/dud: the new version did not start: .*exit code 1.*cannot run here/s);
    expect((await json<AppJson[]>(['app', 'list', 'work'])).map((a) => a.name).sort()).toEqual(['files', 'flaky']);
    expect(await leftovers('dud')).toBe('');
  }, 300_000);
});

describe('bad input is refused before anything changes', () => {
  it('a missing or non-executable file, an unknown user, an unknown program, a taken port, a container policy', async () => {
    const plain = join(env.root, 'not-executable');
    await writeFile(plain, '#!/bin/sh\n', { mode: 0o644 });
    const before = (await json<AppJson[]>(['app', 'list', 'work'])).map((a) => `${a.name}:${a.generation}`);
    const cases: Array<[string[], number, RegExp]> = [
      [['app', 'deploy', 'work', 'x', '--binary', join(env.root, 'nope')], 2, /--binary: no such file: /],
      [['app', 'deploy', 'work', 'x', '--binary', plain], 2, /--binary: not executable: .*chmod \+x/],
      [['app', 'deploy', 'work', 'x', '--binary', busybox, '--user', 'nosuchuser', '--', 'true'], 2, /--user: no user "nosuchuser" in the guest/],
      [['app', 'deploy', 'work', 'x', '--command', '--', 'no-such-program'], 2, /no program "no-such-program" in the guest/],
      [['app', 'deploy', 'work', 'x', '--command', '--port', `${web}:9`, '--', '/bin/true'], 4, new RegExp(`host port tcp:${web} is already forwarded by app work/files`)],
      [['app', 'deploy', 'work', 'x', '--command', '--restart', 'unless-stopped', '--', '/bin/true'], 2, /unless-stopped is a container policy/],
      [['app', 'deploy', 'nosuch', 'x', '--command', '--', '/bin/true'], 3, /project nosuch does not exist/],
    ];
    for (const [args, code, message] of cases) {
      const r = await g(args);
      expect([args.join(' '), r.code]).toEqual([args.join(' '), code]);
      expect(r.stderr).toMatch(message);
    }
    expect((await json<AppJson[]>(['app', 'list', 'work'])).map((a) => `${a.name}:${a.generation}`)).toEqual(before);
    expect(await leftovers('x')).toBe('');
  }, 300_000);
});

describe('remove', () => {
  it('leaves no unit, no files and no user, and frees the port', async () => {
    await ok(['app', 'remove', 'work', 'files']);
    await ok(['app', 'remove', 'work', 'flaky']);
    expect(await json<AppJson[]>(['app', 'list', 'work'])).toEqual([]);
    expect(await leftovers('files')).toBe('');
    expect(await leftovers('flaky')).toBe('');
    expect((await guest('ls -A /var/lib/goship/apps')).trim()).toBe('');
    expect(await httpGet(web)).toBeUndefined();
  }, 300_000);
});
