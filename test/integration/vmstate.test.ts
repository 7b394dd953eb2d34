/**
 * Saving and restoring a VM's state with real QEMUs (q35, 64 MiB, no guest
 * run): a pattern loaded into the source's RAM must be in the restored
 * QEMU's RAM, read back with pmemsave. Bad state files are refused before a
 * QEMU sees them, and a QEMU that refuses one is reported. A save of a running
 * VM that fails (onto a full file system) leaves it running.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { closeSync, existsSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, readFile, rm, stat, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { QmpClient } from '../../src/qmp/index.ts';
import { ramFileArgs } from '../../src/qemu/index.ts';
import { VmStateError, checkStateFile, restoreState, saveState, sealMemory } from '../../src/vmstate/index.ts';

const ADDR = 0x200000;
let dir: string;
let pattern: Buffer;
const running: Array<{ proc: ChildProcess; qmp?: QmpClient }> = [];

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'gsv-'));
  pattern = randomBytes(256 * 1024);
  await writeFile(join(dir, 'pattern.bin'), pattern);
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});
afterEach(async () => {
  for (const r of running.splice(0)) {
    await r.qmp?.close().catch(() => undefined);
    r.proc.kill('SIGKILL');
  }
});

async function qemu(name: string, extra: string[], fds: number[] = []): Promise<{ qmp: QmpClient; proc: ChildProcess; exited: Promise<number | null> }> {
  const sock = join(dir, `${name}.qmp`);
  await rm(sock, { force: true });
  const proc = spawn('qemu-system-x86_64', ['-machine', 'q35', '-m', '64', '-nodefaults', '-no-user-config', '-display', 'none', '-S', '-qmp', `unix:${sock},server=on,wait=off`, ...extra], {
    stdio: ['ignore', 'ignore', 'ignore', ...fds],
  });
  const entry: { proc: ChildProcess; qmp?: QmpClient } = { proc };
  running.push(entry);
  const exited = new Promise<number | null>((r) => proc.once('exit', (c) => r(c)));
  for (let i = 0; ; i++) {
    try {
      if (existsSync(sock)) {
        entry.qmp = await QmpClient.connect(sock, { timeoutMs: 5000 });
        return { qmp: entry.qmp, proc, exited };
      }
    } catch {
      // not listening yet
    }
    if (i > 500) throw new Error('QEMU did not serve QMP');
    await new Promise((r) => setTimeout(r, 20));
  }
}

async function saveOne(file: string, maxBytes = 256 * 1024 * 1024): Promise<number> {
  const src = await qemu('src', ['-device', `loader,file=${join(dir, 'pattern.bin')},addr=${ADDR},force-raw=on`]);
  const saved = await saveState(src.qmp, { socketPath: join(dir, 'out.sock'), file, maxBytes });
  expect((await src.qmp.queryStatus()).status).toBe('postmigrate');
  return saved.bytes;
}

describe('a VM state through real QEMUs', () => {
  it('restores the saved memory into a fresh QEMU', async () => {
    const file = join(dir, 'a.state');
    const bytes = await saveOne(file);
    expect((await stat(file)).size).toBe(bytes);
    expect((await readFile(file)).subarray(0, 4).toString('latin1')).toBe('QEVM');
    expect((await readdir(dir)).filter((f) => f.includes('partial') || f.endsWith('.sock'))).toEqual([]);

    const dst = await qemu('dst', ['-incoming', 'defer']);
    expect((await dst.qmp.queryStatus()).status).toBe('inmigrate');
    await restoreState(dst.qmp, { file, bytes, socketPath: join(dir, 'in.sock') });
    // Not running: QEMU waits for `cont` (the source never ran here, so QEMU calls it prelaunch).
    expect((await dst.qmp.queryStatus()).running).toBe(false);
    expect((await dst.qmp.queryMigrate()).status).toBe('completed');
    const dump = join(dir, 'dump.bin');
    await dst.qmp.execute('pmemsave', { val: ADDR, size: pattern.length, filename: dump });
    expect((await readFile(dump)).equals(pattern)).toBe(true);
  });

  it('refuses a truncated or foreign file before any QEMU sees it', async () => {
    const file = join(dir, 'b.state');
    const bytes = await saveOne(file);
    await truncate(file, bytes - 1000);
    const truncated = await checkStateFile(file, bytes).catch((e: unknown) => e);
    expect(truncated).toBeInstanceOf(VmStateError);
    expect((truncated as Error).message).toBe(`${file} is not a saved VM state GoShip can restore: it is ${bytes - 1000} bytes long, not the ${bytes} bytes that were saved (truncated)`);
    await writeFile(file, 'not a state at all');
    expect(((await checkStateFile(file).catch((e: unknown) => e)) as Error).message).toBe(
      `${file} is not a saved VM state GoShip can restore: it does not start with QEMU's migration magic QEVM (found 0x6e6f7420)`,
    );
  });

  it('reports a state QEMU refuses (truncated, its size unknown): QEMU exits, the error says why', async () => {
    const file = join(dir, 'c.state');
    const bytes = await saveOne(file);
    await truncate(file, Math.floor(bytes / 2));
    const dst = await qemu('dst', ['-incoming', 'defer']);
    const err = await restoreState(dst.qmp, { file, socketPath: join(dir, 'in.sock') }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(VmStateError);
    expect((err as Error).message).toMatch(new RegExp(`^restoring the VM's state from ${file}: `));
    expect(await dst.exited).not.toBe(0);
  });

  it('cuts a save longer than its bound and leaves no file', async () => {
    const file = join(dir, 'd.state');
    const err = await saveOne(file, 64 * 1024).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(VmStateError);
    expect((err as Error).message).toBe(`saving the VM's state to ${file}: QEMU sent more than 65536 bytes, more than the VM's memory and devices can take: cut`);
    expect((await readdir(dir)).filter((f) => f.startsWith('d.state') || f.endsWith('.sock'))).toEqual([]);
  });

  it('a save whose signal aborts is cancelled with the reason, and leaves no file', async () => {
    const src = await qemu('gone', ['-device', `loader,file=${join(dir, 'pattern.bin')},addr=${ADDR},force-raw=on`]);
    const file = join(dir, 'g.state');
    const client = new AbortController();
    const saving = saveState(src.qmp, { socketPath: join(dir, 'gone.sock'), file, maxBytes: 256 * 1024 * 1024, signal: client.signal });
    setImmediate(() => client.abort(new Error('its client went away')));
    const err = await saving.catch((e: unknown) => e);
    expect(err).toBeInstanceOf(VmStateError);
    expect((err as Error).message).toBe(`saving the VM's state to ${file}: cancelled: its client went away`);
    expect((await readdir(dir)).filter((f) => f.startsWith('g.state') || f === 'gone.sock')).toEqual([]);
    expect((await src.qmp.queryMigrate()).status ?? 'none').not.toBe('completed');
  });

  it('saving a running VM onto a full file system fails with the reason, leaves no file, and the VM runs on', async () => {
    // A file system of 256 KiB (as root: tmpfs; the state of this VM, ~1 MiB, does not fit), or, as another user, a bound QEMU's stream exceeds.
    const full = join(dir, 'full');
    await mkdir(full);
    const root = process.getuid?.() === 0;
    if (root) execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=256k,mode=0700', 'goship-test-full', full]);
    try {
      const src = await qemu('live', ['-device', `loader,file=${join(dir, 'pattern.bin')},addr=${ADDR},force-raw=on`]);
      await src.qmp.cont();
      const file = join(full, 'e.state');
      const err = await saveState(src.qmp, { socketPath: join(dir, 'live.sock'), file, maxBytes: root ? 256 * 1024 * 1024 : 64 * 1024 }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(VmStateError);
      expect((err as Error).message).toMatch(new RegExp(`^saving the VM's state to ${file}: ${root ? 'ENOSPC: no space left on device' : 'QEMU sent more than'}`));
      expect(await readdir(full)).toEqual([]);
      // QEMU resumes a VM whose migration failed: the guest was never stopped for good.
      const until = Date.now() + 10_000;
      while ((await src.qmp.queryStatus()).status !== 'running' && Date.now() < until) await new Promise((r) => setTimeout(r, 50));
      expect(await src.qmp.queryStatus()).toMatchObject({ status: 'running', running: true });
      expect((await src.qmp.queryMigrate()).status).toMatch(/^(failed|cancelled)$/);
    } finally {
      if (root) execFileSync('umount', [full]);
    }
  });
});

describe("a template's memory through real QEMUs", () => {
  it('is left out of the save, mapped privately from a sealed memfd by the clone, and the clone\'s own save carries its RAM again', async () => {
    const MiB = 1024 * 1024;
    const memory = join(dir, 'template.memory');
    const pat = ['-device', `loader,file=${join(dir, 'pattern.bin')},addr=${ADDR},force-raw=on`];
    const src = await qemu('tsrc', [...ramFileArgs({ bytes: 64 * MiB, memPath: memory, share: true }), ...pat]);
    const state = join(dir, 't.state');
    const saved = await saveState(src.qmp, { socketPath: join(dir, 't.sock'), file: state, maxBytes: 256 * MiB, ignoreShared: true });
    // The devices only: the RAM is the file (the pattern is in it).
    expect(saved.bytes).toBeLessThan(2 * MiB);
    expect((await readFile(memory)).subarray(ADDR, ADDR + pattern.length).equals(pattern)).toBe(true);
    await src.qmp.execute('quit').catch(() => undefined);

    const sealed = await sealMemory(memory, 64 * MiB, 'goship-vmstate-test');
    try {
      const clone = await qemu('tclone', [...ramFileArgs({ bytes: 64 * MiB, memPath: '/proc/self/fd/3', share: false }), '-incoming', 'defer'], [sealed.fd]);
      await restoreState(clone.qmp, { file: state, bytes: saved.bytes, socketPath: join(dir, 'tin.sock'), ignoreShared: true });
      const dump = join(dir, 'tdump.bin');
      await clone.qmp.execute('pmemsave', { val: ADDR, size: pattern.length, filename: dump });
      expect((await readFile(dump)).equals(pattern)).toBe(true);
      // Turned off again: the clone's own saves carry its RAM, as a plain QEMU restores them.
      const caps = await clone.qmp.execute<{ capability: string; state: boolean }[]>('query-migrate-capabilities');
      expect(caps.find((c) => c.capability === 'x-ignore-shared')?.state).toBe(false);
      const own = join(dir, 'town.state');
      const ownBytes = (await saveState(clone.qmp, { socketPath: join(dir, 'town.sock'), file: own, maxBytes: 256 * MiB })).bytes;
      const plain = await qemu('tplain', ['-incoming', 'defer']);
      await restoreState(plain.qmp, { file: own, bytes: ownBytes, socketPath: join(dir, 'tplain.sock') });
      await plain.qmp.execute('pmemsave', { val: ADDR, size: pattern.length, filename: dump });
      expect((await readFile(dump)).equals(pattern)).toBe(true);
    } finally {
      closeSync(sealed.fd);
    }
  });
});
