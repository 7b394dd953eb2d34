/**
 * Apps on the real Debian image, through goshipctl as a user runs it: Docker
 * containers inside the project VM, built offline from the host's static
 * busybox (`FROM scratch`), reached from the host through the VM's live
 * forwards. The whole life of an app: deploy, serve, logs, exec, a killed
 * process restarted by Docker, redeploys that work and redeploys that fail
 * (the old version keeps serving), an agent restart that leaves containers
 * alone, a VM restart after which the app serves again on the same port,
 * drift, a `docker save` archive, Debian's registry inside the VM, bad input.
 * One project VM, on an image built with `--packages docker-registry` and
 * restored from a template of it (test/helpers/test-template.ts), is shared by
 * the tests of this file; they run in order.
 */
import { copyFile, mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLI, goshipctl, cliOf } from '../helpers/cli.ts';
import { restartGuestAgent } from '../helpers/agent-restart.ts';
import { freePort, httpGet, until } from '../helpers/net.ts';
import { projectEnv, type ProjectEnv } from '../helpers/project-env.ts';
import { createFromTemplate, installTestTemplate } from '../helpers/test-template.ts';

let env: ProjectEnv;
const { g, ok, json } = cliOf(() => env.env, 600_000);
/** A shell command in the project VM (as root, through the agent). */
const guest = (script: string) => ok(['vm', 'exec', 'shop', '--', 'sh', '-c', script]);

interface AppJson {
  name: string;
  kind: string;
  state: string;
  image: string | null;
  ports: Array<{ proto: string; host: number; container: number }>;
  restarts: number | null;
  startedAt: string | null;
  container: { id: string; name: string; state: string } | null;
  generation: number | null;
  lastError: string | null;
}

/** A build context: the host's static busybox serving `page` with httpd (or running `cmd`). */
async function context(name: string, o: { page?: string; cmd?: string[]; run?: string[] } = {}): Promise<string> {
  const dir = join(env.root, 'ctx', name);
  await mkdir(join(dir, 'www'), { recursive: true });
  await copyFile('/bin/busybox', join(dir, 'busybox'));
  await writeFile(join(dir, 'www', 'index.html'), o.page ?? `${name}\n`);
  const cmd = o.cmd ?? ['/bin/busybox', 'httpd', '-f', '-vv', '-p', '80', '-h', '/www'];
  await writeFile(
    join(dir, 'Dockerfile'),
    ['FROM scratch', 'COPY busybox /bin/busybox', 'COPY www /www', ...(o.run ? [`RUN ${JSON.stringify(o.run)}`] : []), `CMD ${JSON.stringify(cmd)}`, ''].join('\n'),
  );
  return dir;
}

/** The page behind a host port, once it answers. */
const page = (port: number, path = '/') => until(`127.0.0.1:${port}${path} to answer`, async () => (await httpGet(port, path))?.body, 120_000, 250);

/** The image of this file's project: Debian's registry beside dockerd. */
const REGISTRY = { name: 'registry', extraPackages: ['docker-registry'] };

let web: number;
let spare: number;

beforeAll(async () => {
  env = await projectEnv('eapp', { extraImages: [REGISTRY] });
  web = await freePort();
  spare = await freePort();
  // What is tested here is not the boot: the guest is restored from a template.
  await installTestTemplate(env, { image: REGISTRY, cpus: 2, memory: '1536M' });
  await createFromTemplate(env, ['shop', '--image', 'registry', '--cpus', '2', '--memory', '1536M']);
}, 1_800_000);

afterAll(async () => {
  await env?.cleanupAll();
}, 60_000);

describe('an app built in the VM from a Dockerfile', () => {
  it('deploys, and the host reaches it through its port', async () => {
    const dir = await context('v1', { page: 'hello from v1\n' });
    const r = await g(['app', 'deploy', 'shop', 'site', '--build', dir, '--port', `${web}:80`, '--restart', 'always']);
    expect([r.code, r.stdout]).toEqual([0, `app shop/site is running (goship-site-1)\nports: 127.0.0.1:${web}→80`]);
    // The build's own output is shown (stderr), step by step.
    expect(r.stderr).toMatch(/Step 1\/\d+ : FROM scratch/);
    expect(await page(web)).toBe('hello from v1\n');
    const [a] = await json<AppJson[]>(['app', 'list', 'shop']);
    expect(a).toMatchObject({ name: 'site', kind: 'container', state: 'running', image: 'goship/site:1', restarts: 0, generation: 1, ports: [{ proto: 'tcp', host: web, container: 80 }] });
    // Docker is the truth: the container carries GoShip's label.
    expect((await guest(`docker inspect -f '{{index .Config.Labels "org.goship.app"}} {{.HostConfig.RestartPolicy.Name}}' goship-site-1`)).trim()).toBe('site always');
  }, 900_000);

  it('app logs shows the request; -f streams while other commands on the project work', async () => {
    // busybox httpd logs to its stderr: app logs passes it to goshipctl's stderr, as docker logs does.
    const logs = async (args: string[]): Promise<{ out: string; err: string }> => {
      const r = await g(['app', 'logs', 'shop', 'site', ...args]);
      if (r.code !== 0) throw new Error(`app logs failed (${r.code}): ${r.stderr}`);
      return { out: r.stdout, err: r.stderr };
    };
    await page(web, '/first-visit');
    const first = await until('the request in the logs', async () => {
      const l = await logs([]);
      return l.err.includes('url:/first-visit') ? l : undefined;
    });
    expect(first.err).toMatch(/response:404/);
    expect(first.out).toBe('');
    const tail = await logs(['--tail', '1']);
    expect(tail.err.trim().split('\n')).toHaveLength(1);
    expect((await logs(['--timestamps', '--tail', '1'])).err).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z /);

    const follow = execa(process.execPath, [CLI, 'app', 'logs', 'shop', 'site', '-f', '--tail', '0'], { env: env.env, extendEnv: false, reject: false });
    let seen = '';
    follow.stderr?.on('data', (d: Buffer) => (seen += d.toString()));
    // While -f holds its stream, other commands on the same VM go through.
    const [list, exec, ping] = await Promise.all([g(['app', 'list', 'shop', '--json']), g(['app', 'exec', 'shop', 'site', '--', '/bin/busybox', 'echo', 'beside']), g(['vm', 'ping', 'shop'])]);
    expect([list.code, exec.code, exec.stdout, ping.code]).toEqual([0, 0, 'beside', 0]);
    await page(web, '/while-following');
    await until('the followed line', async () => (seen.includes('url:/while-following') ? true : undefined), 60_000);
    follow.kill('SIGINT');
    const ended = await follow;
    expect(ended.exitCode === 130 || ended.exitCode === 0).toBe(true);
  }, 300_000);

  it('app exec passes output and the exit code through; -t is a real terminal with the window size', async () => {
    const r = await g(['app', 'exec', 'shop', 'site', '--', '/bin/busybox', 'sh', '-c', 'echo out; echo err >&2; exit 7']);
    expect([r.code, r.stdout, r.stderr]).toEqual([7, 'out', 'err']);
    const i = await goshipctl(['app', 'exec', '-i', 'shop', 'site', '--', '/bin/busybox', 'wc', '-c'], env.env, { input: 'twelve bytes' });
    expect([i.code, i.stdout.trim()]).toEqual([0, '12']);
    // script(1) gives goshipctl a terminal of 31 rows and 97 columns. bookworm's dockerd (API 1.41)
    // takes the size only right after the exec started: the program reads it a moment later.
    const tty = await execa('script', ['-qec', `stty rows 31 cols 97; "${process.execPath}" "${CLI}" app exec -t shop site -- /bin/busybox sh -c 'tty; sleep 1; stty size'`, '/dev/null'], {
      env: env.env,
      extendEnv: false,
      reject: false,
      timeout: 120_000,
    });
    expect(tty.exitCode).toBe(0);
    expect(tty.stdout.replace(/\r/g, '').trim().split('\n').slice(-2)).toEqual(['/dev/pts/0', '31 97']);
  }, 300_000);

  it('a killed process is brought back by the restart policy; app list counts it', async () => {
    const before = await json<AppJson>(['app', 'info', 'shop', 'site']);
    await guest(`kill -9 "$(docker inspect -f '{{.State.Pid}}' goship-site-1)"`);
    const after = await until('the restart', async () => {
      const a = await json<AppJson>(['app', 'info', 'shop', 'site']);
      return a.restarts === 1 && a.state === 'running' ? a : undefined;
    });
    expect(after.startedAt).not.toBe(before.startedAt);
    expect(await page(web)).toBe('hello from v1\n');
    expect((await ok(['app', 'list', 'shop'])).split('\n')[1]).toMatch(new RegExp(`^shop\\s+site\\s+container\\s+goship/site:1\\s+running\\s+127\\.0\\.0\\.1:${web}→80\\s+1\\s`));
  }, 300_000);

  it('a redeploy replaces it: the new page on the same port; a stray of the app goes too', async () => {
    // A container left under the app's labels (a deploy cut off before its record): the next deploy removes it.
    await guest('docker create --name goship-site-9 --label org.goship.app=site --label org.goship.project=shop goship/site:1');
    const dir = await context('v2', { page: 'hello from v2\n' });
    await ok(['app', 'deploy', 'shop', 'site', '--build', dir, '--port', `${web}:80`, '--restart', 'always']);
    expect(await page(web)).toBe('hello from v2\n');
    const a = await json<AppJson>(['app', 'info', 'shop', 'site']);
    expect([a.generation, a.container?.name, a.restarts, a.image]).toEqual([2, 'goship-site-2', 0, 'goship/site:2']);
    expect((await guest("docker ps -a --filter label=org.goship.app=site --format '{{.Names}}'")).trim()).toBe('goship-site-2');
  }, 900_000);

  it('a redeploy whose program exits at once is rolled back: the old version serves on', async () => {
    const dir = await context('exits', { cmd: ['/bin/busybox', 'sh', '-c', 'echo cannot start >&2; exit 3'] });
    const r = await g(['app', 'deploy', 'shop', 'site', '--build', dir, '--port', `${web}:80`, '--restart', 'always']);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/app shop\/site: the new version did not start: it keeps restarting .*cannot start/s);
    expect(r.stderr).toMatch(/the version that ran before runs again/);
    expect(await page(web)).toBe('hello from v2\n');
    const a = await json<AppJson>(['app', 'info', 'shop', 'site']);
    expect([a.generation, a.container?.name, a.state]).toEqual([2, 'goship-site-2', 'running']);
    expect(a.lastError).toMatch(/did not start/);
    // The new container that kept restarting is gone, not left running beside the old one.
    expect((await guest("docker ps -a --filter label=org.goship.app=site --format '{{.Names}}'")).trim()).toBe('goship-site-2');
  }, 900_000);

  it('a build that fails shows its own output, exits 1 and changes nothing', async () => {
    const dir = await context('broken', { run: ['/bin/busybox', 'sh', '-c', 'echo the build step fails here; exit 9'] });
    const r = await g(['app', 'deploy', 'shop', 'site', '--build', dir, '--port', `${web}:80`]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/the build step fails here/);
    expect(r.stderr).toMatch(/returned a non-zero code: 9/);
    expect(await page(web)).toBe('hello from v2\n');
    expect((await json<AppJson>(['app', 'info', 'shop', 'site'])).container?.name).toBe('goship-site-2');
  }, 900_000);

  it('a build context\'s .dockerignore is honoured: what it excludes (a secret, .git) never reaches the VM', async () => {
    const dir = await context('ignored', { page: 'public page\n', run: ['/bin/busybox', 'sh', '-c', 'test ! -e /www/.env && test ! -e /www/.git && echo the secrets stayed home'] });
    await writeFile(join(dir, 'www', '.env'), 'TOKEN=s3cret\n');
    await mkdir(join(dir, 'www', '.git'));
    await writeFile(join(dir, 'www', '.git', 'config'), '[core]\n');
    await writeFile(join(dir, '.dockerignore'), '**/.env\n**/.git\n');
    const r = await g(['app', 'deploy', 'shop', 'ignored', '--build', dir, '--port', `${spare}:80`]);
    expect([r.code, r.stderr]).toEqual([0, expect.stringContaining('the secrets stayed home')]);
    expect(await page(spare)).toBe('public page\n');
    expect((await guest('docker run --rm --entrypoint /bin/busybox goship/ignored:1 ls -A /www')).trim().split('\n')).toEqual(['index.html']);
    expect((await g(['app', 'remove', 'shop', 'ignored'])).code).toBe(0);
  }, 900_000);

  it('kill -9 of goshipctl in the middle of a deploy: the app is not left busy; the next commands work, and it says what happened', async () => {
    const dir = await context('slow', { run: ['/bin/busybox', 'sh', '-c', 'echo building slowly; sleep 60'] });
    const child = execa(process.execPath, [CLI, 'app', 'deploy', 'shop', 'site', '--build', dir, '--port', `${web}:80`], { env: env.env, reject: false });
    let seen = '';
    child.stderr?.on('data', (d: Buffer) => (seen += d.toString()));
    child.stdout?.on('data', (d: Buffer) => (seen += d.toString()));
    await until('the slow build to start', async () => (seen.includes('building slowly') ? true : undefined), 300_000, 100);
    child.kill('SIGKILL');
    await child;
    const a = await json<AppJson>(['app', 'info', 'shop', 'site']);
    expect([a.generation, a.container?.name]).toEqual([2, 'goship-site-2']);
    expect(a.lastError).toMatch(/^deploy was interrupted \(goshipctl pid \d+ is gone\)/);
    expect(await page(web)).toBe('hello from v2\n');
    const stop = await g(['app', 'stop', 'shop', 'site']);
    expect([stop.code, stop.stderr]).toEqual([0, '']);
    expect((await g(['app', 'start', 'shop', 'site'])).code).toBe(0);
    expect(await page(web)).toBe('hello from v2\n');
  }, 900_000);

  it('an agent restart leaves the containers alone', async () => {
    const before = await json<AppJson>(['app', 'info', 'shop', 'site']);
    const pids = await restartGuestAgent(guest);
    expect(pids.after).not.toBe(pids.before);
    const after = await until('the agent back', async () => {
      const r = await g(['app', 'info', 'shop', 'site', '--json']);
      return r.code === 0 ? (JSON.parse(r.stdout) as AppJson) : undefined;
    });
    expect([after.startedAt, after.restarts, after.container?.id]).toEqual([before.startedAt, before.restarts, before.container?.id]);
    expect(await page(web)).toBe('hello from v2\n');
  }, 300_000);

  it('after the VM stops and starts again, the app serves on the same host port', async () => {
    await ok(['project', 'stop', 'shop']);
    expect(await httpGet(web)).toBeUndefined();
    await ok(['project', 'start', 'shop']);
    expect(await page(web)).toBe('hello from v2\n');
    expect((await json<AppJson>(['app', 'info', 'shop', 'site'])).state).toBe('running');
    const info = await ok(['project', 'info', 'shop']);
    expect(info).toMatch(/^apps\s+site \(container, deployed\)$/m);
  }, 900_000);

  it('app stop, start and restart act on the container', async () => {
    expect((await json<AppJson>(['app', 'stop', 'shop', 'site'])).state).toBe('exited');
    expect(await httpGet(web)).toBeUndefined();
    expect((await json<AppJson>(['app', 'start', 'shop', 'site'])).state).toBe('running');
    expect(await page(web)).toBe('hello from v2\n');
    const before = await json<AppJson>(['app', 'info', 'shop', 'site']);
    const after = await json<AppJson>(['app', 'restart', 'shop', 'site']);
    expect(after.state).toBe('running');
    expect(after.startedAt).not.toBe(before.startedAt);
  }, 300_000);
});

describe('images from an archive and from a registry inside the VM', () => {
  it('--image-archive loads a docker save tar', async () => {
    await guest('docker save goship/site:2 -o /var/tmp/site.tar');
    const tarFile = join(env.root, 'site.tar');
    await ok(['vm', 'cp', 'shop:/var/tmp/site.tar', tarFile]);
    await ok(['app', 'deploy', 'shop', 'archived', '--image-archive', tarFile, '--port', `${spare}:80`]);
    expect(await page(spare)).toBe('hello from v2\n');
    const a = await json<AppJson>(['app', 'info', 'shop', 'archived']);
    expect([a.image, a.state]).toEqual(['goship/site:2', 'running']);
  }, 600_000);

  it('--image pulls from Debian\'s registry running in the VM', async () => {
    const probe = "require('net').connect(5000, '127.0.0.1').on('connect', () => process.exit(0)).on('error', () => process.exit(1))";
    await until('the registry in the VM', async () => ((await g(['vm', 'exec', 'shop', '--', 'node', '-e', probe])).code === 0 ? true : undefined), 120_000, 1000);
    // Debian's registry asks for htpasswd logins by default: this one serves without.
    await guest(
      "printf 'version: 0.1\\nstorage:\\n  filesystem:\\n    rootdirectory: /var/lib/docker-registry\\nhttp:\\n  addr: 127.0.0.1:5000\\n' > /etc/docker/registry/config.yml && systemctl restart docker-registry",
    );
    await until('the registry in the VM again', async () => ((await g(['vm', 'exec', 'shop', '--', 'node', '-e', probe])).code === 0 ? true : undefined), 120_000, 1000);
    await guest('docker tag goship/site:1 localhost:5000/shop/site:1 && docker push localhost:5000/shop/site:1 >/dev/null && docker rmi localhost:5000/shop/site:1 >/dev/null');
    const port = await freePort();
    const r = await g(['app', 'deploy', 'shop', 'pulled', '--image', 'localhost:5000/shop/site:1', '--port', `${port}:80`]);
    expect(r.code).toBe(0);
    expect(r.stderr).toMatch(/Pulling from shop\/site|Download complete|Pull complete|Status: Downloaded/);
    expect(await page(port)).toBe('hello from v1\n');
    expect((await json<AppJson>(['app', 'info', 'shop', 'pulled'])).image).toBe('localhost:5000/shop/site:1');
    await ok(['app', 'remove', 'shop', 'pulled']);
  }, 600_000);

  it('a registry the VM cannot reach: the error says so, and nothing is recorded', async () => {
    const r = await g(['app', 'deploy', 'shop', 'nowhere', '--image', 'localhost:5999/none:1']);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/the VM cannot reach the registry localhost:5999 to pull localhost:5999\/none:1: .*connection refused/);
    expect((await json<AppJson[]>(['app', 'list', 'shop'])).map((a) => a.name).sort()).toEqual(['archived', 'site']);
  }, 300_000);
});

describe('bad input is refused before anything changes', () => {
  const listNames = async () => (await json<AppJson[]>(['app', 'list', 'shop'])).map((a) => `${a.name}:${a.generation}`).sort();

  it('unknown project 3, invalid name 2, a taken port 4, not an archive 2, no source 2', async () => {
    const before = await listNames();
    const dir = await context('bad-input');
    const notTar = join(env.root, 'not-a-tar');
    await writeFile(notTar, 'just text\n');
    const cases: Array<[string[], number, RegExp]> = [
      [['app', 'deploy', 'nosuch', 'x', '--build', dir], 3, /project nosuch does not exist/],
      [['app', 'deploy', 'shop', '../etc', '--build', dir], 2, /invalid app: app: expected 1-63 lowercase letters.*got "\.\.\/etc"/],
      [['app', 'deploy', 'shop', 'Bad_Name', '--build', dir], 2, /invalid app: app: expected/],
      [['app', 'deploy', 'shop', 'other', '--build', dir, '--port', `${web}:80`], 4, new RegExp(`host port taken: host port tcp:${web} is already forwarded by app shop/site\n`)],
      [['app', 'deploy', 'shop', 'other', '--image-archive', notTar], 2, /not a Docker image archive/],
      [['app', 'deploy', 'shop', 'other'], 2, /give exactly one of --build/],
      [['app', 'deploy', 'shop', 'other', '--build', dir, '--restart', 'sometimes'], 2, /--restart/],
      [['app', 'deploy', 'shop', 'other', '--build', dir, '--memory', 'lots'], 2, /--memory/],
      [['app', 'info', 'shop', 'nosuch'], 3, /app shop\/nosuch does not exist/],
    ];
    for (const [args, code, message] of cases) {
      const r = await g(args);
      expect([args.join(' '), r.code]).toEqual([args.join(' '), code]);
      expect(r.stderr).toMatch(message);
      expect(r.stderr).toMatch(/hint:/);
    }
    expect(await listNames()).toEqual(before);
    expect(await page(web)).toBe('hello from v2\n');
  }, 300_000);
});

describe('drift, removal and project delete', () => {
  it('a container removed behind GoShip\'s back is listed as missing, not dropped; remove cleans up', async () => {
    await guest('docker rm -f goship-archived-1');
    const a = await until('missing', async () => {
      const x = (await json<AppJson[]>(['app', 'list', 'shop'])).find((y) => y.name === 'archived');
      return x?.state === 'missing' ? x : undefined;
    });
    expect(a.container).toBeNull();
    expect(await ok(['app', 'list', 'shop'])).toMatch(/archived\s+container\s+goship\/site:2\s+missing/);
    await ok(['app', 'remove', 'shop', 'archived']);
    expect((await json<AppJson[]>(['app', 'list', 'shop'])).map((x) => x.name)).toEqual(['site']);
    // Its forward went with it: QEMU no longer listens on its host port.
    const ports = await json<{ live: Array<{ host: number }> | null }>(['project', 'port', 'list', 'shop']);
    expect(ports.live?.map((f) => f.host)).toEqual([web]);
  }, 300_000);

  it('project delete removes its apps and their ports', async () => {
    await ok(['project', 'delete', 'shop', '--force']);
    expect(await json<AppJson[]>(['app', 'list'])).toEqual([]);
    expect(await httpGet(web)).toBeUndefined();
    const again = await g(['app', 'list', 'shop']);
    expect([again.code, again.stderr]).toEqual([3, 'goshipctl: error: project shop does not exist\nhint: See `goshipctl project list`.']);
  }, 300_000);
});
