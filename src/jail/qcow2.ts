/**
 * A qcow2 header, read by GoShip itself (pure): which file it names as its
 * backing file and its external data file. A VM's QEMU owns its overlay and
 * can rewrite these fields; GoShip reads them as plain bytes, never by
 * letting a root process (qemu-img included) open what they name, and
 * refuses what is not the catalogued image (src/jail/policy.ts).
 *
 * Layout (QEMU docs/interop/qcow2.txt), big-endian: magic `QFI\xfb` at 0,
 * version at 4, backing file offset (u64) at 8 and size (u32) at 16; version
 * 3 has the header length at 100, version 2's header is 72 bytes; header
 * extensions follow it, each {type u32, length u32, data padded to 8}, type 0
 * ends them.
 */
import { JailError } from './errors.ts';

export const QCOW2_MAGIC = 0x514649fb;
/** Header extension: the backing file's format name. */
export const EXT_BACKING_FORMAT = 0xe2792aca;
/** Header extension: an external data file's name. */
export const EXT_DATA_FILE = 0x44415441;
/** QEMU's own bound on a backing file name. */
export const BACKING_NAME_MAX = 1023;
/** How much of a file GoShip reads to find all of the above. */
export const HEADER_READ_BYTES = 64 * 1024;

export interface Qcow2Header {
  version: number;
  backingFile?: string;
  backingFormat?: string;
  dataFile?: string;
}

/** Pure: the header of a qcow2 file from its first bytes; undefined when the bytes are not qcow2 (a raw image). */
export function parseQcow2Header(buf: Buffer, file: string): Qcow2Header | undefined {
  if (buf.length < 72 || buf.readUInt32BE(0) !== QCOW2_MAGIC) return undefined;
  const bad = (why: string): JailError => new JailError(`${file}: not a qcow2 header GoShip accepts: ${why}`, { hint: 'the file was changed outside GoShip; restore it or destroy the VM' });
  const version = buf.readUInt32BE(4);
  if (version !== 2 && version !== 3) throw bad(`version ${version}`);
  const out: Qcow2Header = { version };
  const offset = buf.readBigUInt64BE(8);
  const size = buf.readUInt32BE(16);
  if (offset !== 0n && size > 0) {
    if (size > BACKING_NAME_MAX) throw bad(`a backing file name of ${size} bytes (at most ${BACKING_NAME_MAX})`);
    if (offset + BigInt(size) > BigInt(buf.length)) throw bad(`the backing file name lies beyond the first ${buf.length} bytes`);
    out.backingFile = buf.toString('utf8', Number(offset), Number(offset) + size);
  }
  const headerLength = version === 3 ? buf.readUInt32BE(100) : 72;
  if (headerLength < 72 || headerLength > buf.length) throw bad(`a header length of ${headerLength}`);
  for (let at = headerLength; ; ) {
    if (at + 8 > buf.length) throw bad('its header extensions run past the bytes read');
    const type = buf.readUInt32BE(at);
    const length = buf.readUInt32BE(at + 4);
    if (type === 0) break;
    if (at + 8 + length > buf.length) throw bad('a header extension runs past the bytes read');
    const data = buf.toString('utf8', at + 8, at + 8 + length);
    if (type === EXT_BACKING_FORMAT) out.backingFormat = data;
    if (type === EXT_DATA_FILE) out.dataFile = data;
    at += 8 + Math.ceil(length / 8) * 8;
  }
  return out;
}
