/**
 * The cloud-init seed: a read-only CD-ROM on the board's own IDE/AHCI
 * controller, which both machines have even with `-nodefaults` (q35: ICH9
 * AHCI, buses ide.0–ide.5; pc: PIIX IDE, ide.0–ide.1). It sits on `ide.1`
 * on both: the secondary channel, where a CD-ROM conventionally goes on pc.
 *
 *   -blockdev driver=file,filename=SEED,node-name=seed-file,read-only=on
 *   -blockdev driver=raw,file=seed-file,node-name=seed-format,read-only=on
 *   -device ide-cd,id=seed,bus=ide.1,drive=seed-format
 */
import type { Issue } from '../../errors.ts';
import { qemuOpts } from '../opts.ts';
import { fileExists, plainPath } from './checks.ts';
import type { CdromDevice, DeviceContext, ValidateContext } from './types.ts';

export const CDROM_BUS = 'ide.1';

export function validate(part: CdromDevice, ctx: ValidateContext): Issue[] {
  const issues = plainPath(part.path, part.at);
  return issues.length > 0 ? issues : fileExists(part.path, part.at, ctx.exists);
}

export function toArgs(part: CdromDevice, _ctx: DeviceContext): string[] {
  const file = `${part.id}-file`;
  const format = `${part.id}-format`;
  return [
    '-blockdev',
    qemuOpts(undefined, { driver: 'file', filename: part.path, 'node-name': file, 'read-only': true }),
    '-blockdev',
    qemuOpts(undefined, { driver: 'raw', file, 'node-name': format, 'read-only': true }),
    '-device',
    qemuOpts('ide-cd', { id: part.id, bus: CDROM_BUS, drive: format }),
  ];
}
