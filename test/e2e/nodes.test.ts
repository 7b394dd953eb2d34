/**
 * A second node on this machine, reached over real SSH: Debian's sshd on a
 * loopback port with its own config and host key, and an unprivileged user
 * (so GoShip as a non-root user is covered too) whose GoShip state lives in
 * its own XDG directories, logging in with a key this test generates and
 * checked against a known_hosts file this test writes.
 *
 * End to end through goshipctl: node add (first without GoShip there, then
 * with --install), project create --node (the image pushed on demand), vm exec
 * and app deploy routed to the node, a port forward reached at the node's
 * address, local files staged on the node (--binary, vm cp both ways), a template warmed on a node and
 * restored there, project list across both nodes, sshd gone → clear errors and the
 * local node unaffected, node remove.
 */
import { existsSync } from 'node:fs';
import { chmod, copyFile, mkdir, readFile, readdir, writeFile } from 'node:fs/promises';
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Store } from '../../src/store/index.ts';
import { NODE_USER, startSshNode, type SshNode } from '../support/index.ts';
import { cliOf, goshipctl } from '../helpers/cli.ts';
import { freePort, httpGet, until } from '../helpers/net.ts';
import { projectEnv, type ProjectEnv } from '../helpers/project-env.ts';

let env: ProjectEnv;
const { g, ok, json } = cliOf(() => env.env, 900_000);
let node: SshNode;
/** A third host for a project on two nodes: another user, another sshd. */
let other: SshNode | undefined;
let dir: string;
let url: string;
let USER: string;

beforeAll(async () => {
  env = await projectEnv('enode');
  dir = join(env.root, 'node');
  node = await startSshNode(dir);
  url = node.url;
  USER = node.user;
}, 1_800_000);

afterAll(async () => {
  await other?.cleanup();
  await node?.cleanup();
  await env?.cleanupAll();
}, 120_000);

const keys = () => node.keyArgs;
const sshPort = () => node.port;

interface NodeJson {
  name: string;
  url: string;
  reachable: boolean | null;
  error?: string;
  report: { goship: string; protocol: number; accel: string; cpus: number; memoryBytes: number } | null;
  projects: string[];
}

describe('a second node over SSH', () => {
  it('node add: a node without GoShip is refused with the fix; --install puts this one there', async () => {
    const bare = await g(['node', 'add', 'box', url, ...keys()]);
    expect(bare.code).toBe(1);
    expect(bare.stderr).toMatch(/node box: goshipctl did not run there/);
    expect(bare.stderr).toMatch(/--install/);
    // A host key that is not the known one: ssh refuses, and so does node add.
    await writeFile(join(dir, 'wrong_hosts'), `[127.0.0.1]:${sshPort()} ${(await readFile(join(dir, 'id.pub'), 'utf8')).trim().split(' ').slice(0, 2).join(' ')}\n`);
    const spoofed = await g(['node', 'add', 'box', url, '--identity', join(dir, 'id'), '--known-hosts', join(dir, 'wrong_hosts'), '--install']);
    expect([spoofed.code, spoofed.stderr]).toEqual([1, expect.stringMatching(/ENODE_UNREACHABLE|node box \(ssh:\/\/.*\): .*[Hh]ost key/)]);
    expect(await json<unknown[]>(['node', 'list'])).toEqual([]);

    const added = await json<NodeJson>(['node', 'add', 'box', url, ...keys(), '--install']);
    expect(added).toMatchObject({ name: 'box', url, projects: [] });
    expect(added.report).toMatchObject({ accel: 'tcg', protocol: 1 });
    expect(added.report!.cpus).toBeGreaterThan(0);
    const [listed] = await json<NodeJson[]>(['node', 'list']);
    expect(listed).toMatchObject({ name: 'box', reachable: true });
    // Bad input: a name or an address that cannot be one.
    const bad = await g(['node', 'add', '../x', 'http://nope']);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/expected ssh:\/\/USER@HOST\[:PORT\]/);
  }, 600_000);

  it('node add without --known-hosts: the host key is recorded at first contact, its fingerprint shown; a changed key is refused, saying it changed', async () => {
    const hostFp = (await execa('ssh-keygen', ['-l', '-f', join(dir, 'host.pub')])).stdout.split(' ')[1]!;
    const added = await g(['node', 'add', 'kh', url, '--identity', join(dir, 'id'), '--install']);
    expect(added.code).toBe(0);
    const own = join(env.layout.home, 'nodes', 'kh.known_hosts');
    expect(added.stdout).toContain(`host key recorded in ${own}: (ED25519) ${hostFp}`);
    expect((await json<{ hostKeys: string[]; knownHosts: string }>(['node', 'info', 'kh']))).toMatchObject({ hostKeys: [`(ED25519) ${hostFp}`], knownHosts: own, reachable: true });
    // Another key for the same address in GoShip's file: what a reinstalled node, or someone in between, looks like.
    const other = join(dir, 'other');
    await execa('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', other]);
    await writeFile(own, `[127.0.0.1]:${sshPort()} ${(await readFile(`${other}.pub`, 'utf8')).trim().split(' ').slice(0, 2).join(' ')}\n`);
    // A new connection, as after the shared one expired (it was checked when it was made, and would carry on).
    await execa('ssh', ['-o', `ControlPath=${join(env.layout.run, 'ssh-%C')}`, '-O', 'exit', '-p', String(sshPort()), '-l', USER, '127.0.0.1'], { reject: false });
    const changed = await json<{ reachable: boolean; error: string; hint: string }>(['node', 'info', 'kh']);
    expect(changed.reachable).toBe(false);
    expect(changed.error).toMatch(/REMOTE HOST IDENTIFICATION HAS CHANGED/);
    expect(changed.hint).toMatch(new RegExp(`^the node's host key CHANGED since it was recorded in ${own.replace(/[.]/g, '\\.')}: .*ssh-keygen -R '\\[127\\.0\\.0\\.1\\]:${sshPort()}' -f `));
    await ok(['node', 'remove', 'kh']);
    expect(existsSync(own)).toBe(false);
  }, 600_000);

  it('project create --node: the image goes there, the VM runs there as the node user; vm exec and exit codes pass through', async () => {
    await ok(['project', 'create', 'near', '--no-start']);
    const created = await g(['project', 'create', 'far', '--node', 'box', '--memory', '1G', '--json']);
    expect(created.code).toBe(0);
    expect(JSON.parse(created.stdout)).toMatchObject({ name: 'far', state: 'ready' });
    // cloud-init sets the host name a moment after the agent answers.
    expect(await until('the node VM\'s host name', async () => ((await ok(['vm', 'exec', 'far', '--', 'hostname'])).trim() === 'far' ? 'far' : undefined), 120_000, 1000)).toBe('far');
    expect((await g(['vm', 'exec', 'far', '--', 'sh', '-c', 'echo out; echo err >&2; exit 7'])).code).toBe(7);
    // vm exec and vm ping reach the node VM's monitor through ssh's forwarding: no goshipctl runs on the node for them.
    const traced = await goshipctl(['vm', 'exec', 'far', '--', 'sh', '-c', 'echo out; echo err >&2; exit 5'], { ...env.env, GOSHIP_TRACE: '1' }, { timeoutMs: 120_000 });
    expect([traced.code, traced.stdout]).toEqual([5, 'out']);
    expect(traced.stderr).toMatch(/^err$/m);
    expect(traced.stderr).toMatch(/vm far: through the node's monitor socket \(.*\/nodes\/box-[0-9a-f]{16}\.sock\)/);
    expect((await g(['vm', 'ping', 'far'])).stdout).toMatch(/^pong from \S+: [\d.]+ ms$/);
    // A recorded path that went stale: that command is routed the usual way (and works), the next one learns the path again.
    const store = await Store.open(env.layout);
    const learnt = (await store.read()).nodes.box!.projects!.far!.monitorSocket;
    expect(learnt).toMatch(/\/monitor\.sock$/);
    await store.update((d) => {
      d.nodes.box!.projects!.far!.monitorSocket = '/tmp/goship-nowhere/monitor.sock';
    });
    expect((await g(['vm', 'exec', 'far', '--', 'true'])).code).toBe(0);
    expect((await store.read()).nodes.box!.projects!.far!.monitorSocket).toBeUndefined();
    const again = await goshipctl(['vm', 'exec', 'far', '--', 'true'], { ...env.env, GOSHIP_TRACE: '1' }, { timeoutMs: 120_000 });
    expect([again.code, again.stderr]).toEqual([0, expect.stringMatching(/through the node's monitor socket/)]);
    expect((await store.read()).nodes.box!.projects!.far!.monitorSocket).toBe(learnt);
    // QEMU runs on the node, as its user.
    const { stdout } = await execa('pgrep', ['-u', USER, '-f', 'qemu-system-x86_64'], { reject: false });
    expect(stdout.trim()).not.toBe('');
    expect((await json<NodeJson>(['node', 'info', 'box'])).projects).toEqual(['far']);
  }, 1_200_000);

  it('app deploy on the node; its port is forwarded on the node and answers there', async () => {
    const port = await freePort();
    await ok(['app', 'deploy', 'far', 'web', '--command', '--port', `${port}:8080`, '--', '/usr/bin/python3', '-m', 'http.server', '8080']);
    const page = await until('the app on the node', async () => (await httpGet(port, '/'))?.status, 120_000, 500);
    expect(page).toBe(200);
    expect(await ok(['app', 'list', 'far'])).toMatch(/web\s+process/);
  }, 600_000);

  it('file arguments are staged on the node: --binary, vm cp up and down; nothing is left there', async () => {
    const local = join(env.root, 'busybox');
    await copyFile('/bin/busybox', local);
    await chmod(local, 0o755);
    const port = await freePort();
    await ok(['app', 'deploy', 'far', 'bb', '--binary', local, '--port', `${port}:8081`, '--', 'httpd', '-f', '-p', '8081', '-h', '/etc']);
    expect(await until('busybox httpd on the node', async () => (await httpGet(port, '/hostname'))?.body, 120_000, 500)).toBe('far\n');
    const up = join(env.root, 'up.txt');
    await writeFile(up, 'sent to the node\n');
    await ok(['vm', 'cp', up, 'far:/var/tmp/up.txt']);
    expect(await ok(['vm', 'exec', 'far', '--', 'sha256sum', '/var/tmp/up.txt'])).toMatch(new RegExp(`^${createHash('sha256').update('sent to the node\n').digest('hex')} `));
    const back = join(env.root, 'back');
    await mkdir(back);
    await ok(['vm', 'cp', 'far:/var/tmp/up.txt', back]);
    expect(await readFile(join(back, 'up.txt'), 'utf8')).toBe('sent to the node\n');
    const left = await execa('sh', ['-c', 'ls -d /tmp/goship-stage.* 2>/dev/null | wc -l']);
    expect(left.stdout.trim()).toBe('0');
  }, 600_000);

  it('--env-file goes to the node as a private staged file: its values are in no command line on either host, and the app gets them', async () => {
    const secret = `s3cret-${Date.now()}`;
    const envFile = join(env.root, 'app.env');
    await writeFile(envFile, `GREETING=${secret}\n`, { mode: 0o600 });
    // Every command line on this machine (this host and the node, sshd on loopback) while the deploy runs.
    let seen = '';
    let watching = true;
    const watch = (async () => {
      while (watching) {
        for (const pid of await readdir('/proc')) {
          if (!/^\d+$/.test(pid)) continue;
          const cmd = await readFile(`/proc/${pid}/cmdline`, 'latin1').catch(() => '');
          if (cmd.includes(secret)) seen = cmd.replace(/\0/g, ' ');
        }
        await new Promise((r) => setTimeout(r, 20));
      }
    })();
    try {
      // Into its data directory, its working directory (its /tmp and /var/tmp are private: PrivateTmp=yes).
      await ok(['app', 'deploy', 'far', 'envy', '--command', '--env-file', envFile, '--', '/bin/sh', '-c', 'echo "$GREETING" > greeting; exec sleep 3600']);
    } finally {
      watching = false;
      await watch;
    }
    try {
      expect(seen).toBe('');
      expect((await ok(['vm', 'exec', 'far', '--', 'cat', '/var/lib/goship/apps/envy/data/greeting'])).trim()).toBe(secret);
    } finally {
      await g(['app', 'remove', 'far', 'envy']);
    }
  }, 600_000);

  it('project list and app list show both nodes', async () => {
    const list = JSON.parse(await ok(['--json', 'project', 'list'])) as Array<{ name: string; node: string; state: string }>;
    expect(list.map((p) => [p.name, p.node, p.state])).toEqual([
      ['near', 'local', 'stopped'],
      ['far', 'box', 'ready'],
    ]);
    // The node's rows are read from its state file (where node add learnt it is), with no goshipctl started there...
    expect((await json<NodeJson>(['node', 'info', 'box'])).report).toMatchObject({ home: join(node.home, '.local', 'share', 'goship') });
    const traced = await goshipctl(['--json', 'project', 'list'], { ...env.env, GOSHIP_TRACE: '1' }, { timeoutMs: 120_000 });
    expect(traced.stderr).toMatch(/node box: project list read from its state file/);
    // ...in one read: the /proc files the last listing named are read with the state.
    expect(traced.stderr).not.toMatch(/read again/);
    expect(JSON.parse(traced.stdout)).toEqual(list);
    // ...unless the node has something to repair: its VM's monitor killed, the node's goshipctl lists (and a new monitor adopts the QEMU).
    const monitor = async () => (await execa('pgrep', ['-u', USER, '-f', 'goship-monitor.cjs --vm far'], { reject: false })).stdout.trim();
    const before = await monitor();
    expect(before).toMatch(/^\d+$/);
    await execa('kill', ['-9', before]);
    await until('the monitor gone', async () => ((await monitor()) === '' ? true : undefined), 30_000);
    const repaired = await goshipctl(['--json', 'project', 'list'], { ...env.env, GOSHIP_TRACE: '1' }, { timeoutMs: 300_000 });
    expect(repaired.stderr).toMatch(/node box: project list by its goshipctl \(vm \S+ needs a repair\)/);
    expect((JSON.parse(repaired.stdout) as typeof list).map((p) => [p.name, p.node, p.state])).toEqual(list.map((p) => [p.name, p.node, p.state]));
    expect(await monitor()).toMatch(/^\d+$/);
    expect(await monitor()).not.toBe(before);
    // The new monitor is not the one the last listing read: the next list reads again, the one after it once.
    const moved = await goshipctl(['--json', 'project', 'list'], { ...env.env, GOSHIP_TRACE: '1' }, { timeoutMs: 120_000 });
    expect(moved.stderr).toMatch(/node box: the state names other processes than the last listing, read again\n(.*\n)*.*node box: project list read from its state file/);
    const settled = await goshipctl(['--json', 'project', 'list'], { ...env.env, GOSHIP_TRACE: '1' }, { timeoutMs: 120_000 });
    expect(settled.stderr).toMatch(/node box: project list read from its state file/);
    expect(settled.stderr).not.toMatch(/read again/);
    // The same rows (the agent's facts move on as the adopted session re-syncs), naming the new monitor.
    const rows = JSON.parse(settled.stdout) as Array<{ name: string; node: string; state: string; vm?: { monitor?: { pid?: number } } }>;
    expect(rows.map((p) => [p.name, p.node, p.state])).toEqual(list.map((p) => [p.name, p.node, p.state]));
    expect(String(rows.find((p) => p.name === 'far')?.vm?.monitor?.pid)).toBe(await monitor());
    // Without a project: this host's apps (none: near is stopped) and the node's, one row per node.
    const apps = await json<Array<{ project: string; node: string; name: string; kind: string; state: string }>>(['app', 'list']);
    expect(apps.map((a) => [a.project, a.node, a.name, a.kind, a.state])).toEqual([
      ['far', 'box', 'bb', 'process', 'running'],
      ['far', 'box', 'web', 'process', 'running'],
    ]);
    expect((await ok(['app', 'list'])).split('\n').slice(0, 2)).toEqual([expect.stringMatching(/^PROJECT\s+NODE\s+APP\s+KIND/), expect.stringMatching(/^far\s+box\s+bb\s+process\s/)]);
  }, 300_000);

  it('project move: a running project goes to the node with its app\'s process; with sshd gone it stays here, running; cut mid-transfer, it stays here suspended', async () => {
    const web = await freePort();
    await ok(['project', 'create', 'mover', '--memory', '512M', '--wait', 'agent']);
    await ok(['app', 'deploy', 'mover', 'web', '--command', '--port', `${web}:8080`, '--', '/usr/bin/python3', '-m', 'http.server', '8080']);
    const pidOf = async () => (await json<{ process: { pid: number } }>(['app', 'info', 'mover', 'web'])).process.pid;
    const pid = await pidOf();
    const [bootId] = (await ok(['vm', 'exec', 'mover', '--', 'cat', '/proc/sys/kernel/random/boot_id'])).split('\n');
    const serves = async () => (await until(`port ${web} answers`, async () => (await httpGet(web))?.status, 60_000)) === 200;
    expect(await serves()).toBe(true);

    // The node unreachable: the move fails naming it, and the project runs here as before.
    await node.stop();
    const cut = await g(['project', 'move', 'mover', '--to', 'box']);
    expect([cut.code, cut.stderr]).toEqual([1, expect.stringMatching(/node box \(ssh:\/\/.*\): .*(Connection refused|closed|reset)/)]);
    await node.start();
    const here = await json<Array<{ name: string; node: string; state: string; lastError?: string }>>(['project', 'list']);
    const consoleTail = (await readFile(env.layout.vmFile('mover', 'consoleLog'), 'utf8').catch(() => '')).split('\n').slice(-60).join('\n');
    expect(here.filter((p) => p.name === 'mover').map((p) => [p.node, p.state]), `${JSON.stringify(here)}\n${consoleTail}`).toEqual([['local', 'ready']]);
    expect(await pidOf()).toBe(pid);

    // The node goes away in the middle of the transfer (its sshd and every session killed): whether it took the
    // project cannot be asked, so the project stays here, suspended, and the error says how to go on.
    const nodeVms = join(node.home, '.local', 'share', 'goship', 'vms');
    const receiving = async () => (await readdir(nodeVms).catch(() => [] as string[])).filter((f) => f.startsWith('.receive-'));
    const moving = g(['project', 'move', 'mover', '--to', 'box']);
    await until('the node to receive', async () => ((await receiving()).length > 0 ? true : undefined), 300_000, 20);
    await node.stop();
    const gone = await moving;
    expect([gone.code, gone.stderr]).toEqual([1, expect.stringMatching(/^goshipctl: error: project mover: the connection to node box broke during the move, and whether the node took it cannot be asked: it stays suspended here\nhint: when the node answers: goshipctl node info box; if it holds mover, delete it here/)]);
    await node.start();
    expect((await json<Array<{ name: string; node: string; state: string }>>(['project', 'list'])).filter((p) => p.name === 'mover').map((p) => [p.node, p.state])).toEqual([['local', 'suspended']]);
    await ok(['project', 'resume', 'mover']);
    expect(await pidOf()).toBe(pid);
    expect(await receiving()).toHaveLength(1); // the killed receive's directory, until the next receive sweeps it

    const moved = await json<{ name: string; node: string; state: string; bytes: number }>(['project', 'move', 'mover', '--to', 'box']);
    expect([moved.node, moved.state]).toEqual(['box', 'ready']);
    const list = await json<Array<{ name: string; node: string; state: string }>>(['project', 'list']);
    expect(list.filter((p) => p.name === 'mover').map((p) => [p.node, p.state])).toEqual([['box', 'ready']]);
    // The same guest: the same boot, the app's same process, now run by the node's user, and serving on the node's port.
    expect((await ok(['vm', 'exec', 'mover', '--', 'cat', '/proc/sys/kernel/random/boot_id'])).split('\n')[0]).toBe(bootId);
    expect(await pidOf()).toBe(pid);
    expect((await execa('pgrep', ['-u', USER, '-f', 'process=goship-mover'], { reject: false })).stdout.trim()).toMatch(/^\d+$/);
    expect(await serves()).toBe(true);
    // Nothing of it is left here, nor of the cut receive there.
    expect(existsSync(env.layout.vmDir('mover'))).toBe(false);
    expect(await receiving()).toEqual([]);
    await ok(['project', 'delete', 'mover', '--force']);
  }, 900_000);

  it('a project on two nodes: one VM on each (restored from the template warmed on one, booted on the other), commands on each or on one with --node, one row per node', async () => {
    other = await startSshNode(join(env.root, 'node2'), `${NODE_USER}2`);
    await ok(['node', 'add', 'box2', other.url, ...other.keyArgs, '--install']);
    // A template is a node's own: warmed there (image warm --node), listed there, used by a create there.
    const warmed = await json<{ name: string; image: string; memoryBytes: number; dir: string }>(['image', 'warm', '--node', 'box', '--memory', '512M']);
    expect([warmed.image, warmed.memoryBytes, warmed.dir.startsWith(node.home)]).toEqual(['default', 512 * 1024 * 1024, true]);
    expect((await json<{ templates: Array<{ name: string }> }>(['image', 'info', 'default', '--node', 'box'])).templates.map((t) => t.name)).toEqual([warmed.name]);
    expect((await json<{ templates: unknown[] }>(['image', 'info', 'default'])).templates).toEqual([]);
    const created = await json<Array<{ node: string; code: number; result: { name: string; from: string } }>>(['project', 'create', 'duo', '--node', 'box', '--node', 'box2', '--memory', '512M']);
    expect(created.map((c) => [c.node, c.code, c.result.name, c.result.from])).toEqual([
      ['box', 0, 'duo', 'template'],
      ['box2', 0, 'duo', 'boot'],
    ]);
    // One VM on each node, each run by that node's user.
    const owner = async (u: string) => (await execa('pgrep', ['-u', u, '-f', 'process=goship-duo'], { reject: false })).stdout.trim();
    expect(await owner(USER)).toMatch(/^\d+$/);
    expect(await owner(other.user)).toMatch(/^\d+$/);
    expect(await ok(['vm', 'exec', 'duo', '--node', 'box2', '--', 'id', '-un'])).toBe('root');
    const both = await g(['vm', 'exec', 'duo', '--', 'true']);
    expect([both.code, both.stderr]).toEqual([0, expect.stringMatching(/== node box ==\n(.*\n)*== node box2 ==/)]);
    // --json on several nodes: one document, a row per node with its exit code and its JSON.
    const infos = await json<Array<{ node: string; code: number; result: { name: string; state: string } }>>(['project', 'info', 'duo']);
    expect(infos.map((i) => [i.node, i.code, i.result.name, i.result.state])).toEqual([
      ['box', 0, 'duo', 'ready'],
      ['box2', 0, 'duo', 'ready'],
    ]);
    const list = await json<Array<{ name: string; node: string; state: string }>>(['project', 'list']);
    expect(list.filter((p) => p.name === 'duo').map((p) => [p.node, p.state])).toEqual([
      ['box', 'ready'],
      ['box2', 'ready'],
    ]);
    // Deleted on both: neither node keeps a VM, and the placements go.
    await ok(['project', 'delete', 'duo', '--force']);
    expect(await owner(USER)).toBe('');
    expect(await owner(other.user)).toBe('');
    expect((await json<NodeJson>(['node', 'info', 'box2'])).projects).toEqual([]);
    await ok(['node', 'remove', 'box2']);
    await other.cleanup();
    other = undefined;
  }, 900_000);

  it('sshd gone: the node\'s commands fail naming it, the local node works, nothing local is rewritten', async () => {
    const before = await readFile(env.layout.stateFile);
    await node.stop();
    const r = await g(['vm', 'exec', 'far', '--', 'true']);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/node box \(ssh:\/\/goship-node-test@127\.0\.0\.1:\d+\): .*(Connection refused|closed|reset)/);
    const list = await json<Array<{ name: string; node: string; state: string }>>(['project', 'list']);
    expect(list.map((p) => [p.name, p.node, p.state])).toEqual([
      ['near', 'local', 'stopped'],
      ['far', 'box', 'unreachable'],
    ]);
    expect((await json<NodeJson[]>(['node', 'list']))[0]).toMatchObject({ name: 'box', reachable: false });
    const apps = await g(['app', 'list']);
    expect([apps.code, apps.stdout]).toEqual([0, expect.stringMatching(/^no apps .*\nnode box unreachable \(projects far\): /)]);
    expect(await json(['app', 'list'])).toEqual([{ node: 'box', state: 'unreachable', projects: ['far'], error: expect.stringMatching(/Connection refused|closed|reset/) }]);
    expect(await readFile(env.layout.stateFile)).toEqual(before);
    await node.start();
  }, 300_000);

  it('node remove: refused while a project lives there; after project delete, done', async () => {
    const refused = await g(['node', 'remove', 'box']);
    expect([refused.code, refused.stderr]).toEqual([4, expect.stringMatching(/node box holds projects: far/)]);
    await ok(['project', 'delete', 'far', '--force']);
    expect((await json<NodeJson>(['node', 'info', 'box'])).projects).toEqual([]);
    const guess = join(env.layout.run, 'nodes', 'box.list-probe.json');
    expect(existsSync(guess)).toBe(true);
    await ok(['node', 'remove', 'box']);
    expect(await json<unknown[]>(['node', 'list'])).toEqual([]);
    expect(existsSync(guess)).toBe(false);
    await ok(['project', 'delete', 'near']);
  }, 600_000);
});
