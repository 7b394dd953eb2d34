import { describe, expect, it } from 'vitest';
import { VIRTIOFSD_SCRIPT, virtiofsdCommand } from '../../src/jail/virtiofsd.ts';
import { MOUNT_SCRIPT, mountArgv, parseMount, parseMounts } from '../../src/runtime/mounts.ts';
import type { Issue } from '../../src/errors.ts';

describe('--mount (pure)', () => {
  it('reads HOST_DIR:GUEST_DIR, with :ro or :rw', () => {
    expect(parseMount('/home/me/src:/srv/app', 'm')).toEqual({ host: '/home/me/src', guest: '/srv/app', readOnly: false });
    expect(parseMount('/data:/data:ro', 'm')).toEqual({ host: '/data', guest: '/data', readOnly: true });
    expect(parseMount('/data:/data:rw', 'm')).toEqual({ host: '/data', guest: '/data', readOnly: false });
  });

  it.each([
    ['/a', 'expected HOST_DIR:GUEST_DIR or HOST_DIR:GUEST_DIR:ro, two absolute paths without ":", "," or white space, got "/a"'],
    ['/a:/b:rx', 'expected HOST_DIR:GUEST_DIR or HOST_DIR:GUEST_DIR:ro, two absolute paths without ":", "," or white space, got "/a:/b:rx"'],
    ['a:/b', 'HOST_DIR must be an absolute path, got "a"'],
    ['/a:b', 'GUEST_DIR must be an absolute path, got "b"'],
    ['/a,b:/b', 'HOST_DIR must not contain a comma or white space, got "/a,b"'],
    ['/a:/my dir', 'GUEST_DIR must not contain a comma or white space, got "/my dir"'],
    ['/a/../etc:/b', 'HOST_DIR must be a plain path (no "..", ".", "//" or trailing "/"), got "/a/../etc"'],
    ['/a:/b/', 'GUEST_DIR must be a plain path (no "..", ".", "//" or trailing "/"), got "/b/"'],
    ['/:/b', 'HOST_DIR must not be "/"'],
    ['/run/user/1000/x:/b', 'HOST_DIR must not be under /run, got "/run/user/1000/x"'],
    ['/a:/etc', 'GUEST_DIR must not be in the guest\'s system directory /etc, got "/etc"'],
    ['/a:/var/lib/goship/apps', 'GUEST_DIR must not be in the guest\'s system directory /var/lib/goship, got "/var/lib/goship/apps"'],
  ])('refuses %j: %s', (value, message) => {
    expect(parseMount(value, '--mount[0]')).toEqual({ path: '--mount[0]', message });
  });

  it('refuses two folders on one guest directory, or one inside another, and more than 8', () => {
    const issues: Issue[] = [];
    expect(parseMounts(['/a:/srv', '/b:/srv/x', '/c:/data'], issues)).toEqual([
      { host: '/a', guest: '/srv', readOnly: false },
      { host: '/c', guest: '/data', readOnly: false },
    ]);
    expect(issues).toEqual([{ path: '--mount[1]', message: 'GUEST_DIR /srv/x overlaps /srv, which another --mount shares' }]);
    const many: Issue[] = [];
    parseMounts(Array.from({ length: 9 }, (_, i) => `/h${i}:/g${i}`), many);
    expect(many).toEqual([{ path: '--mount', message: 'at most 8 shared folders, got 9' }]);
  });

  it('mounts in the guest by a fixed script whose arguments are the tag, the directory and the options', () => {
    expect(mountArgv({ host: '/h', guest: '/srv/app', readOnly: false }, 0)).toEqual(['/bin/sh', '-c', MOUNT_SCRIPT, 'goship-mount', 'goship-0', '/srv/app', 'defaults,nofail']);
    expect(mountArgv({ host: '/h', guest: '/data', readOnly: true }, 1)).toEqual(['/bin/sh', '-c', MOUNT_SCRIPT, 'goship-mount', 'goship-1', '/data', 'ro,nofail']);
  });
});

describe('virtiofsd command (pure)', () => {
  it('as root: the folder\'s owner, in a user and mount namespace of its own, the folder and mode as arguments of a fixed script', () => {
    expect(virtiofsdCommand({ source: '/home/me/src', readOnly: true, owner: { uid: 1000, gid: 1000 } })).toEqual([
      '/usr/bin/setpriv',
      '--reuid=1000',
      '--regid=1000',
      '--clear-groups',
      '--',
      '/usr/bin/unshare',
      '--user',
      '--map-root-user',
      '--mount',
      '--propagation',
      'private',
      '--',
      '/bin/sh',
      '-c',
      VIRTIOFSD_SCRIPT,
      'goship-virtiofsd',
      '/home/me/src',
      'ro',
      '/usr/lib/qemu/virtiofsd',
    ]);
    expect(VIRTIOFSD_SCRIPT).toContain('mount -o remount,bind,ro,nosuid,nodev "$1"');
  });

  it('as a user: as that user, nothing to drop', () => {
    expect(virtiofsdCommand({ source: '/home/me/src', readOnly: false }).slice(0, 2)).toEqual(['/usr/bin/unshare', '--user']);
    expect(virtiofsdCommand({ source: '/home/me/src', readOnly: false }).slice(-3)).toEqual(['/home/me/src', 'rw', '/usr/lib/qemu/virtiofsd']);
  });
});
