import { createHash } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createOverlay, imageChain, inspectBase } from '../../src/qemu/img.ts';

const sha256 = async (p: string) => createHash('sha256').update(await readFile(p)).digest('hex');

describe('qcow2 overlays (real qemu-img)', () => {
  let dir: string;
  let base: string;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'gs-img-'));
    base = join(dir, 'base.qcow2');
    await execa('qemu-img', ['create', '-q', '-f', 'qcow2', base, '64M']);
    // Put recognisable data into the base.
    await execa('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0xaa 0 1M', base]);
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('creates an overlay that grows the virtual size and never writes the base', async () => {
    const before = await sha256(base);
    const overlay = join(dir, 'disk.qcow2');
    const chain = await createOverlay({ base, path: overlay, sizeBytes: 128 * 1024 * 1024 });
    expect(chain.map((l) => [l.filename, l.format, l.virtualSize])).toEqual([
      [overlay, 'qcow2', 128 * 1024 * 1024],
      [base, 'qcow2', 64 * 1024 * 1024],
    ]);
    expect(chain[0]!.backingFilename).toBe(base);
    // Write through the overlay, then read: the base's pattern below, the new one on top.
    await execa('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x55 0 64k', overlay]);
    await execa('qemu-io', ['-f', 'qcow2', '-c', 'read -P 0x55 0 64k', '-c', 'read -P 0xaa 64k 64k', overlay]);
    expect(await sha256(base)).toBe(before);
    expect((await imageChain(overlay)).length).toBe(2);
  });

  it('refuses to shrink below the base', async () => {
    await expect(createOverlay({ base, path: join(dir, 'small.qcow2'), sizeBytes: 1024 * 1024 })).rejects.toThrow(
      'disk size 1048576 bytes is smaller than the base image (67108864 bytes): a disk can only grow',
    );
  });

  it('refuses a missing base and a base that is neither qcow2 nor raw', async () => {
    await expect(inspectBase(join(dir, 'nope.qcow2'))).rejects.toMatchObject({ code: 'EIMAGE_MISSING' });
    const vdi = join(dir, 'x.vdi');
    await execa('qemu-img', ['create', '-q', '-f', 'vdi', vdi, '16M']);
    await expect(inspectBase(vdi)).rejects.toMatchObject({
      code: 'EIMAGE_FORMAT',
      message: `base image ${vdi} is vdi: only qcow2 and raw are supported`,
    });
    await writeFile(join(dir, 'raw.img'), Buffer.alloc(1024 * 1024));
    expect((await inspectBase(join(dir, 'raw.img'))).format).toBe('raw');
  });
});
