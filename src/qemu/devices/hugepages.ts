/**
 * Guest RAM on hugetlbfs pages, allocated up front (`prealloc=on`), so a
 * shortage shows at start rather than as a stall later. `-machine
 * memory-backend=mem0` points the machine at it; `-m` stays and must match.
 *
 *   -object memory-backend-file,id=mem0,size=2147483648,mem-path=/dev/hugepages,prealloc=on
 *
 * The existence of the mount is checked; whether enough free pages exist is
 * not (that is host state at start time: QEMU fails with "unable to map
 * backing store for guest RAM").
 */
import type { Issue } from '../../errors.ts';
import { qemuOpts } from '../opts.ts';
import { formatSize, parseSize } from '../sizes.ts';
import type { DeviceContext, HugepagesDevice, ValidateContext } from './types.ts';

export function validate(part: HugepagesDevice, ctx: ValidateContext): Issue[] {
  const issues: Issue[] = [];
  if (!ctx.exists(part.memPath)) {
    issues.push({
      path: part.at,
      message: `${part.pageSize} pages need hugetlbfs mounted at ${part.memPath}, which does not exist`,
    });
  }
  const page = parseSize(part.pageSize);
  if (page.ok && part.bytes % page.bytes !== 0) {
    issues.push({
      path: 'memory',
      message: `with ${part.pageSize} hugepages, memory must be a multiple of ${part.pageSize}, got ${formatSize(part.bytes)}`,
    });
  }
  return issues;
}

export function toArgs(part: HugepagesDevice, _ctx: DeviceContext): string[] {
  return [
    '-object',
    qemuOpts('memory-backend-file', { id: part.id, size: part.bytes, 'mem-path': part.memPath, prealloc: true }),
  ];
}
