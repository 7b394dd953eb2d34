/**
 * A download's partial file (src/serial/partial.ts), on real files: a name
 * nobody can guess beside its destination, made exclusively and owner-only.
 * Downloads through a node used `DEST.goship-partial-PID` opened without
 * O_EXCL: a link planted at that name by another user was followed.
 */
import { lstat, mkdtemp, readFile, readlink, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PARTIAL_MARK, openPartial } from '../../src/serial/index.ts';

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'gs-partial-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('openPartial', () => {
  it('a new owner-only file under a random name beside the destination, never the PID\'s; a link at the PID\'s name is left alone', async () => {
    const dest = join(dir, 'out.bin');
    const victim = join(dir, 'victim');
    await writeFile(victim, 'keep');
    // What another user could plant for the old name.
    const planted = `${dest}${PARTIAL_MARK}${process.pid}`;
    await symlink(victim, planted);
    const a = await openPartial(dest);
    const b = await openPartial(dest);
    await a.handle.writeFile('data');
    await Promise.all([a.handle.close(), b.handle.close()]);
    expect(a.path).toMatch(new RegExp(`^${dest.replace(/[.]/g, '\\.')}\\.goship-partial-[0-9a-f]{12}$`));
    expect(a.path).not.toBe(b.path);
    expect(a.path).not.toBe(planted);
    const st = await lstat(a.path);
    expect([st.isFile(), st.mode & 0o777]).toEqual([true, 0o600]);
    expect(await readlink(planted)).toBe(victim);
    expect(await readFile(victim, 'utf8')).toBe('keep');
  });
});
