/**
 * First boot and the guest agent, end to end, on the real Debian image under
 * TCG: cloud-init provisions the VM (hostname, SSH key, a once-per-instance
 * command), the agent answers over virtio-serial, files travel both ways,
 * `shutdown` powers the guest off, and a restart reaches ready again without
 * provisioning a second time. One VM is shared by the tests of this file.
 */
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { processMarker, waitGone } from '../../src/qemu/index.ts';
import { Runtime } from '../../src/runtime/index.ts';
import type { AgentClient } from '../../src/serial/index.ts';
import type { Vm } from '../../src/store/index.ts';
import { execa } from 'execa';
import { CLI, goshipctl } from '../helpers/cli.ts';
import { until } from '../helpers/net.ts';
import { projectEnv, type ProjectEnv } from '../helpers/project-env.ts';
import { ed25519PublicKey } from '../helpers/ssh-key.ts';

const SSH_KEY = ed25519PublicKey('e2e@goship');

let env: ProjectEnv;
let rt: Runtime;
let vm: Vm;
let agent: AgentClient;

async function sha256(path: string): Promise<string> {
  const h = createHash('sha256');
  for await (const chunk of createReadStream(path)) h.update(chunk as Buffer);
  return h.digest('hex');
}

function collect(): { stream: Writable; text: () => string } {
  const chunks: Buffer[] = [];
  return {
    stream: new Writable({
      write(c, _e, cb) {
        chunks.push(Buffer.from(c));
        cb();
      },
    }),
    text: () => Buffer.concat(chunks).toString('utf8'),
  };
}

async function run(argv: string[]): Promise<{ code: number | null; out: string; err: string }> {
  const out = collect();
  const err = collect();
  const r = await agent.exec(argv, { stdout: out.stream, stderr: err.stream, timeoutMs: 60_000 });
  return { code: r.exitCode, out: out.text(), err: err.text() };
}

let baseSha: string;

beforeAll(async () => {
  env = await projectEnv('ea');
  baseSha = await sha256(env.image.base);
  rt = await Runtime.open({ layout: env.layout });
  const image = await rt.images.resolve('default');
  vm = await rt.vms.create({
    spec: { name: 'e2e-agent', cpu: { count: 2 }, memory: '1G', network: { mode: 'user', forwards: [] } },
    base: { path: image.base, name: 'default', ...image.boot },
    diskBytes: 4 * 1024 ** 3,
    seed: {
      instanceId: 'iid-e2e-agent-1',
      hostname: 'e2e-agent',
      sshKeys: [SSH_KEY],
      // runcmd runs once per instance: each run appends a line.
      runcmd: [['sh', '-c', 'date +%s >> /var/lib/goship-provisioned']],
    },
  });
  vm = await rt.vms.start('e2e-agent', { waitAgent: true, agentTimeoutMs: 240_000 });
  agent = await rt.vms.agent('e2e-agent', 30_000);
}, 600_000);

afterAll(async () => {
  await agent?.close();
  await env?.cleanupAll();
}, 60_000);

describe('the agent in a real Debian guest', () => {
  it('is ready, and answers ping', async () => {
    expect(vm.state).toBe('ready');
    expect(vm.agent?.protocol).toBe(1);
    const r = await agent.ping();
    expect(r.rttMs).toBeGreaterThan(0);
  });

  it('info shows the hostname cloud-init set', async () => {
    let info = await agent.info();
    for (let i = 0; i < 240 && info.hostname !== 'e2e-agent'; i++) {
      await new Promise((r) => setTimeout(r, 500));
      info = await agent.info();
    }
    expect(info.hostname).toBe('e2e-agent');
    // The image's generic Debian kernel (it has CONFIG_VMGENID), e.g. 6.1.0-57-amd64.
    expect(info.kernel).toMatch(/^\d+\.\d+\.\d+-\d+-amd64$/);
    expect(info.memTotal).toBeGreaterThan(512 * 1024 * 1024);
  }, 180_000);

  it('exec returns output and exit codes; argv is not a shell string', async () => {
    expect(await run(['echo', 'hello from', 'the guest'])).toEqual({ code: 0, out: 'hello from the guest\n', err: '' });
    expect((await run(['sh', '-c', 'echo oops >&2; exit 3'])).code).toBe(3);
    const literal = await run(['echo', '$(id -u); ls']);
    expect(literal.out).toBe('$(id -u); ls\n');
  });

  it("the agent runs with its unit's OpenSSL tuning; commands do not inherit it", async () => {
    const pid = (await run(['systemctl', 'show', '--property=MainPID', '--value', 'goship-agent'])).out.trim();
    const environ = (await run(['cat', `/proc/${pid}/environ`])).out.split('\0');
    expect(environ).toContain('OPENSSL_ia32cap=~0x1000020000000000:~0x128');
    expect((await run(['env'])).out).not.toMatch(/OPENSSL_ia32cap|UV_THREADPOOL_SIZE/);
  });

  it('cloud-init installed the SSH key for the goship user, once', async () => {
    // cloud-init's final stage may still run right after the agent is ready.
    await run(['cloud-init', 'status', '--wait']);
    const keys = await run(['cat', '/home/goship/.ssh/authorized_keys']);
    expect(keys.out).toContain(SSH_KEY);
    const prov = await run(['cat', '/var/lib/goship-provisioned']);
    expect(prov.out.trim().split('\n')).toHaveLength(1);
    // The overlay's virtual size is 4 GiB; cloud-init's resizefs grew the root file system to it.
    expect((await agent.info()).diskTotal).toBeGreaterThan(3 * 1024 ** 3);
  }, 180_000);

  it('a 50 MiB file uploaded and downloaded back has the same sha256', async () => {
    const local = join(env.root, 'blob.bin');
    await writeFile(local, randomBytes(50 * 1024 * 1024));
    const up = await agent.upload(local, '/var/tmp/blob.bin', { mode: 0o640 });
    const want = await sha256(local);
    expect(up).toEqual({ bytes: 50 * 1024 * 1024, sha256: want });
    expect((await run(['sha256sum', '/var/tmp/blob.bin'])).out.split(' ')[0]).toBe(want);
    const back = join(env.root, 'back.bin');
    const down = await agent.download('/var/tmp/blob.bin', back);
    expect(down.sha256).toBe(want);
    expect(await sha256(back)).toBe(want);
    expect(down.mode & 0o777).toBe(0o640);
  }, 300_000);

  it('on a terminal, vm exec shows a guest\'s control sequences instead of obeying them (colour passes); --raw and pipes keep the bytes', async () => {
    const printf = ['printf', '\\033]0;pwned\\007\\033[31mred\\033[0m\\033[2J'];
    // script(1) gives goshipctl a terminal for its stdout, as a person's shell would.
    const onTty = async (extra: string[]) => {
      const words = [process.execPath, CLI, 'vm', 'exec', 'e2e-agent', ...extra, '--', ...printf].map((w) => `'${w.replace(/'/g, "'\\''")}'`).join(' ');
      const r = await execa('script', ['-qec', words, '/dev/null'], { env: env.env, reject: false, stdin: 'ignore' });
      return r.stdout;
    };
    expect(await onTty([])).toBe('^[]0;pwned^G\x1b[31mred\x1b[0m^[[2J');
    expect(await onTty(['--raw'])).toBe('\x1b]0;pwned\x07\x1b[31mred\x1b[0m\x1b[2J');
    const piped = await goshipctl(['vm', 'exec', 'e2e-agent', '--', ...printf], env.env);
    expect(piped.stdout).toBe('\x1b]0;pwned\x07\x1b[31mred\x1b[0m\x1b[2J');
  }, 120_000);

  it('an agent that is down: vm exec waits at most --agent-timeout and says when it was last ready and what to look at; back, exec works', async () => {
    // Stopped a moment after this exec has its answer, started again 30 s later: transient timers of the guest's systemd.
    const timer = (s: number, verb: string) => `systemd-run --quiet --on-active=${s} --timer-property=AccuracySec=10ms systemctl ${verb} goship-agent`;
    await run(['sh', '-c', `${timer(1, 'stop')} && ${timer(30, 'start')}`]);
    await agent.close();
    try {
      await agentDownThenBack();
    } finally {
      // The file's later tests share this session: have it back whatever happened above.
      agent = await rt.vms.agent('e2e-agent', 180_000);
    }
  }, 300_000);

  async function agentDownThenBack(): Promise<void> {
    await until('the monitor to see the agent gone', async () => {
      const m = await rt.vms.monitor('e2e-agent');
      try {
        return m.agent.hello.ready === false ? true : undefined;
      } finally {
        await m.close();
      }
    }, 60_000, 250);
    const r = await goshipctl(['vm', 'exec', 'e2e-agent', '--agent-timeout', '3', '--', 'true'], env.env);
    expect(r.code).toBe(1);
    const [line, hint] = r.stderr.split('\n');
    expect(line).toMatch(/^goshipctl: error: VM e2e-agent: its guest agent did not answer within 3 s \(it was last ready at \d{4}-\d\d-\d\dT[\d:.]+Z\): no hello from the guest agent within 3000 ms$/);
    expect(hint).toBe(
      "hint: read the guest's console (goshipctl vm console e2e-agent); restart the agent in the guest (systemctl restart goship-agent) or the VM (goshipctl vm stop e2e-agent && goshipctl vm start e2e-agent); --agent-timeout S waits longer",
    );
    const back = await goshipctl(['vm', 'exec', 'e2e-agent', '--agent-timeout', '180', '--', 'echo', 'back'], env.env);
    expect([back.code, back.stdout.trim()]).toEqual([0, 'back']);
  }

  it('the base image is unchanged after the VM wrote to its disk', async () => {
    await run(['sync']);
    expect(await sha256(env.image.base)).toBe(baseSha);
  }, 60_000);

  it('shutdown powers the guest off; a restart reaches ready again without provisioning again', async () => {
    const r = await agent.shutdown();
    expect(r.accepted).toBe(true);
    await agent.close();
    expect(await waitGone(vm.pid!, processMarker(vm.id), 120_000)).toBe(true);
    // The VM's monitor records the end from QEMU's SHUTDOWN event, then exits.
    let stopped = await rt.vms.get('e2e-agent');
    for (let i = 0; i < 100 && stopped.state !== 'stopped'; i++) {
      await new Promise((r) => setTimeout(r, 100));
      stopped = await rt.vms.get('e2e-agent');
    }
    expect(stopped.state).toBe('stopped');
    expect(stopped.end).toMatchObject({ kind: 'poweroff', shutdownReason: 'guest-shutdown', summary: 'the guest powered itself off' });

    const again = await rt.vms.start('e2e-agent', { waitAgent: true, agentTimeoutMs: 240_000 });
    expect(again.state).toBe('ready');
    expect(again.agent?.bootId).not.toBe(vm.agent?.bootId);
    agent = await rt.vms.agent('e2e-agent', 30_000);
    await run(['cloud-init', 'status', '--wait']);
    const prov = await run(['cat', '/var/lib/goship-provisioned']);
    expect(prov.out.trim().split('\n')).toHaveLength(1);
    expect((await agent.info()).hostname).toBe('e2e-agent');
  }, 600_000);

  it('the stop escalation asks the agent first', async () => {
    await agent.close();
    const r = await rt.vms.stop('e2e-agent');
    expect(r.endedBy).toBe('agent');
    expect(r.vm.state).toBe('stopped');
  }, 180_000);
});
