/**
 * The command that runs the virtiofsd of one shared folder (pure): the
 * daemon that serves a host directory to one QEMU over vhost-user. It runs
 * unprivileged, as the folder's owner (GoShip as root) or GoShip's own user,
 * in a user namespace of its own where that user is root: the guest's root
 * reads and writes as the folder's owner, chown to another user fails
 * (EINVAL) and device nodes cannot be made (EPERM), whatever the guest asks.
 *
 *   setpriv --reuid=OWNER --regid=GROUP --clear-groups --   the folder's owner (only when GoShip runs as root)
 *   unshare --user --map-root-user --mount --propagation private --
 *   sh -c VIRTIOFSD_SCRIPT goship-virtiofsd SOURCE ro|rw VIRTIOFSD
 *
 * It starts in the directory of its socket (the monitor's spawn changes into
 * it while it is still root), so it needs no path through the VM's run
 * directory. QEMU 7.2's virtiofsd has no read-only option: a read-only share
 * is a read-only bind mount of the folder in the daemon's own mount
 * namespace, which nothing else sees and which goes with the daemon.
 */
import type { Identity } from './identity.ts';
import { SETPRIV, SH } from './command.ts';

/** QEMU 7.2's virtiofsd (Debian's qemu-system-common). */
export const VIRTIOFSD = '/usr/lib/qemu/virtiofsd';
export const UNSHARE = '/usr/bin/unshare';
/** Its socket, in the directory it starts in. */
export const VIRTIOFSD_SOCKET = 'sock';

/**
 * $1 the folder, $2 `ro` or `rw`, $3 virtiofsd. virtiofsd keeps a pid file
 * in /run/virtiofsd, which an unprivileged daemon cannot make: a private
 * tmpfs on /run holds it (the socket is named relative to the directory the
 * daemon started in, which the tmpfs does not hide).
 */
export const VIRTIOFSD_SCRIPT = [
  'set -eu',
  'mount -t tmpfs -o mode=0755,size=64k goship-run /run',
  'if [ "$2" = ro ]; then',
  '  mount --bind "$1" "$1"',
  '  mount -o remount,bind,ro,nosuid,nodev "$1"',
  'fi',
  `exec "$3" --socket-path=${VIRTIOFSD_SOCKET} -o source="$1" -o cache=auto`,
].join('\n');

/** Pure: the words that start the virtiofsd of `source`, as `owner` (absent: as GoShip's own user). */
export function virtiofsdCommand(o: { source: string; readOnly: boolean; owner?: Identity }): string[] {
  return [
    ...(o.owner ? [SETPRIV, `--reuid=${o.owner.uid}`, `--regid=${o.owner.gid}`, '--clear-groups', '--'] : []),
    UNSHARE,
    '--user',
    '--map-root-user',
    '--mount',
    '--propagation',
    'private',
    '--',
    SH,
    '-c',
    VIRTIOFSD_SCRIPT,
    'goship-virtiofsd',
    o.source,
    o.readOnly ? 'ro' : 'rw',
    VIRTIOFSD,
  ];
}
