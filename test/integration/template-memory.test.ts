/**
 * A template's memory (src/vmstate/memory.ts) with real files, a real memfd
 * sealed by the real Perl, real processes holding it, and another uid trying
 * to change it: the copy keeps the contents and leaves zero pages as holes;
 * the memfd has the file's contents and refuses every write, through any
 * descriptor; a clone's monitor takes a live holder's memfd only when its
 * inode is the recorded one.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { closeSync, fstatSync, readFileSync } from 'node:fs';
import { mkdir, mkdtemp, open, readdir, readFile, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { copyMemoryFile, holdMemory, sealMemory } from '../../src/vmstate/index.ts';

const MiB = 1024 * 1024;
const BYTES = 64 * MiB;
let root: string;
let src: string;
const children: ChildProcess[] = [];

/** A sparse "guest memory" file: three pages of data, one allocated zero page, holes elsewhere. */
async function guestMemory(path: string): Promise<void> {
  const f = await open(path, 'wx', 0o600);
  await f.truncate(BYTES);
  await f.write(Buffer.alloc(4096, 0xa1), 0, 4096, 0);
  await f.write(Buffer.alloc(4096, 0), 0, 4096, 8 * MiB);
  await f.write(Buffer.alloc(8192, 0x5c), 0, 8192, 40 * MiB + 4096);
  await f.write(Buffer.from('the last page'), 0, 13, BYTES - 4096);
  await f.close();
}
const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');
const fdContents = (fd: number): Buffer => readFileSync(`/proc/self/fd/${fd}`);

beforeEach(async () => {
  root = await mkdtemp(join(tmpdir(), 'gmem-'));
  src = join(root, 'memory');
  await guestMemory(src);
});
afterEach(async () => {
  for (const c of children.splice(0)) c.kill('SIGKILL');
  await rm(root, { recursive: true, force: true });
});

describe('copying a memory file', () => {
  it('keeps every byte and leaves zero pages as holes, in a new owner-only file', async () => {
    const dest = join(root, 'copy');
    await copyMemoryFile(src, dest, BYTES);
    expect(sha(await readFile(dest))).toBe(sha(await readFile(src)));
    const st = await stat(dest);
    expect([st.size, (st.mode & 0o777).toString(8)]).toEqual([BYTES, '600']);
    // Four pages of data: the zero page and the holes take no blocks.
    expect(st.blocks * 512).toBe(4 * 4096);
  });

  it('refuses a link, a file of another size, and a destination that exists', async () => {
    await symlink(src, join(root, 'link'));
    await expect(copyMemoryFile(join(root, 'link'), join(root, 'a'), BYTES)).rejects.toThrow(/link: Too many levels of symbolic links/);
    await expect(copyMemoryFile(src, join(root, 'b'), BYTES - 4096)).rejects.toThrow(`memory: ${BYTES} bytes, not the ${BYTES - 4096} of the guest's memory`);
    await writeFile(join(root, 'c'), 'mine');
    await expect(copyMemoryFile(src, join(root, 'c'), BYTES)).rejects.toThrow(/c: File exists/);
    expect(await readFile(join(root, 'c'), 'utf8')).toBe('mine');
  });
});

describe('a sealed memfd', () => {
  it("has the file's contents, and neither this process nor another uid can change it through any descriptor", async () => {
    const m = await sealMemory(src, BYTES, 'goship-test');
    try {
      expect(m.bytes).toBe(BYTES);
      expect(sha(fdContents(m.fd))).toBe(sha(await readFile(src)));
      // As QEMU would: another uid, the memfd as its descriptor 3, opened again read-write through /proc.
      const probe = `
        const fs = require('node:fs');
        const tries = {
          inherited: () => fs.writeSync(3, 'x', 0),
          reopened: () => { const f = fs.openSync('/proc/self/fd/3', 'r+'); fs.writeSync(f, 'x', 0); },
          truncate: () => fs.ftruncateSync(fs.openSync('/proc/self/fd/3', 'r+'), 0),
          grow: () => fs.ftruncateSync(fs.openSync('/proc/self/fd/3', 'r+'), ${BYTES * 2}),
        };
        const out = {};
        for (const [k, f] of Object.entries(tries)) { try { f(); out[k] = 'done'; } catch (e) { out[k] = e.code; } }
        process.stdout.write(JSON.stringify(out));`;
      const asOther = process.getuid?.() === 0 ? { uid: 65534, gid: 65534 } : {};
      const said = await new Promise<string>((resolve, reject) => {
        const c = spawn(process.execPath, ['-e', probe], { ...asOther, stdio: ['ignore', 'pipe', 'inherit', m.fd] });
        let out = '';
        c.stdout!.on('data', (b: Buffer) => (out += b.toString()));
        c.once('error', reject);
        c.once('close', () => resolve(out));
      });
      expect(JSON.parse(said)).toEqual({ inherited: 'EBADF', reopened: 'EPERM', truncate: 'EPERM', grow: 'EPERM' });
      expect(sha(fdContents(m.fd))).toBe(sha(await readFile(src)));
    } finally {
      closeSync(m.fd);
    }
  });

  it('is not made from a link or a file of another size', async () => {
    await symlink(src, join(root, 'link'));
    await expect(sealMemory(join(root, 'link'), BYTES, 'goship-test')).rejects.toThrow(/Too many levels of symbolic links/);
    await expect(sealMemory(src, 2 * BYTES, 'goship-test')).rejects.toThrow(`${BYTES} bytes, not the ${2 * BYTES}`);
  });
});

/** A process that holds `fd` as its descriptor 3, as a clone's monitor holds its memfd. */
function holder(fd: number): ChildProcess {
  const c = spawn('sleep', ['600'], { stdio: ['ignore', 'ignore', 'ignore', fd] });
  children.push(c);
  return c;
}

/** A sealed memfd held by another process, recorded in `registry` as a clone's monitor records it. */
async function liveHolder(registry: string): Promise<{ first: Awaited<ReturnType<typeof sealMemory>>; h: ChildProcess }> {
  const first = await sealMemory(src, BYTES, 'goship-test');
  const h = holder(first.fd);
  await mkdir(registry, { recursive: true, mode: 0o700 });
  await writeFile(join(registry, `${h.pid}.json`), JSON.stringify({ pid: h.pid, fd: 3, dev: first.dev, ino: first.ino, bytes: BYTES }));
  return { first, h };
}

describe('holding a template memory for a clone', () => {
  it("takes a live holder's memfd when its inode is the recorded one, else seals one from the file and records itself", async () => {
    const registry = join(root, 'run', '.memory', 'default-1c-64m-10240m.abc');
    const { first, h } = await liveHolder(registry);
    const taken = await holdMemory({ registry, file: src, bytes: BYTES, name: 'goship-test' });
    expect([taken.from, taken.ino, taken.dev]).toEqual(['holder', first.ino, first.dev]);
    // This process is a holder now, recorded for the next clone; released, it is not.
    const mine = JSON.parse(await readFile(join(registry, `${process.pid}.json`), 'utf8')) as { fd: number; ino: number };
    expect([mine.ino, fstatSync(mine.fd).ino]).toEqual([first.ino, first.ino]);
    await taken.release();
    expect((await readdir(registry)).sort()).toEqual([`${h.pid}.json`]);

    // A holder whose descriptor is not the recorded inode (another memfd, a reused PID) is passed over.
    await writeFile(join(registry, `${h.pid}.json`), JSON.stringify({ pid: h.pid, fd: 3, dev: first.dev, ino: first.ino + 1, bytes: BYTES }));
    const sealed = await holdMemory({ registry, file: src, bytes: BYTES, name: 'goship-test' });
    expect(sealed.from).toBe('file');
    expect(sealed.ino).not.toBe(first.ino);
    expect(sha(fdContents(sealed.fd))).toBe(sha(await readFile(src)));
    await sealed.release();

    // A holder that is gone leaves an entry that goes.
    h.kill('SIGKILL');
    await new Promise((r) => h.once('exit', r));
    await writeFile(join(registry, `${h.pid}.json`), JSON.stringify({ pid: h.pid, fd: 3, dev: first.dev, ino: first.ino, bytes: BYTES }));
    closeSync(first.fd);
    const fresh = await holdMemory({ registry, file: src, bytes: BYTES, name: 'goship-test' });
    expect(fresh.from).toBe('file');
    expect(await readdir(registry)).toEqual([`${process.pid}.json`]);
    await fresh.release();
  });

  it('with private memory, neither takes from a holder nor records itself', async () => {
    const registry = join(root, 'run', '.memory', 'k');
    const { first, h } = await liveHolder(registry);
    const own = await holdMemory({ registry, file: src, bytes: BYTES, name: 'goship-test', private: true });
    expect(own.from).toBe('file');
    expect(own.ino).not.toBe(first.ino);
    expect(await readdir(registry)).toEqual([`${h.pid}.json`]);
    await own.release();
    closeSync(first.fd);
  });
});
