/** QEMU's unprivileged user: finding it, and what the kernel would let it open. */
import { describe, expect, it } from 'vitest';
import { findUser, permits, reachIssues } from '../../src/runtime/qemu-user.ts';

const PASSWD = 'root:x:0:0:root:/root:/bin/bash\ngoship-qemu:x:999:995::/nonexistent:/usr/sbin/nologin\n';
const GROUP = 'root:x:0:\nkvm:x:104:goship-qemu,libvirt-qemu\ngoship-qemu:x:995:\ndisk:x:6:\n';
const who = { name: 'goship-qemu', uid: 999, groups: [995, 104] };

describe('findUser', () => {
  it('finds the user, its primary group first, then the groups it is a member of', () => {
    expect(findUser(PASSWD, GROUP, 'goship-qemu')).toEqual({ name: 'goship-qemu', uid: 999, gid: 995, groups: [995, 104] });
    expect(findUser(PASSWD, GROUP, 'nobody')).toBeUndefined();
    expect(findUser('goship-qemu:x:bad:995::/:/bin/false\n', '', 'goship-qemu')).toBeUndefined();
  });
});

describe('permits', () => {
  it('owner, group, other bits, as the kernel picks them (owner first)', () => {
    expect(permits({ path: '/f', uid: 999, gid: 0, mode: 0o600 }, who, 'rw')).toBe(true);
    expect(permits({ path: '/f', uid: 0, gid: 995, mode: 0o640 }, who, 'r')).toBe(true);
    expect(permits({ path: '/f', uid: 0, gid: 995, mode: 0o640 }, who, 'rw')).toBe(false);
    expect(permits({ path: '/d', uid: 0, gid: 104, mode: 0o710 }, who, 'x')).toBe(true);
    expect(permits({ path: '/d', uid: 0, gid: 0, mode: 0o700 }, who, 'x')).toBe(false);
    expect(permits({ path: '/d', uid: 0, gid: 0, mode: 0o711 }, who, 'x')).toBe(true);
    // The owner's bits decide for the owner, even when the others' would allow more.
    expect(permits({ path: '/f', uid: 999, gid: 0, mode: 0o044 }, who, 'r')).toBe(false);
  });
});

describe('reachIssues', () => {
  const dir = (path: string, mode: number, gid = 0) => ({ path, uid: 0, gid, mode: 0o040000 | mode });
  it('names the directory that stops the user, with its mode', () => {
    const chain = [dir('/', 0o755), dir('/tmp', 0o1777), dir('/tmp/t', 0o700), { path: '/tmp/t/disk.qcow2', uid: 0, gid: 995, mode: 0o100660 }];
    expect(reachIssues(chain, who, 'rw', 'disks[0].path')).toEqual([
      { path: 'disks[0].path', message: 'goship-qemu cannot reach /tmp/t/disk.qcow2: /tmp/t is mode 0700 (0:0) and lets it not pass' },
    ]);
  });

  it('names a file it cannot open as needed, and nothing when all is well', () => {
    const ok = [dir('/', 0o755), dir('/var', 0o755), { path: '/var/k', uid: 0, gid: 0, mode: 0o100644 }];
    expect(reachIssues(ok, who, 'r', 'boot.kernel')).toEqual([]);
    expect(reachIssues(ok, who, 'rw', 'disks[1].path')).toEqual([{ path: 'disks[1].path', message: 'goship-qemu cannot read and write /var/k: mode 0644 (0:0)' }]);
  });
});
