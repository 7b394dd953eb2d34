/**
 * End to end: the default base image (built by buildImage, cached) boots under
 * TCG from a qcow2 overlay with a cloud-init seed, and
 *  - the console shows the kernel and systemd reaching multi-user.target;
 *  - an early unit (the boot probe) writes a line to its virtio-serial port;
 *  - the guest agent, an early systemd unit, says hello on org.goship.agent.0;
 *  - cloud-init applied the hostname from meta-data (a runcmd line on ttyS0);
 *  - ACPI system_powerdown powers the guest off: QEMU exits by itself.
 * One VM is shared by the tests of this file. The timeline is printed at the end.
 */
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FILES } from '../../src/layout.ts';
import { AGENT_PORT_NAME } from '../../src/protocol/index.ts';
import { PROBE_PORT_NAME } from '../../src/image/recipe.ts';
import type { ImageInfo } from '../../src/image/catalog.ts';
import { ensureTestImage } from '../helpers/debian-image.ts';

const HOSTNAME = 'goship-e2e-img';
const RUNCMD_MARK = 'goship-e2e-runcmd';

let image: ImageInfo;
let dir: string;
let qemu: ChildProcess | undefined;
let t0 = 0;
let exited: Promise<{ code: number | null; signal: NodeJS.Signals | null; at: number }>;
const timeline: Record<string, number> = {};

const since = (): number => Math.round((Date.now() - t0) / 100) / 10;
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function consoleText(): string {
  try {
    return readFileSync(join(dir, FILES.consoleLog), 'utf8');
  } catch {
    return '';
  }
}

/** Waits until the console log matches; records when. */
async function waitConsole(label: string, re: RegExp, timeoutMs: number): Promise<RegExpMatchArray> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const m = consoleText().match(re);
    if (m) {
      timeline[label] ??= since();
      return m;
    }
    if (Date.now() > end) throw new Error(`console: no ${re} after ${timeoutMs / 1000} s; tail:\n${consoleText().split('\n').slice(-25).join('\n')}`);
    await sleep(200);
  }
}

/** Connects to a chardev socket until the guest writes a first full line; resolves with it. */
function firstLine(path: string, label: string): Promise<string> {
  return new Promise((resolve) => {
    let buf = '';
    const attempt = (): void => {
      const s = net.connect(path);
      s.on('data', (b) => {
        buf += b.toString('utf8');
        const line = buf.split('\n').find((l) => l.trim() !== '');
        if (line !== undefined && buf.includes('\n', buf.indexOf(line))) {
          timeline[label] ??= since();
          resolve(line.trim());
          // keep the connection: a write on the guest side must not block later
        }
      });
      s.on('error', () => setTimeout(attempt, 200));
    };
    attempt();
  });
}

/** A minimal QMP client: greeting, qmp_capabilities, then commands; records events. */
class Qmp {
  events: Array<{ event: string; data?: unknown; at: number }> = [];
  private sock: net.Socket | undefined;
  private buf = '';
  private waiters = new Map<number, (v: unknown) => void>();
  private nextId = 1;

  async connect(path: string): Promise<void> {
    for (let i = 0; ; i++) {
      try {
        await new Promise<void>((resolve, reject) => {
          const s = net.connect(path, () => resolve());
          s.once('error', reject);
          this.sock = s;
        });
        break;
      } catch (err) {
        if (i > 50) throw err;
        await sleep(100);
      }
    }
    const greeting = new Promise<void>((resolve) => this.waiters.set(0, () => resolve()));
    this.sock!.on('data', (b) => this.onData(b));
    await greeting;
    await this.execute('qmp_capabilities');
  }

  private onData(b: Buffer): void {
    this.buf += b.toString('utf8');
    let nl: number;
    while ((nl = this.buf.indexOf('\n')) >= 0) {
      const line = this.buf.slice(0, nl).trim();
      this.buf = this.buf.slice(nl + 1);
      if (!line) continue;
      const msg = JSON.parse(line) as { QMP?: unknown; event?: string; data?: unknown; id?: number; return?: unknown; error?: unknown };
      if (msg.QMP) this.waiters.get(0)?.(msg);
      else if (msg.event) this.events.push({ event: msg.event, data: msg.data, at: since() });
      else if (typeof msg.id === 'number') {
        this.waiters.get(msg.id)?.(msg);
        this.waiters.delete(msg.id);
      }
    }
  }

  execute(command: string, args?: object): Promise<{ return?: unknown; error?: { class: string; desc: string } }> {
    const id = this.nextId++;
    const reply = new Promise<unknown>((resolve) => this.waiters.set(id, resolve));
    this.sock!.write(`${JSON.stringify({ execute: command, ...(args ? { arguments: args } : {}), id })}\n`);
    return reply as Promise<{ return?: unknown; error?: { class: string; desc: string } }>;
  }

  close(): void {
    this.sock?.destroy();
  }
}

let qmp: Qmp;
let probeLine: Promise<string>;
let agentLine: Promise<string>;

beforeAll(async () => {
  image = await ensureTestImage({ log: (l) => console.info(l) });
  // short: the unix socket paths must fit in 107 bytes
  dir = await mkdtemp('/tmp/gsi-');
  const overlay = join(dir, FILES.overlay);
  await execa('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', image.base, '-F', 'qcow2', overlay, '8G']);

  const seed = join(dir, FILES.seed);
  const runcmd = ['sh', '-c', `echo "${RUNCMD_MARK} host=$(hostname) up=$(cut -d' ' -f1 /proc/uptime)" > /dev/ttyS0`];
  if (existsSync(new URL('../../src/cloudinit/index.ts', import.meta.url))) {
    const { buildSeed } = await import('../../src/cloudinit/index.ts');
    await buildSeed({ instanceId: `iid-${HOSTNAME}`, hostname: HOSTNAME, sshKeys: [], runcmd: [runcmd] }, seed);
  } else {
    await writeFile(join(dir, 'meta-data'), `instance-id: iid-${HOSTNAME}\nlocal-hostname: ${HOSTNAME}\n`);
    await writeFile(join(dir, 'user-data'), `#cloud-config\nhostname: ${HOSTNAME}\nruncmd:\n  - ${JSON.stringify(runcmd)}\n`);
    await execa('xorriso', ['-as', 'mkisofs', '-quiet', '-output', seed, '-volid', 'cidata', '-joliet', '-rock', join(dir, 'meta-data'), join(dir, 'user-data')]);
  }

  const agentSock = join(dir, FILES.agentSocket);
  const probeSock = join(dir, 'probe.sock');
  const qmpSock = join(dir, FILES.qmpSocket);
  const argv = [
    '-accel', 'tcg', '-machine', 'q35', '-cpu', 'max', '-smp', '2', '-m', '1024',
    '-nodefaults', '-no-user-config', '-display', 'none', '-name', 'guest=image-e2e',
    '-kernel', image.kernel!, '-initrd', image.initrd!, '-append', image.cmdline!,
    '-blockdev', `driver=file,filename=${overlay},node-name=disk-file`,
    '-blockdev', 'driver=qcow2,file=disk-file,node-name=disk',
    '-device', 'virtio-blk-pci,drive=disk',
    // The cloud kernel has no AHCI driver (CONFIG_SATA_AHCI is not set): the seed
    // is a read-only virtio disk; cloud-init finds it by its cidata label.
    '-blockdev', `driver=file,filename=${seed},node-name=seed-file,read-only=on`,
    '-blockdev', 'driver=raw,file=seed-file,node-name=seed,read-only=on',
    '-device', 'virtio-blk-pci,drive=seed',
    '-netdev', 'user,id=n0', '-device', 'virtio-net-pci,netdev=n0,romfile=',
    '-device', 'virtio-rng-pci',
    '-chardev', `file,id=c0,path=${join(dir, FILES.consoleLog)}`, '-serial', 'chardev:c0',
    '-device', 'virtio-serial-pci,id=vser0,max_ports=4',
    '-chardev', `socket,id=a0,path=${agentSock},server=on,wait=off`,
    '-device', `virtserialport,bus=vser0.0,nr=1,chardev=a0,name=${AGENT_PORT_NAME}`,
    '-chardev', `socket,id=p0,path=${probeSock},server=on,wait=off`,
    '-device', `virtserialport,bus=vser0.0,nr=2,chardev=p0,name=${PROBE_PORT_NAME}`,
    '-qmp', `unix:${qmpSock},server=on,wait=off`,
    '-S',
  ];
  qemu = spawn('qemu-system-x86_64', argv, { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  qemu.stderr?.on('data', (b: Buffer) => (stderr += b.toString()));
  exited = new Promise((resolve) => qemu!.once('exit', (code, signal) => resolve({ code, signal, at: since() })));
  qemu.once('exit', (code) => {
    if (code !== 0) console.error(`qemu exited ${code}: ${stderr}`);
  });
  t0 = Date.now();
  qmp = new Qmp();
  await qmp.connect(qmpSock);
  probeLine = firstLine(probeSock, 'probe line on its virtio port');
  agentLine = firstLine(agentSock, 'agent hello on org.goship.agent.0');
  // -S then cont: every clock starts at cont, once the sockets are listened to
  t0 = Date.now();
  expect((await qmp.execute('cont')).error).toBeUndefined();
}, 900_000);

afterAll(async () => {
  qmp?.close();
  if (qemu && qemu.exitCode === null && qemu.signalCode === null) {
    qemu.kill('SIGKILL');
    await exited;
  }
  const rows = Object.entries(timeline).sort((a, b) => a[1] - b[1]);
  console.info(`image boot timeline (s from cont):\n${rows.map(([k, v]) => `  ${String(v).padStart(5)}  ${k}`).join('\n')}`);
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe('the default image boots under TCG', () => {
  it('the console shows the kernel, the initramfs and systemd', async () => {
    await waitConsole('kernel', /Linux version \S+-amd64/, 60_000);
    await waitConsole('initramfs runs /init', /Run \/init as init process/, 60_000);
    await waitConsole('systemd (PID 1)', /systemd\[1\]: systemd \d+/, 90_000);
    await waitConsole('agent unit started', /Started goship-agent\.service/, 90_000);
  }, 240_000);

  it('an early unit writes a line to its virtio-serial port', async () => {
    const line = await probeLine;
    expect(line).toMatch(/^goship-probe: early unit up=\d+\.\d+$/);
  }, 120_000);

  it('the guest agent, started early, says hello on the agent port', async () => {
    const line = await agentLine;
    const hello = JSON.parse(line) as { t: string; protocol: number; hostname: string };
    expect(hello.t).toBe('hello');
    expect(typeof hello.protocol).toBe('number');
    // How long it took is printed in the timeline; bench/agent.mjs measures it against its target.
    expect(timeline['agent hello on org.goship.agent.0']).toBeGreaterThan(0);
  }, 120_000);

  it('systemd reaches multi-user.target', async () => {
    await waitConsole('multi-user.target', /Reached target .*multi-user\.target/, 150_000);
  }, 180_000);

  it('cloud-init found the seed and applied the hostname from meta-data', async () => {
    const m = await waitConsole('cloud-init runcmd', new RegExp(`${RUNCMD_MARK} host=(\\S+)`), 200_000);
    expect(m[1]).toBe(HOSTNAME);
    const fin = await waitConsole('cloud-init done', /Cloud-init v\. \S+ finished at .*Datasource (\S+) \[seed=([^\]]+)\]/, 60_000);
    expect(fin[1]).toBe('DataSourceNoCloud');
    expect(fin[2]).toMatch(/^\/dev\/vd[b-z]$/);
    // every cloud-init module of the image's configuration ran cleanly
    expect(consoleText()).not.toMatch(/util\.py\[WARNING\]: Running module \w+ .* failed/);
  }, 300_000);

  it('ACPI system_powerdown powers the guest off and QEMU exits by itself', async () => {
    timeline['system_powerdown sent'] = since();
    expect((await qmp.execute('system_powerdown')).error).toBeUndefined();
    const exit = await Promise.race([exited, sleep(90_000).then(() => undefined)]);
    expect(exit, `QEMU still running 90 s after system_powerdown; console tail:\n${consoleText().split('\n').slice(-20).join('\n')}`).toBeDefined();
    timeline['QEMU exited'] = exit!.at;
    expect(exit!.code).toBe(0);
    const names = qmp.events.map((e) => e.event);
    expect(names).toContain('POWERDOWN');
    const shutdown = qmp.events.find((e) => e.event === 'SHUTDOWN');
    expect(shutdown?.data).toMatchObject({ guest: true, reason: 'guest-shutdown' });
  }, 120_000);
});
