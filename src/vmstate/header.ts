/**
 * The first bytes of a saved VM state (pure). A state is QEMU's migration
 * stream as QEMU wrote it: magic `QEVM`, then the stream version, 3 since
 * QEMU 0.14 (migration/savevm.c, QEMU_VM_FILE_MAGIC and QEMU_VM_FILE_VERSION).
 * GoShip reads them before it starts a QEMU on a state, so that a file that is
 * not one is refused with its reason, not by a QEMU that exits half-way.
 */
export const STATE_MAGIC = 0x5145564d;
export const STATE_VERSION = 3;
/** What a state file starts with: the magic and the version. */
export const STATE_HEADER_BYTES = 8;

/** Pure: why the first bytes of `file` are not a QEMU state, or undefined when they are. */
export function stateHeaderIssue(head: Buffer): string | undefined {
  if (head.length < STATE_HEADER_BYTES) return `it is ${head.length === 0 ? 'empty' : `${head.length} bytes long`}, shorter than a state's header`;
  const magic = head.readUInt32BE(0);
  if (magic !== STATE_MAGIC) return `it does not start with QEMU's migration magic QEVM (found 0x${magic.toString(16).padStart(8, '0')})`;
  const version = head.readUInt32BE(4);
  if (version !== STATE_VERSION) return `its stream version is ${version}, not ${STATE_VERSION}`;
  return undefined;
}
