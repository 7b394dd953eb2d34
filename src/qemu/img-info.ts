/**
 * Pure parsing of `qemu-img info --output=json --backing-chain`.
 */
import { QemuError } from './errors.ts';

export interface ImageLayer {
  /** File name as QEMU reports it. */
  filename: string;
  /** `qcow2`, `raw`, … */
  format: string;
  /** Guest-visible size in bytes. */
  virtualSize: number;
  /** Bytes used on the host. */
  actualSize: number | undefined;
  /** The backing file as written in the image header, if any. */
  backingFilename: string | undefined;
  backingFormat: string | undefined;
}

function asLayer(raw: unknown, source: string): ImageLayer {
  if (typeof raw !== 'object' || raw === null) {
    throw new QemuError('EQEMU_IMG', `qemu-img info: unexpected output for ${source}: not an object`);
  }
  const r = raw as Record<string, unknown>;
  if (typeof r.filename !== 'string' || typeof r.format !== 'string' || typeof r['virtual-size'] !== 'number') {
    throw new QemuError('EQEMU_IMG', `qemu-img info: unexpected output for ${source}: missing filename, format or virtual-size`);
  }
  return {
    filename: r.filename,
    format: r.format,
    virtualSize: r['virtual-size'],
    actualSize: typeof r['actual-size'] === 'number' ? r['actual-size'] : undefined,
    backingFilename: typeof r['backing-filename'] === 'string' ? r['backing-filename'] : undefined,
    backingFormat: typeof r['backing-filename-format'] === 'string' ? r['backing-filename-format'] : undefined,
  };
}

/**
 * Parses the JSON of `qemu-img info --output=json [--backing-chain]`: a single
 * object, or with `--backing-chain` an array from the top layer down to the base.
 */
export function parseImageChain(json: string, source = 'image'): ImageLayer[] {
  let raw: unknown;
  try {
    raw = JSON.parse(json);
  } catch (cause) {
    throw new QemuError('EQEMU_IMG', `qemu-img info: output for ${source} is not JSON`, { cause });
  }
  const list = Array.isArray(raw) ? raw : [raw];
  if (list.length === 0) throw new QemuError('EQEMU_IMG', `qemu-img info: empty backing chain for ${source}`);
  return list.map((l) => asLayer(l, source));
}
