/**
 * The image catalogue: `imagesDir/NAME/` with base.qcow2, optionally vmlinuz
 * and initrd.img, and manifest.json. List, inspect, remove, import.
 *
 * Every change is a rename: an import is written to a private directory in
 * imagesDir and renamed into place; a removal renames the image away first.
 * A VM's overlay names its base by path, so removing (or rebuilding) an image
 * that overlays still use breaks those VMs: callers check first.
 */
import { copyFile, mkdir, readdir, rename, rm, stat } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { GoshipError, ValidationError } from '../errors.ts';
import { ImageError } from './errors.ts';
import type { Issue } from '../errors.ts';
import { FILES } from '../layout.ts';
import { staleWorkDirs, workDirName } from '../proc.ts';
import { MANIFEST_FORMAT, readManifest, sha256File, writeManifest } from './manifest.ts';
import type { ImageManifest } from './manifest.ts';

/** An image name: 1–63 of a-z, 0-9 and `-`, starting with a letter or digit. */
export const IMAGE_NAME_RE = /^[a-z0-9][a-z0-9-]{0,62}$/;

/** The kernel command line of an imported image booted with its own kernel, when none is given. */
export const IMPORT_DEFAULT_CMDLINE = 'root=/dev/vda1 rw console=ttyS0';

export interface ImageInfo {
  name: string;
  /** The image directory. */
  dir: string;
  /** Absolute path of base.qcow2 (the overlay's backing file). */
  base: string;
  /** Absolute path of the kernel for direct kernel boot; absent: firmware boot. */
  kernel?: string;
  /** Absolute path of the initrd. */
  initrd?: string;
  /** Kernel command line (only with a kernel). */
  cmdline?: string;
  /** base.qcow2's size on disk, measured now. */
  sizeBytes: number;
  /** base.qcow2's sha256 as recorded in the manifest (verified by `imageInfo(…, {verify: true})`). */
  sha256: string;
  manifest: ImageManifest;
}

/** One entry of listImages: a good image, or one whose manifest cannot be read. */
export type ImageEntry = ({ ok: true } & ImageInfo) | { ok: false; name: string; dir: string; error: GoshipError };

/** Checks an image name. Pure; throws ValidationError. */
export function validateImageName(name: string, path = 'name'): void {
  const issues = imageNameIssues(name, path);
  if (issues.length > 0) throw new ValidationError(issues, { subject: 'invalid image name' });
}

export function imageNameIssues(name: string, path = 'name'): Issue[] {
  if (typeof name !== 'string' || name.length === 0) return [{ path, message: 'the image name is empty' }];
  if (name.length > 63) return [{ path, message: `at most 63 characters, got ${name.length}` }];
  if (name.includes('/') || name.includes('..')) return [{ path, message: `must not contain "/" or "..", got ${JSON.stringify(name)}` }];
  if (!IMAGE_NAME_RE.test(name)) {
    return [{ path, message: `expected lowercase letters, digits and "-" (starting with a letter or digit), got ${JSON.stringify(name)}` }];
  }
  return [];
}

/** Reads one image directory into an ImageInfo. Throws ENOTFOUND when it has no manifest. */
export async function imageInfoFromDir(dir: string, name: string): Promise<ImageInfo> {
  const manifest = await readManifest(dir);
  if (!manifest) {
    throw new ImageError('ENOTFOUND', `image ${name} does not exist`, {
      hint: name === 'default' ? 'build it: goshipctl image build' : 'goshipctl image list shows the images',
    });
  }
  const base = join(dir, FILES.imageBase);
  let sizeBytes: number;
  try {
    sizeBytes = (await stat(base)).size;
  } catch (cause) {
    throw new ImageError('EIMAGE_BROKEN', `image ${name} has no ${FILES.imageBase}`, { hint: `remove it and build or import it again: goshipctl image rm ${name}`, cause });
  }
  const info: ImageInfo = { name, dir, base, sizeBytes, sha256: manifest.base.sha256, manifest };
  if (manifest.kernel) {
    info.kernel = join(dir, manifest.kernel);
    if (manifest.initrd) info.initrd = join(dir, manifest.initrd);
    if (manifest.cmdline) info.cmdline = manifest.cmdline;
  }
  return info;
}

/** The images in imagesDir, sorted by name; an unreadable one is listed with its error. */
export async function listImages(imagesDir: string): Promise<ImageEntry[]> {
  let names: string[];
  try {
    names = (await readdir(imagesDir, { withFileTypes: true })).filter((d) => d.isDirectory() && !d.name.startsWith('.')).map((d) => d.name);
  } catch (cause) {
    if ((cause as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw cause;
  }
  const entries: ImageEntry[] = [];
  for (const name of names.sort()) {
    const dir = join(imagesDir, name);
    try {
      entries.push({ ok: true, ...(await imageInfoFromDir(dir, name)) });
    } catch (error) {
      if (error instanceof GoshipError && error.code === 'ENOTFOUND') continue; // not an image directory
      entries.push({ ok: false, name, dir, error: error instanceof GoshipError ? error : new ImageError('EIMAGE_BROKEN', String(error), { cause: error }) });
    }
  }
  return entries;
}

/** One image. With `verify`, base.qcow2's sha256 is recomputed and must match the manifest. */
export async function imageInfo(imagesDir: string, name: string, opts: { verify?: boolean } = {}): Promise<ImageInfo> {
  validateImageName(name);
  const info = await imageInfoFromDir(join(imagesDir, name), name);
  if (opts.verify) {
    const actual = await sha256File(info.base);
    if (actual !== info.sha256) {
      throw new ImageError('EIMAGE_CHECKSUM', `image ${name}: ${FILES.imageBase} has sha256 ${actual}, the manifest says ${info.sha256}`, {
        hint: `the base image was changed after it was built: rebuild or re-import it`,
      });
    }
  }
  return info;
}

/** Removes an image (renamed away first, so it disappears at once). */
export async function removeImage(imagesDir: string, name: string): Promise<void> {
  await rm(await detachImage(imagesDir, name), { recursive: true, force: true });
}

/**
 * Takes an image out of the catalogue with one rename (to a private
 * `.remove-*` directory, returned): from then on nothing finds it, and the
 * caller removes the directory when it likes. Fast enough to run under the
 * store lock.
 */
export async function detachImage(imagesDir: string, name: string): Promise<string> {
  validateImageName(name);
  const dir = join(imagesDir, name);
  const trash = join(imagesDir, workDirName('remove'));
  try {
    await rename(dir, trash);
  } catch (cause) {
    if ((cause as NodeJS.ErrnoException).code === 'ENOENT') {
      throw new ImageError('ENOTFOUND', `image ${name} does not exist`, { hint: 'goshipctl image list shows the images' });
    }
    throw cause;
  }
  return trash;
}

export interface ImportOptions {
  /** A kernel for direct kernel boot; without it the image boots through firmware. */
  kernel?: string;
  /** Its initrd (needs `kernel`). */
  initrd?: string;
  /** Its command line (needs `kernel`). Default IMPORT_DEFAULT_CMDLINE. */
  cmdline?: string;
  /** Replace an existing image of that name. */
  force?: boolean;
}

interface QemuImgInfo {
  format: string;
  'virtual-size': number;
  'backing-filename'?: string;
  'full-backing-filename'?: string;
}

/** `qemu-img info --output=json`, for one file (no backing chain). */
export async function qemuImgInfo(file: string): Promise<QemuImgInfo> {
  const { execa } = await import('execa');
  const r = await execa('qemu-img', ['info', '--output=json', resolve(file)], { reject: false });
  if (r.exitCode !== 0) {
    throw new ImageError('EIMAGE_IMPORT', `qemu-img cannot read ${file}: ${r.stderr.trim() || `exit ${r.exitCode}`}`, {
      hint: 'give a qcow2 or raw disk image',
    });
  }
  return JSON.parse(r.stdout) as QemuImgInfo;
}

/**
 * Imports a user's own cloud image (qcow2 or raw, checked with qemu-img):
 * copied (never moved) into imagesDir/NAME/base.qcow2; raw is converted to
 * qcow2. The agent is not in such an image: the manifest says
 * `agentBaked: false` and cloud-init installs it at first boot.
 */
export async function importImage(imagesDir: string, name: string, file: string, opts: ImportOptions = {}): Promise<ImageInfo> {
  const issues: Issue[] = [...imageNameIssues(name)];
  const src = resolve(file);
  const fileIssue = async (path: string, value: string): Promise<void> => {
    if (value.includes('\0') || value.includes('\n')) {
      issues.push({ path, message: 'contains a NUL or newline character' });
      return;
    }
    try {
      if (!(await stat(value)).isFile()) issues.push({ path, message: `not a regular file: ${value}` });
    } catch {
      issues.push({ path, message: `no such file: ${value}` });
    }
  };
  await fileIssue('file', src);
  if (opts.kernel !== undefined) await fileIssue('kernel', resolve(opts.kernel));
  if (opts.initrd !== undefined) {
    if (opts.kernel === undefined) issues.push({ path: 'initrd', message: 'an initrd needs a kernel (--kernel)' });
    else await fileIssue('initrd', resolve(opts.initrd));
  }
  if (opts.cmdline !== undefined) {
    if (opts.kernel === undefined) issues.push({ path: 'cmdline', message: 'a kernel command line needs a kernel (--kernel)' });
    if (/[\0\n]/.test(opts.cmdline)) issues.push({ path: 'cmdline', message: 'contains a NUL or newline character' });
  }
  if (issues.length > 0) throw new ValidationError(issues, { subject: 'cannot import image' });

  const finalDir = join(imagesDir, name);
  if (!opts.force && (await readManifest(finalDir).catch(() => ({})))) {
    throw new ImageError('EEXIST', `image ${name} already exists`, { hint: `pick another name, or remove it first: goshipctl image rm ${name}` });
  }

  const info = await qemuImgInfo(src);
  if (info.format !== 'qcow2' && info.format !== 'raw') {
    throw new ImageError('EIMAGE_IMPORT', `cannot import ${file}: its format is ${info.format}, expected qcow2 or raw`, {
      hint: `convert it first: qemu-img convert -O qcow2 ${file} image.qcow2`,
    });
  }
  if (info['backing-filename']) {
    throw new ImageError('EIMAGE_IMPORT', `cannot import ${file}: it is an overlay on ${info['backing-filename']}`, {
      hint: `flatten it first: qemu-img convert -O qcow2 ${file} image.qcow2`,
    });
  }

  await mkdir(imagesDir, { recursive: true, mode: 0o700 });
  await sweepStaleImports(imagesDir);
  const work = join(imagesDir, workDirName('import'));
  const out = join(work, 'out');
  await mkdir(out, { recursive: true, mode: 0o700 });
  try {
    const base = join(out, FILES.imageBase);
    if (info.format === 'qcow2') {
      await copyFile(src, base);
    } else {
      const { execa } = await import('execa');
      const r = await execa('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', src, base], { reject: false, all: true });
      if (r.exitCode !== 0) throw new ImageError('EIMAGE_IMPORT', `qemu-img convert failed: ${(r.all ?? '').trim()}`);
    }
    if (opts.kernel !== undefined) await copyFile(resolve(opts.kernel), join(out, FILES.imageKernel));
    if (opts.initrd !== undefined) await copyFile(resolve(opts.initrd), join(out, FILES.imageInitrd));
    const manifest: ImageManifest = {
      format: MANIFEST_FORMAT,
      name,
      source: 'imported',
      builtAt: new Date().toISOString(),
      agentBaked: false,
      base: {
        file: FILES.imageBase,
        format: 'qcow2',
        sizeBytes: (await stat(base)).size,
        virtualSizeBytes: info['virtual-size'],
        sha256: await sha256File(base),
      },
      kernel: opts.kernel !== undefined ? FILES.imageKernel : null,
      initrd: opts.initrd !== undefined ? FILES.imageInitrd : null,
      cmdline: opts.kernel !== undefined ? (opts.cmdline ?? IMPORT_DEFAULT_CMDLINE) : null,
      importedFrom: src,
    };
    await writeManifest(out, manifest);
    try {
      await rename(out, finalDir);
    } catch (cause) {
      const code = (cause as NodeJS.ErrnoException).code;
      if ((code !== 'ENOTEMPTY' && code !== 'EEXIST') || !opts.force) {
        if (code === 'ENOTEMPTY' || code === 'EEXIST') {
          throw new ImageError('EEXIST', `image ${name} already exists`, { hint: `remove it first: goshipctl image rm ${name}` });
        }
        throw cause;
      }
      await rename(finalDir, join(work, 'previous'));
      await rename(out, finalDir);
    }
    return await imageInfoFromDir(finalDir, name);
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

/** Removes what killed imports and receives left (staleWorkDirs): an image's worth of disk each. */
async function sweepStaleImports(imagesDir: string): Promise<void> {
  for (const dir of await staleWorkDirs(imagesDir, 'import')) await rm(dir, { recursive: true, force: true });
}

/** The files an image directory may hold (what `receiveImage` takes from a stream). */
const IMAGE_FILES: ReadonlySet<string> = new Set(['manifest.json', FILES.imageBase, FILES.imageKernel, FILES.imageInitrd]);

/**
 * Receives an image as a tar stream of its directory (`image push` on another
 * host, through `image receive`): only the image's own file names, extracted
 * into a private directory, the disk checked against the manifest's sha256,
 * then renamed into place. Until that rename nothing is visible, so an
 * interrupted transfer leaves no image (only a private directory that the next
 * receive or build sweeps). The same image (same disk sha256) already there is
 * kept as it is.
 */
/**
 * Extracts a tar stream into `dir`, keeping only regular files named in
 * `names` (at its top level): no link, directory or other path is written.
 * Returns the names it refused.
 */
export async function extractOnly(stream: NodeJS.ReadableStream, dir: string, names: ReadonlySet<string>): Promise<string[]> {
  const refused: string[] = [];
  const { x: untar } = await import('tar');
  await new Promise<void>((res, rej) => {
    const extract = untar({
      cwd: dir,
      strict: true,
      filter: (path, entry) => {
        const file = path.replace(/^\.\//, '');
        if (file === '' || file === '.') return false;
        const ok = names.has(file) && (entry as { type?: string }).type === 'File';
        if (!ok) refused.push(file);
        return ok;
      },
    });
    extract.on('error', rej);
    extract.on('finish', () => res());
    extract.on('close', () => res());
    stream.on('error', rej);
    stream.pipe(extract as unknown as NodeJS.WritableStream);
  });
  return refused;
}

export async function receiveImage(imagesDir: string, name: string, stream: NodeJS.ReadableStream): Promise<ImageInfo & { received: boolean }> {
  validateImageName(name);
  const finalDir = join(imagesDir, name);
  await mkdir(imagesDir, { recursive: true, mode: 0o700 });
  await sweepStaleImports(imagesDir);
  const work = join(imagesDir, workDirName('import'));
  const out = join(work, 'out');
  await mkdir(out, { recursive: true, mode: 0o700 });
  try {
    const refused = await extractOnly(stream, out, IMAGE_FILES);
    if (refused.length > 0) throw new ImageError('EIMAGE_IMPORT', `cannot receive image ${name}: the stream holds files an image has not: ${refused.slice(0, 5).join(', ')}`);
    const manifest = await readManifest(out);
    if (!manifest) throw new ImageError('EIMAGE_IMPORT', `cannot receive image ${name}: the stream has no manifest.json`);
    const base = join(out, manifest.base.file);
    const sha = await sha256File(base).catch(() => undefined);
    if (sha !== manifest.base.sha256) {
      throw new ImageError('EIMAGE_CHECKSUM', `cannot receive image ${name}: its disk's sha256 is ${sha ?? 'missing'}, the manifest says ${manifest.base.sha256}`, {
        hint: 'the transfer was cut or changed on the way: push it again',
      });
    }
    const existing = await readManifest(finalDir).catch(() => undefined);
    if (existing?.base.sha256 === manifest.base.sha256) return { ...(await imageInfoFromDir(finalDir, name)), received: false };
    if (existing) throw new ImageError('EEXIST', `image ${name} already exists here, with another disk`, { hint: `remove it on this host first: goshipctl image rm ${name}` });
    await writeManifest(out, { ...manifest, name });
    await rename(out, finalDir);
    return { ...(await imageInfoFromDir(finalDir, name)), received: true };
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}
