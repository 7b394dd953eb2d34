/**
 * qemu-img: copy-on-write overlays on shared base images, and their inspection.
 * The base image is only ever opened read-only (as a backing file).
 */
import { access, constants, rm } from 'node:fs/promises';
import { QemuError } from './errors.ts';
import { qemuOpts } from './opts.ts';
import { type ImageLayer, parseImageChain } from './img-info.ts';

export const QEMU_IMG = 'qemu-img';

/** Runs qemu-img; `as`: the words that run it as another identity (`setpriv … --`), before it. */
async function runImg(args: string[], as: readonly string[] = []): Promise<string> {
  try {
    const { execa } = await import('execa');
    const argv = [...as, QEMU_IMG, ...args];
    const r = await execa(argv[0]!, argv.slice(1), { stripFinalNewline: true });
    return r.stdout;
  } catch (cause) {
    const e = cause as { code?: string; stderr?: string; shortMessage?: string };
    if (e.code === 'ENOENT') {
      throw new QemuError('EQEMU_IMG', 'qemu-img is not installed', { hint: 'install it: apt-get install qemu-utils', cause });
    }
    const why = (e.stderr ?? e.shortMessage ?? String(cause)).trim().split('\n').pop();
    throw new QemuError('EQEMU_IMG', `qemu-img ${args[0]} failed: ${why}`, { cause });
  }
}

/** The backing chain of an image, top layer first. */
export async function imageChain(path: string): Promise<ImageLayer[]> {
  return parseImageChain(await runImg(['info', '--output=json', '--backing-chain', '-U', path]), path);
}

/** Format and size of one image file, after checking it is a format GoShip accepts as a base. */
export async function inspectBase(path: string): Promise<ImageLayer> {
  try {
    await access(path, constants.R_OK);
  } catch (cause) {
    throw new QemuError('EIMAGE_MISSING', `base image not found: ${path}`, { cause });
  }
  const [top] = parseImageChain(await runImg(['info', '--output=json', '-U', path]), path);
  if (!top || (top.format !== 'qcow2' && top.format !== 'raw')) {
    throw new QemuError('EIMAGE_FORMAT', `base image ${path} is ${top?.format ?? 'unknown'}: only qcow2 and raw are supported`, {
      hint: `convert it: qemu-img convert -O qcow2 ${path} base.qcow2`,
    });
  }
  return top;
}

export interface OverlayOptions {
  /** The base image, opened read-only as the backing file. */
  base: string;
  /** The new overlay's path (must not exist). */
  path: string;
  /** Virtual size in bytes; at least the base's size. Default: the base's size. */
  sizeBytes?: number;
}

/**
 * Creates a qcow2 overlay backed by `base`: `qemu-img create -f qcow2 -b BASE -F FMT PATH [SIZE]`.
 * Returns the overlay's chain (overlay first, base last).
 */
export async function createOverlay(opts: OverlayOptions): Promise<ImageLayer[]> {
  const base = await inspectBase(opts.base);
  if (opts.sizeBytes !== undefined && opts.sizeBytes < base.virtualSize) {
    throw new QemuError(
      'EINVALID',
      `disk size ${opts.sizeBytes} bytes is smaller than the base image (${base.virtualSize} bytes): a disk can only grow`,
    );
  }
  const size = String(opts.sizeBytes ?? base.virtualSize);
  try {
    await runImg(['create', '-q', '-f', 'qcow2', '-o', 'lazy_refcounts=on', '-b', opts.base, '-F', base.format, opts.path, size]);
    return await imageChain(opts.path);
  } catch (e) {
    await rm(opts.path, { force: true });
    throw e;
  }
}

/** What `qemu-img snapshot` does to an image's internal snapshots. */
export type ImageSnapshotOp = 'create' | 'apply' | 'delete';

/**
 * Pure: the words of `qemu-img snapshot` for `op` on internal snapshot `tag`
 * of the qcow2 `file`. Its format is given, never probed: `snapshot` has no
 * `-f`, so the image is named by options (`--image-opts`, a comma doubled).
 */
export function imageSnapshotArgs(op: ImageSnapshotOp, tag: string, file: string): string[] {
  return ['snapshot', '--image-opts', op === 'create' ? '-c' : op === 'apply' ? '-a' : '-d', tag, qemuOpts(undefined, { driver: 'qcow2', 'file.filename': file })];
}

/**
 * Creates, applies (the image's content becomes the snapshot's) or deletes an
 * internal snapshot of a qcow2 no QEMU has open; `as`: run as that identity.
 */
export async function imageSnapshot(op: ImageSnapshotOp, tag: string, file: string, as: readonly string[] = []): Promise<void> {
  await runImg(imageSnapshotArgs(op, tag, file), as);
}

/** Copies the qcow2 `src` (and the layers under it down to `base`) into `out`, one layer whose backing file is `base`: what differs from `base`, nothing else. */
export async function flattenOnto(src: string, base: string, out: string): Promise<void> {
  await runImg(['convert', '-f', 'qcow2', '-O', 'qcow2', '-B', base, '-F', 'qcow2', src, out]);
}

/** Names `base` as the backing file of the qcow2 `file`, its data untouched (`rebase -u`): for a base of the same content at another path. */
export async function renameBacking(file: string, base: string): Promise<void> {
  await runImg(['rebase', '-u', '-f', 'qcow2', '-b', base, '-F', 'qcow2', file]);
}
