/**
 * A shared folder (virtio-fs): a vhost-user-fs device on the unix socket of
 * a virtiofsd, which the VM's monitor starts beside each QEMU (one daemon
 * serves one QEMU, and exits with it). QEMU connects as a client: the socket
 * must exist before QEMU starts. The guest mounts the folder by its tag.
 *
 *   -chardev socket,id=fs0,path=RUN/fs-TAG/sock
 *   -device vhost-user-fs-pci,id=fs0-dev,chardev=fs0,tag=TAG
 *
 * The daemon reads and writes the guest's memory: the VM's memory must be
 * shared (shared-memory.ts). QEMU does not check it: without it the guest
 * mounts the folder and its first read hangs forever.
 */
import type { Issue } from '../../errors.ts';
import { qemuOpts } from '../opts.ts';
import { plainPath, socketPath } from './checks.ts';
import type { DeviceContext, FilesystemDevice, ValidateContext } from './types.ts';

export function validate(part: FilesystemDevice, ctx: ValidateContext): Issue[] {
  const issues = [...socketPath(part.socket, `${part.at}.socket`), ...plainPath(part.source, `${part.at}.source`)];
  // virtiofsd's options are comma-separated (`-o source=…`): a comma in the path would cut it.
  if (part.source.includes(',')) issues.push({ path: `${part.at}.source`, message: `virtiofsd cannot take a path with a comma: ${part.source}` });
  else if (!ctx.exists(part.source)) issues.push({ path: `${part.at}.source`, message: `directory does not exist: ${part.source}` });
  return issues;
}

export function toArgs(part: FilesystemDevice, _ctx: DeviceContext): string[] {
  return ['-chardev', qemuOpts('socket', { id: part.id, path: part.socket }), '-device', qemuOpts('vhost-user-fs-pci', { id: `${part.id}-dev`, chardev: part.id, tag: part.tag })];
}
