/**
 * Templates end to end through goshipctl on the real Debian image: a warm,
 * two clones restored from it with identities of their own, a clone's forwarded
 * port served at once, `--cold`, and the ways a template is not used (another
 * image build, a truncated state, a state QEMU refuses), each a boot that says why.
 */
import { randomBytes } from 'node:crypto';
import { open, readFile, stat, truncate, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { goshipctl } from '../helpers/cli.ts';
import { banner, freePort } from '../helpers/net.ts';
import { projectEnv, type ProjectEnv } from '../helpers/project-env.ts';

let env: ProjectEnv;
const g = (args: string[], timeoutMs = 400_000) => goshipctl(args, env.env, { timeoutMs });
const json = async <T>(args: string[]): Promise<T> => {
  const r = await g([...args, '--json']);
  if (r.code !== 0) throw new Error(`goshipctl ${args.join(' ')} failed (${r.code}): ${r.stderr}`);
  return JSON.parse(r.stdout) as T;
};

interface TemplateJson {
  name: string;
  dir: string;
  image: string;
  cpus: number;
  memoryBytes: number;
  stateBytes: number;
  sizeBytes: number;
}
interface CreatedJson {
  name: string;
  state: string;
  from: 'template' | 'boot';
  template?: string;
  reason?: string;
  boot: { steps: { step: string }[] };
}

async function guest(name: string, script: string): Promise<string[]> {
  const r = await g(['vm', 'exec', name, '--', 'sh', '-c', script]);
  expect(r.code).toBe(0);
  return r.stdout.trim().split('\n');
}

let tpl: TemplateJson;

beforeAll(async () => {
  env = await projectEnv('et');
  tpl = await json<TemplateJson>(['image', 'warm', '--memory', '768M']);
}, 900_000);

afterAll(async () => {
  await env?.cleanupAll();
}, 60_000);

describe('a warmed template', { timeout: 600_000 }, () => {
  it('is listed with its image, and its files are root-only where they must be', async () => {
    expect([tpl.image, tpl.cpus, tpl.memoryBytes]).toEqual(['default', 1, 768 * 1024 * 1024]);
    expect(tpl.name).toBe('default-1c-768m-10240m');
    const info = await json<{ templates: TemplateJson[] }>(['image', 'info', 'default']);
    expect(info.templates.map((t) => t.name)).toEqual([tpl.name]);
    // The state is read by the monitor only; the disk is every clone's backing file, read-only to them.
    expect(((await stat(join(tpl.dir, 'state'))).mode & 0o777).toString(8)).toBe('600');
    expect(((await stat(join(tpl.dir, 'disk.qcow2'))).mode & 0o777).toString(8)).toBe('644');
    // No VM is left of the warm.
    expect(await json<unknown[]>(['vm', 'list'])).toEqual([]);
  });

  it('serves two clones, each its own machine, and a clone serves its forwarded port at once', async () => {
    const port = await freePort();
    const a = await json<CreatedJson>(['project', 'create', 'alpha', '--memory', '768M', '--port', `${port}:22`]);
    const b = await json<CreatedJson>(['project', 'create', 'beta', '--memory', '768M']);
    expect([a.from, a.template ?? a.reason, a.state, b.from, b.template ?? b.reason]).toEqual(['template', tpl.name, 'ready', 'template', tpl.name]);
    expect(a.boot.steps.map((s) => s.step)).toEqual(['qemu', 'agent', 'identity', 'network', 'cloud-init']);
    expect(await banner(port)).toBe('SSH-2.0');
    const facts = 'hostname; cat /etc/machine-id; cat /etc/ssh/ssh_host_ed25519_key.pub | cut -d" " -f2; date +%s; head -c 16 /dev/urandom | od -An -tx1 | tr -d " "';
    const [fa, fb] = await Promise.all([guest('alpha', facts), guest('beta', facts)]);
    expect([fa[0], fb[0]]).toEqual(['alpha', 'beta']);
    for (const i of [1, 2, 4]) expect(fa[i]).not.toBe(fb[i]);
    // The clock came from the host, not from the template's save.
    for (const f of [fa, fb]) expect(Math.abs(Number(f[3]) - Date.now() / 1000)).toBeLessThan(120);
    expect(await guest('alpha', 'systemctl is-active network-online.target; cloud-init status')).toEqual(['active', 'status: done']);
    // A clone reboots as any VM does: a fresh QEMU that boots from its disk.
    await g(['project', 'stop', 'beta']);
    const again = await json<{ state: string }>(['project', 'start', 'beta', '--wait', 'agent']);
    expect(again.state).toBe('ready');
    expect(await guest('beta', 'hostname')).toEqual(['beta']);
  });

  it('is not used with --cold', async () => {
    const c = await json<CreatedJson>(['project', 'create', 'cold', '--memory', '768M', '--cold', '--wait', 'agent']);
    expect([c.from, c.reason]).toEqual(['boot', '--cold']);
    expect(c.boot.steps.map((s) => s.step)).toEqual(['qemu', 'agent']);
  });

  it('is not used once the image was built again, nor with a truncated state: the boot says why', async () => {
    const record = join(tpl.dir, 'template.json');
    const original = await readFile(record, 'utf8');
    await writeFile(record, original.replace(/"imageKey": "[0-9a-f]+"/, `"imageKey": "${'0'.repeat(64)}"`));
    const rebuilt = await json<CreatedJson>(['project', 'create', 'rebuilt', '--memory', '768M', '--wait', 'agent']);
    expect(rebuilt.from).toBe('boot');
    expect(rebuilt.reason).toMatch(new RegExp(`^template ${tpl.name} is not used: image default was built again since`));
    await writeFile(record, original);

    const state = join(tpl.dir, 'state');
    const saved = await readFile(state);
    await truncate(state, tpl.stateBytes - 4096);
    const cut = await json<CreatedJson>(['project', 'create', 'cut', '--memory', '768M', '--wait', 'agent']);
    expect(cut.from).toBe('boot');
    expect(cut.reason).toMatch(/is not a saved VM state GoShip can restore: it is \d+ bytes long, not the \d+ bytes that were saved \(truncated\)$/);
    await writeFile(state, saved, { mode: 0o600 });
  });

  it('whose state QEMU refuses is left for a boot, named in the output, and nothing of the failed restore stays', async () => {
    const state = join(tpl.dir, 'state');
    const saved = await readFile(state);
    // Same size and header, garbage inside: only QEMU can tell.
    const fh = await open(state, 'r+');
    await fh.write(randomBytes(1024 * 1024), 0, 1024 * 1024, 64 * 1024);
    await fh.close();
    const r = await json<CreatedJson>(['project', 'create', 'refused', '--memory', '768M', '--wait', 'agent']);
    expect([r.from, r.state]).toEqual(['boot', 'ready']);
    expect(r.reason).toMatch(new RegExp(`^template ${tpl.name} could not be restored: restoring the VM's state from ${state}`));
    // Booted: no identity step (cloud-init names it later in its boot), and it answers.
    expect(r.boot.steps.map((s) => s.step)).toEqual(['qemu', 'agent']);
    expect(await guest('refused', 'echo ok')).toEqual(['ok']);
    const vms = await json<{ name: string; state: string }[]>(['vm', 'list']);
    expect(vms.filter((v) => v.name === 'refused').map((v) => v.state)).toEqual(['ready']);
    await writeFile(state, saved, { mode: 0o600 });
  });
});
