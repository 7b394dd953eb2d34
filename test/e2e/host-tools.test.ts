/**
 * The host's own tools against a project's VM, with the real clients on the
 * real Debian image: OpenSSH (`ssh` and `scp` with the config `goshipctl
 * ssh-config` prints, `goshipctl ssh`) through the agent channel, and Debian's
 * Docker CLI (extracted by scripts/bootstrap.sh) through `project docker`'s
 * socket, which the VM's monitor relays to the guest's dockerd. The project's
 * VM is restored from a template (test/helpers/test-template.ts).
 */
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { chmod, copyFile, mkdir, readFile, stat, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLI, cliOf } from '../helpers/cli.ts';
import { until } from '../helpers/net.ts';
import { projectEnv, type ProjectEnv } from '../helpers/project-env.ts';
import { createFromTemplate, installTestTemplate } from '../helpers/test-template.ts';

let env: ProjectEnv;
const { g, ok, json } = cliOf(() => env.env, 600_000);
const DOCKER = resolve('.cache/docker-cli/docker');
const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');

/** `vm tunnel tools 9100` with its stdout a pipe this test does not read for 3 s, then reads to the end. */
async function slowRead(): Promise<{ code: number | null; stderr: string; bytes: number; allSevens: boolean }> {
  const child = spawn(process.execPath, [CLI, 'vm', 'tunnel', 'tools', '9100'], { env: env.env, stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  child.stdout.pause();
  await new Promise((done) => setTimeout(done, 3000));
  let bytes = 0;
  let allSevens = true;
  for await (const chunk of child.stdout as AsyncIterable<Buffer>) {
    bytes += chunk.length;
    if (allSevens && chunk.some((b) => b !== 7)) allSevens = false;
  }
  const code = child.exitCode ?? (await once(child, 'exit'))[0] as number | null;
  return { code, stderr, bytes, allSevens };
}

beforeAll(async () => {
  env = await projectEnv('eh');
  // What is tested here is not the boot: the guest is restored from a template.
  await installTestTemplate(env, { cpus: 2, memory: '1G' });
  await createFromTemplate(env, ['tools', '--cpus', '2', '--memory', '1G']);
}, 900_000);

afterAll(async () => {
  await env?.cleanupAll();
}, 60_000);

describe('OpenSSH into a project', { timeout: 600_000 }, () => {
  let config: string;

  it("has a key pair of its own, owner-only on the host, its public key in the guest from its create on", async () => {
    const key = env.layout.vmFile('tools', 'sshKey');
    expect(((await stat(key)).mode & 0o777).toString(8)).toBe('600');
    const pub = (await readFile(`${key}.pub`, 'utf8')).trim();
    expect(pub).toMatch(/^ssh-ed25519 \S+ goship-tools$/);
    const authorized = await ok(['vm', 'exec', 'tools', '--', 'cat', '/home/goship/.ssh/authorized_keys']);
    expect(authorized.split('\n')).toContain(pub);
  });

  it('ssh-config prints a Host block that plain ssh and scp use as it is', async () => {
    const printed = await ok(['ssh-config', 'tools']);
    expect(printed).toMatch(/^Host goship-tools\n {2}HostName goship-tools\n {2}User goship\n[^]*\n {2}ProxyCommand .* vm tunnel tools 22$/);
    config = join(env.root, 'ssh_config');
    await writeFile(config, printed);
    const who = await execa('ssh', ['-F', config, 'goship-tools', 'id -un; hostname'], { reject: false, stdin: 'ignore', timeout: 120_000 });
    expect([who.exitCode, who.stdout, who.stderr]).toEqual([0, 'goship\ntools', '']);
    // scp both ways, 4 MiB, the same bytes.
    const blob = randomBytes(4 * 1024 * 1024);
    await writeFile(join(env.root, 'blob'), blob);
    const up = await execa('scp', ['-F', config, '-q', join(env.root, 'blob'), 'goship-tools:/tmp/blob'], { reject: false, stdin: 'ignore', timeout: 120_000 });
    expect([up.exitCode, up.stderr]).toEqual([0, '']);
    expect((await ok(['vm', 'exec', 'tools', '--', 'sha256sum', '/tmp/blob'])).split(' ')[0]).toBe(sha256(blob));
    const down = await execa('scp', ['-F', config, '-q', 'goship-tools:/tmp/blob', join(env.root, 'back')], { reject: false, stdin: 'ignore', timeout: 120_000 });
    expect([down.exitCode, down.stderr]).toEqual([0, '']);
    expect(sha256(await readFile(join(env.root, 'back')))).toBe(sha256(blob));
  });

  it('vm tunnel waits for a reader slower than the guest (a full pipe is not an error)', async () => {
    // 16 MiB from a server in the guest into a pipe nobody reads for 3 s: goshipctl's stdout fills.
    const server = "require('net').createServer((s) => s.end(Buffer.alloc(16 << 20, 7))).listen(9100, '127.0.0.1')";
    await ok(['vm', 'exec', 'tools', '--', 'systemd-run', '--unit=bulk-9100', '/usr/bin/node', '-e', server]);
    // Until the server listens: a refused tunnel is tried again.
    const r = await until('the guest\'s server on port 9100', async () => {
      const got = await slowRead();
      return got.code !== 0 && got.stderr.includes('ECONNREFUSED') ? undefined : got;
    }, 120_000, 200);
    expect([r.code, r.stderr, r.bytes, r.allSevens]).toEqual([0, '', 16 << 20, true]);
  });

  it('goshipctl ssh runs a command with its exit code; a host key that is not the guest\'s is refused, and pinned again by goshipctl', async () => {
    const r = await g(['ssh', 'tools', '--', 'sh', '-c', "'echo out; echo err >&2; exit 7'"]);
    expect([r.code, r.stdout, r.stderr]).toEqual([7, 'out', 'err']);
    // Another machine's key in the pinned file: ssh refuses to talk at all.
    const other = (await execa('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', join(env.root, 'other')]).then(() => readFile(join(env.root, 'other.pub'), 'utf8'))).split(' ');
    await writeFile(env.layout.vmFile('tools', 'sshKnownHosts'), `goship-tools ${other[0]} ${other[1]}\n`);
    const bad = await execa('ssh', ['-F', config, 'goship-tools', 'true'], { reject: false, stdin: 'ignore', timeout: 120_000 });
    expect([bad.exitCode, bad.stderr]).toEqual([255, expect.stringMatching(/REMOTE HOST IDENTIFICATION HAS CHANGED|Host key verification failed/)]);
    const again = await g(['ssh', 'tools', '--', 'echo', 'back']);
    expect([again.code, again.stdout]).toEqual([0, 'back']);
  });

  it("authorizes its key again where the guest lost it (a project moved or restored from elsewhere)", async () => {
    await ok(['vm', 'exec', 'tools', '--', 'truncate', '-s', '0', '/home/goship/.ssh/authorized_keys']);
    const refused = await execa('ssh', ['-F', config, '-o', 'BatchMode=yes', 'goship-tools', 'true'], { reject: false, stdin: 'ignore', timeout: 120_000 });
    expect([refused.exitCode, refused.stderr]).toEqual([255, expect.stringMatching(/Permission denied/)]);
    await ok(['ssh-config', 'tools']);
    const back = await execa('ssh', ['-F', config, 'goship-tools', 'echo', 'in'], { reject: false, stdin: 'ignore', timeout: 120_000 });
    expect([back.exitCode, back.stdout]).toEqual([0, 'in']);
  });
});

describe("Docker's own CLI through project docker", { timeout: 600_000 }, () => {
  let host: string;
  const docker = (args: string[], input?: string) =>
    execa(DOCKER, args, { env: { PATH: process.env.PATH, HOME: env.root, DOCKER_HOST: host }, extendEnv: false, reject: false, timeout: 300_000, ...(input !== undefined ? { input } : { stdin: 'ignore' }) });

  it('DOCKER_HOST names an owner-only socket of this host', async () => {
    const r = await g(['project', 'docker', 'tools']);
    expect(r.code).toBe(0);
    host = r.stdout.trim().replace(/^DOCKER_HOST=/, '');
    expect(host).toBe(`unix://${env.layout.vmSocket('tools', 'dockerSocket')}`);
    const st = await stat(host.slice('unix://'.length));
    expect([st.isSocket(), (st.mode & 0o777).toString(8)]).toEqual([true, '600']);
    expect(await json<{ dockerHost: string }>(['project', 'docker', 'tools'])).toEqual({ dockerHost: host });
  });

  it('version, build of a FROM-scratch context, run, ps, exec, logs, a piped stdin, rm; app list shows the container unmanaged', async () => {
    const version = await docker(['version', '--format', '{{.Server.Version}}']);
    expect([version.exitCode, version.stdout]).toEqual([0, expect.stringMatching(/^\d+\.\d+\.\d+/)]);
    // A static busybox (the fast test guest's, from busybox-static) is the whole image.
    const ctxDir = join(env.root, 'ctx');
    await mkdir(ctxDir, { recursive: true });
    await copyFile('/bin/busybox', join(ctxDir, 'busybox'));
    await chmod(join(ctxDir, 'busybox'), 0o755);
    await writeFile(join(ctxDir, 'Dockerfile'), 'FROM scratch\nCOPY busybox /busybox\nENTRYPOINT ["/busybox"]\n');
    const built = await docker(['build', '-q', '-t', 'goship-e2e/bb', ctxDir]);
    expect([built.exitCode, built.stderr]).toEqual([0, '']);
    const run = await docker(['run', '-d', '--name', 'hostrun', 'goship-e2e/bb', 'sh', '-c', 'echo started; exec sleep 600']);
    expect(run.exitCode, run.stderr).toBe(0);
    const ps = await docker(['ps', '--format', '{{.Names}} {{.Image}}']);
    expect(ps.stdout.split('\n')).toContain('hostrun goship-e2e/bb');
    const ex = await docker(['exec', 'hostrun', '/busybox', 'echo', 'inside']);
    expect([ex.exitCode, ex.stdout]).toEqual([0, 'inside']);
    const logs = await docker(['logs', 'hostrun']);
    expect([logs.exitCode, logs.stdout]).toEqual([0, 'started']);
    // A hijacked connection with stdin: the host's half close after the input ends the container's cat.
    const piped = await docker(['run', '--rm', '-i', 'goship-e2e/bb', 'cat'], 'through the relay\n');
    expect([piped.exitCode, piped.stdout]).toEqual([0, 'through the relay']);
    const apps = await json<Array<{ name: string; state: string; kind: string }>>(['app', 'list', 'tools']);
    expect(apps.filter((a) => a.name === 'hostrun').map((a) => [a.kind, a.state])).toEqual([['container', 'unmanaged (running)']]);
    const rm = await docker(['rm', '-f', 'hostrun']);
    expect(rm.exitCode).toBe(0);
    expect((await docker(['ps', '-a', '--format', '{{.Names}}'])).stdout.split('\n')).not.toContain('hostrun');
  });

  it("docker-compose (Debian's v1) through the same socket: up with a build, ps, exec, down", async () => {
    const dir = join(env.root, 'compose');
    await mkdir(dir, { recursive: true });
    await copyFile('/bin/busybox', join(dir, 'busybox'));
    await chmod(join(dir, 'busybox'), 0o755);
    await writeFile(join(dir, 'Dockerfile'), 'FROM scratch\nCOPY busybox /busybox\nENTRYPOINT ["/busybox"]\n');
    await writeFile(join(dir, 'docker-compose.yml'), "version: '3'\nservices:\n  web:\n    build: .\n    command: ['sh', '-c', 'echo up; exec sleep 600']\n");
    const compose = (args: string[]) =>
      execa('docker-compose', ['--project-name', 'gsc', ...args], { cwd: dir, env: { PATH: process.env.PATH, HOME: env.root, DOCKER_HOST: host }, extendEnv: false, reject: false, timeout: 300_000, stdin: 'ignore' });
    const up = await compose(['up', '-d', '--build']);
    expect(up.exitCode, up.stderr).toBe(0);
    const ps = await compose(['ps', '-q']);
    expect([ps.exitCode, ps.stdout.split('\n').filter(Boolean)]).toEqual([0, [expect.stringMatching(/^[0-9a-f]{64}$/)]]);
    const ex = await compose(['exec', '-T', 'web', '/busybox', 'echo', 'composed']);
    expect([ex.exitCode, ex.stdout.trim()]).toEqual([0, 'composed']);
    const down = await compose(['down']);
    expect(down.exitCode, down.stderr).toBe(0);
    expect((await docker(['ps', '-a', '--format', '{{.Names}}'])).stdout).not.toMatch(/gsc/);
  });
});
