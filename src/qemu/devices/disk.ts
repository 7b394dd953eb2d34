/**
 * A virtio disk as libvirt builds it: an explicit `-blockdev` graph (a `file`
 * protocol node, a `qcow2`/`raw` format node on top) and a `virtio-blk-pci`
 * device on the format node.
 *
 *   -blockdev driver=file,filename=PATH,node-name=disk0-file,read-only=off,cache.direct=off,cache.no-flush=off,discard=unmap
 *   -blockdev driver=qcow2,file=disk0-file,node-name=disk0-format,read-only=off,cache.direct=off,cache.no-flush=off,discard=unmap
 *   -device virtio-blk-pci,id=disk0,drive=disk0-format,write-cache=on
 */
import type { Issue } from '../../errors.ts';
import { qemuOpts } from '../opts.ts';
import type { DiskCache } from '../spec.ts';
import { fileExists, plainPath } from './checks.ts';
import type { DeviceContext, DiskDevice, ValidateContext } from './types.ts';

/** libvirt's cache modes in -blockdev terms (docs/system/qemu-block-drivers, "cache modes"). */
export const CACHE_MODES: Record<DiskCache, { direct: boolean; noFlush: boolean; writeCache: boolean }> = {
  writeback: { direct: false, noFlush: false, writeCache: true },
  none: { direct: true, noFlush: false, writeCache: true },
  writethrough: { direct: false, noFlush: false, writeCache: false },
  directsync: { direct: true, noFlush: false, writeCache: false },
  unsafe: { direct: false, noFlush: true, writeCache: true },
};

export function validate(part: DiskDevice, ctx: ValidateContext): Issue[] {
  const at = `${part.at}.path`;
  const issues = plainPath(part.path, at);
  return issues.length > 0 ? issues : fileExists(part.path, at, ctx.exists);
}

/** The node of a disk's format layer (qcow2, raw): what QMP's block commands name. */
export function formatNode(diskId: string): string {
  return `${diskId}-format`;
}

/** The format node of a VM's first disk (`disk0`, registry.ts): a project's root disk, whose overlay holds its snapshots and grows. */
export const FIRST_DISK_NODE = formatNode('disk0');

export function toArgs(part: DiskDevice, _ctx: DeviceContext): string[] {
  const mode = CACHE_MODES[part.cache];
  const file = `${part.id}-file`;
  const format = formatNode(part.id);
  const common = {
    'read-only': part.readOnly,
    'cache.direct': mode.direct,
    'cache.no-flush': mode.noFlush,
    discard: part.discard ? 'unmap' : 'ignore',
  };
  return [
    '-blockdev',
    qemuOpts(undefined, { driver: 'file', filename: part.path, 'node-name': file, ...common }),
    '-blockdev',
    qemuOpts(undefined, { driver: part.format, file, 'node-name': format, ...common }),
    '-device',
    qemuOpts('virtio-blk-pci', {
      id: part.id,
      drive: format,
      serial: part.serial,
      'write-cache': mode.writeCache,
      bootindex: part.bootIndex,
    }),
  ];
}
