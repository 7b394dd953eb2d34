/**
 * The image catalogue against real files and real qemu-img: import (qcow2,
 * raw, with a kernel), list, info (with checksum verification), remove, and
 * every refusal with its exact code and message.
 */
import { execa } from 'execa';
import { existsSync } from 'node:fs';
import { appendFile, copyFile, mkdir, mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import * as tar from 'tar';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GoshipError, ValidationError } from '../../src/errors.ts';
import { FILES } from '../../src/layout.ts';
import {
  IMPORT_DEFAULT_CMDLINE,
  imageInfo,
  importImage,
  listImages,
  receiveImage,
  removeImage,
  validateImageName,
} from '../../src/image/catalog.ts';
import { sha256File } from '../../src/image/manifest.ts';

let tmp: string;
let images: string;
let qcow: string;
let raw: string;

async function caught(p: Promise<unknown> | (() => unknown)): Promise<GoshipError> {
  try {
    await (typeof p === 'function' ? p() : p);
  } catch (err) {
    expect(err).toBeInstanceOf(GoshipError);
    return err as GoshipError;
  }
  throw new Error('expected an error');
}

beforeAll(async () => {
  tmp = await mkdtemp(join(tmpdir(), 'goship-imgcat-'));
  images = join(tmp, 'images');
  qcow = join(tmp, 'cloud.qcow2');
  raw = join(tmp, 'disk.raw');
  await execa('qemu-img', ['create', '-q', '-f', 'qcow2', qcow, '64M']);
  await execa('qemu-img', ['create', '-q', '-f', 'raw', raw, '32M']);
});

afterAll(async () => {
  await rm(tmp, { recursive: true, force: true });
});

describe('image names', () => {
  it('accepts lowercase letters, digits and dashes, 1 to 63 characters', () => {
    for (const ok of ['default', 'a', 'debian-12', '0x', 'a'.repeat(63)]) expect(() => validateImageName(ok)).not.toThrow();
  });

  it('refuses everything else, naming the field', async () => {
    const cases: Array<[string, string]> = [
      ['', 'invalid image name: name: the image name is empty'],
      ['a'.repeat(64), 'invalid image name: name: at most 63 characters, got 64'],
      ['../etc', 'invalid image name: name: must not contain "/" or "..", got "../etc"'],
      ['a/b', 'invalid image name: name: must not contain "/" or "..", got "a/b"'],
      ['Debian', 'invalid image name: name: expected lowercase letters, digits and "-" (starting with a letter or digit), got "Debian"'],
      ['-x', 'invalid image name: name: expected lowercase letters, digits and "-" (starting with a letter or digit), got "-x"'],
      ['a_b', 'invalid image name: name: expected lowercase letters, digits and "-" (starting with a letter or digit), got "a_b"'],
    ];
    for (const [name, message] of cases) {
      const err = await caught(() => validateImageName(name));
      expect(err).toBeInstanceOf(ValidationError);
      expect(err.code).toBe('EINVALID');
      expect(err.message).toBe(message);
    }
  });
});

describe('importImage', () => {
  it('copies a qcow2 (the original stays), firmware boot, agent not baked', async () => {
    const info = await importImage(images, 'cloud', qcow);
    expect(existsSync(qcow)).toBe(true);
    expect(info.base).toBe(join(images, 'cloud', FILES.imageBase));
    expect(info.kernel).toBeUndefined();
    expect(info.cmdline).toBeUndefined();
    expect(info.manifest).toMatchObject({
      name: 'cloud',
      source: 'imported',
      agentBaked: false,
      kernel: null,
      initrd: null,
      cmdline: null,
      importedFrom: qcow,
      base: { file: 'base.qcow2', format: 'qcow2', virtualSizeBytes: 64 * 1024 * 1024 },
    });
    expect(info.sha256).toBe(await sha256File(qcow));
    expect(info.sha256).toBe(await sha256File(info.base));
  });

  it('converts a raw disk to qcow2 and keeps a kernel, initrd and command line', async () => {
    const kernel = join(tmp, 'vmlinuz-x');
    const initrd = join(tmp, 'initrd-x');
    await writeFile(kernel, 'kernel');
    await writeFile(initrd, 'initrd');
    const info = await importImage(images, 'rawdisk', raw, { kernel, initrd });
    const { stdout } = await execa('qemu-img', ['info', '--output=json', info.base]);
    expect(JSON.parse(stdout)).toMatchObject({ format: 'qcow2', 'virtual-size': 32 * 1024 * 1024 });
    expect(info.kernel).toBe(join(images, 'rawdisk', FILES.imageKernel));
    expect(info.initrd).toBe(join(images, 'rawdisk', FILES.imageInitrd));
    expect(info.cmdline).toBe(IMPORT_DEFAULT_CMDLINE);
    expect(await readFile(info.kernel!, 'utf8')).toBe('kernel');
    expect(info.manifest.agentBaked).toBe(false);
  });

  it('refuses a name that exists, unless forced', async () => {
    const err = await caught(importImage(images, 'cloud', qcow));
    expect(err.code).toBe('EEXIST');
    expect(err.message).toBe('image cloud already exists');
    expect(err.hint).toBe('pick another name, or remove it first: goshipctl image rm cloud');
    const again = await importImage(images, 'cloud', qcow, { force: true, cmdline: undefined });
    expect(again.manifest.source).toBe('imported');
  });

  it('reports every input problem at once', async () => {
    const err = await caught(importImage(images, 'Bad_Name', join(tmp, 'missing.qcow2'), { initrd: join(tmp, 'x'), cmdline: 'a' }));
    expect(err).toBeInstanceOf(ValidationError);
    expect((err as ValidationError).issues.map((i) => i.path)).toEqual(['name', 'file', 'initrd', 'cmdline']);
    expect(err.message).toBe(
      `cannot import image: name: expected lowercase letters, digits and "-" (starting with a letter or digit), got "Bad_Name"; file: no such file: ${join(tmp, 'missing.qcow2')}; initrd: an initrd needs a kernel (--kernel); cmdline: a kernel command line needs a kernel (--kernel)`,
    );
  });

  it('refuses formats other than qcow2 and raw, and overlays', async () => {
    const vmdk = join(tmp, 'disk.vmdk');
    await execa('qemu-img', ['create', '-q', '-f', 'vmdk', vmdk, '16M']);
    const err = await caught(importImage(images, 'vm', vmdk));
    expect(err.code).toBe('EIMAGE_IMPORT');
    expect(err.message).toBe(`cannot import ${vmdk}: its format is vmdk, expected qcow2 or raw`);
    expect(err.hint).toBe(`convert it first: qemu-img convert -O qcow2 ${vmdk} image.qcow2`);

    const overlay = join(tmp, 'overlay.qcow2');
    await execa('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', qcow, '-F', 'qcow2', overlay]);
    const err2 = await caught(importImage(images, 'ov', overlay));
    expect(err2.code).toBe('EIMAGE_IMPORT');
    expect(err2.message).toBe(`cannot import ${overlay}: it is an overlay on ${qcow}`);
    expect(existsSync(join(images, 'vm'))).toBe(false);
    expect(existsSync(join(images, 'ov'))).toBe(false);
  });
});

describe('listImages, imageInfo, removeImage', () => {
  it('lists images by name, shows a broken one with its error, skips other directories', async () => {
    await mkdir(join(images, 'broken'), { recursive: true });
    await writeFile(join(images, 'broken', FILES.imageManifest), '{"format": 1, "name": "broken"}');
    await mkdir(join(images, 'not-an-image'), { recursive: true });
    await mkdir(join(images, '.build-1-abcd'), { recursive: true });
    const entries = await listImages(images);
    expect(entries.map((e) => [e.name, e.ok])).toEqual([
      ['broken', false],
      ['cloud', true],
      ['rawdisk', true],
    ]);
    const broken = entries[0]!;
    expect(broken.ok).toBe(false);
    if (!broken.ok) {
      expect(broken.error.code).toBe('EIMAGE_MANIFEST');
      expect(broken.error.message).toMatch(/^image manifest .*broken\/manifest\.json is invalid: source: /);
    }
    expect(await listImages(join(tmp, 'nowhere'))).toEqual([]);
  });

  it('imageInfo verifies the checksum on request', async () => {
    const info = await imageInfo(images, 'rawdisk', { verify: true });
    expect(info.sizeBytes).toBeGreaterThan(0);
    await writeFile(info.base, 'tampered');
    const err = await caught(imageInfo(images, 'rawdisk', { verify: true }));
    expect(err.code).toBe('EIMAGE_CHECKSUM');
    expect(err.message).toMatch(/^image rawdisk: base\.qcow2 has sha256 [0-9a-f]{64}, the manifest says [0-9a-f]{64}$/);
  });

  it('imageInfo of a missing image says how to get it', async () => {
    const err = await caught(imageInfo(images, 'default'));
    expect(err.code).toBe('ENOTFOUND');
    expect(err.message).toBe('image default does not exist');
    expect(err.hint).toBe('build it: goshipctl image build');
  });

  it('removes an image; removing it again is ENOTFOUND', async () => {
    await removeImage(images, 'rawdisk');
    expect(existsSync(join(images, 'rawdisk'))).toBe(false);
    const err = await caught(removeImage(images, 'rawdisk'));
    expect(err.code).toBe('ENOTFOUND');
    expect(err.message).toBe('image rawdisk does not exist');
    expect((await caught(removeImage(images, '../images'))).code).toBe('EINVALID');
  });
});

describe('receiveImage (image push from another host)', () => {
  /** A pid that was ours a moment ago and is gone now. */
  const deadPid = async (): Promise<number> => {
    const child = execa('true');
    await child;
    return child.pid!;
  };
  const streamOf = (dir: string) => tar.c({ cwd: dir }, ['manifest.json', FILES.imageBase]) as unknown as NodeJS.ReadableStream;

  it('takes an image sent as a tar stream, checksummed; the same one again is kept as it is', async () => {
    const from = join(tmp, 'from');
    const src = await importImage(from, 'sent', qcow);
    const to = join(tmp, 'to');
    const got = await receiveImage(to, 'sent', streamOf(src.dir));
    expect(got).toMatchObject({ name: 'sent', received: true, sha256: src.sha256 });
    expect(await sha256File(join(to, 'sent', FILES.imageBase))).toBe(src.sha256);
    expect((await receiveImage(to, 'sent', streamOf(src.dir))).received).toBe(false);
    expect(await readdir(to)).toEqual(['sent']);
  });

  it('refuses a disk changed on the way, and nothing of it is left', async () => {
    const bent = join(tmp, 'bent');
    await mkdir(bent, { recursive: true });
    await copyFile(join(tmp, 'from', 'sent', 'manifest.json'), join(bent, 'manifest.json'));
    await copyFile(join(tmp, 'from', 'sent', FILES.imageBase), join(bent, FILES.imageBase));
    await appendFile(join(bent, FILES.imageBase), 'x');
    const to = join(tmp, 'to-bent');
    const err = await caught(receiveImage(to, 'sent', streamOf(bent)));
    expect(err.code).toBe('EIMAGE_CHECKSUM');
    expect(err.message).toMatch(/^cannot receive image sent: its disk's sha256 is [0-9a-f]{64}, the manifest says [0-9a-f]{64}$/);
    expect(await readdir(to)).toEqual([]);
  });

  it('sweeps what a killed receive left (its process gone), and leaves a live one\'s', async () => {
    const to = join(tmp, 'to-swept');
    const stale = join(to, `.import-${await deadPid()}-ab12cd34`);
    const live = join(to, `.import-${process.pid}-00ff00ff`);
    for (const d of [stale, live]) {
      await mkdir(join(d, 'out'), { recursive: true });
      await writeFile(join(d, 'out', FILES.imageBase), 'half a disk');
    }
    await receiveImage(to, 'sent', streamOf(join(tmp, 'from', 'sent')));
    expect((await readdir(to)).sort()).toEqual([`.import-${process.pid}-00ff00ff`, 'sent']);
    await rm(live, { recursive: true });
  });
});
