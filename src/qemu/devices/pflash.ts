/**
 * UEFI firmware (OVMF) on the machine's two flash chips, as libvirt does it:
 * a raw format node per chip, named by `-machine pflash0=…,pflash1=…`.
 * Unit 0 is the read-only code, unit 1 the VM's own writable variable store.
 *
 *   -blockdev driver=file,filename=OVMF_CODE,node-name=pflash0-file,read-only=on
 *   -blockdev driver=raw,file=pflash0-file,node-name=pflash0-format,read-only=on
 */
import type { Issue } from '../../errors.ts';
import { qemuOpts } from '../opts.ts';
import { fileExists, plainPath } from './checks.ts';
import type { DeviceContext, PflashDevice, ValidateContext } from './types.ts';

/** The format node's name, for `-machine pflashN=`. */
export function pflashNode(unit: 0 | 1): string {
  return `pflash${unit}-format`;
}

export function validate(part: PflashDevice, ctx: ValidateContext): Issue[] {
  const issues = plainPath(part.path, part.at);
  return issues.length > 0 ? issues : fileExists(part.path, part.at, ctx.exists);
}

export function toArgs(part: PflashDevice, _ctx: DeviceContext): string[] {
  const file = `pflash${part.unit}-file`;
  return [
    '-blockdev',
    qemuOpts(undefined, { driver: 'file', filename: part.path, 'node-name': file, 'read-only': part.readOnly }),
    '-blockdev',
    qemuOpts(undefined, { driver: 'raw', file, 'node-name': pflashNode(part.unit), 'read-only': part.readOnly }),
  ];
}
