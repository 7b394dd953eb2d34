/**
 * The cloud-init seed: a read-only CD-ROM on its own virtio-scsi controller.
 *
 *   -blockdev driver=file,filename=SEED,node-name=seed-file,read-only=on
 *   -blockdev driver=raw,file=seed-file,node-name=seed-format,read-only=on
 *   -device virtio-scsi-pci,id=seed-scsi
 *   -device scsi-cd,id=seed,bus=seed-scsi.0,drive=seed-format
 *
 * Not on the board's IDE/AHCI bus: Debian's cloud kernel (the fast test guest's,
 * and Debian's genericcloud images') has no AHCI driver (`# CONFIG_SATA_AHCI
 * is not set`), so an `ide-cd` on q35 is invisible to the guest and cloud-init
 * falls back to DataSourceNone. virtio-scsi needs only virtio_scsi, sr_mod
 * and isofs, which every virtio-capable guest kernel has.
 */
import type { Issue } from '../../errors.ts';
import { qemuOpts } from '../opts.ts';
import { fileExists, plainPath } from './checks.ts';
import type { CdromDevice, DeviceContext, ValidateContext } from './types.ts';

/** The controller the seed CD-ROM sits on. */
export const CDROM_CONTROLLER = 'seed-scsi';

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
    qemuOpts('virtio-scsi-pci', { id: CDROM_CONTROLLER }),
    '-device',
    qemuOpts('scsi-cd', { id: part.id, bus: `${CDROM_CONTROLLER}.0`, drive: format }),
  ];
}
