/**
 * The command that runs a VM's QEMU inside its jail (pure). Every QEMU GoShip
 * starts (the first start, a reboot, a restart after a crash) runs these
 * words, so the jail has one definition:
 *
 *   sh -c JAIL_SCRIPT goship-jail CGROUP.PROCS… --      join the VM's cgroups, umask 077 (as root, before anything runs)
 *   env -i PATH=…                                        a scrubbed environment: nothing of the caller's
 *   setsid --                                            a session of its own
 *   setpriv --reuid=U --regid=G --groups=KVM|--clear-groups --no-new-privs --
 *                                                        the VM's own identity (only when GoShip runs as root)
 *   qemu-system-x86_64 …                                 the argv of `goshipctl vm args`
 *
 * Each step `exec`s the next: the PID the caller learns is QEMU's. The script
 * is a constant; paths and words come in as positional parameters.
 */

import type { Identity } from './identity.ts';

export const SH = '/bin/sh';
export const ENV = '/usr/bin/env';
/** QEMU in a session of its own. Called from a process that is not a group leader, so it does not fork. */
export const SETSID = '/usr/bin/setsid';
/** QEMU as the VM's identity: real and effective uid and gid, supplementary groups, no new privileges. */
export const SETPRIV = '/usr/bin/setpriv';
/** All of QEMU's environment. */
export const QEMU_ENV = ['PATH=/usr/sbin:/usr/bin:/sbin:/bin'] as const;

/**
 * $1… up to `--`: cgroup.procs files to write this process's PID into (it
 * becomes QEMU by exec, so QEMU is limited before its first allocation); a
 * failed write ends it with 125 before QEMU runs. Then `umask 077`: the
 * sockets and pidfile QEMU creates are its own alone.
 */
export const JAIL_SCRIPT = [
  'while [ "$#" -gt 0 ] && [ "$1" != -- ]; do',
  '  echo "$$" >"$1" || exit 125',
  '  shift',
  'done',
  'shift',
  'umask 077',
  'exec "$@"',
].join('\n');


export interface JailCommand {
  /** QEMU's argv, binary first (`buildArgv`). */
  qemuArgv: readonly string[];
  /** Absent: QEMU runs as GoShip's own user (GoShip is not root). */
  identity?: Identity;
  /** Supplementary groups to keep: the group of /dev/kvm for a KVM VM, none for TCG. */
  groups?: readonly number[];
  /** The cgroup.procs files of the VM's cgroups (none: no limit could be set). */
  cgroupProcs?: readonly string[];
}

/** Pure: the words that run the next ones as the VM's identity (none: as GoShip's own user), keeping `groups` only. */
export function asIdentity(identity: Identity | undefined, groups: readonly number[] = []): string[] {
  return identity
    ? [SETPRIV, `--reuid=${identity.uid}`, `--regid=${identity.gid}`, groups.length > 0 ? `--groups=${groups.join(',')}` : '--clear-groups', '--no-new-privs', '--']
    : [];
}

/** Pure: the words that start QEMU in its jail. */
export function jailedCommand(c: JailCommand): string[] {
  return [SH, '-c', JAIL_SCRIPT, 'goship-jail', ...(c.cgroupProcs ?? []), '--', ENV, '-i', ...QEMU_ENV, SETSID, '--', ...asIdentity(c.identity, c.groups), ...c.qemuArgv];
}

/** Pure: the supplementary groups a VM's QEMU keeps: the group of /dev/kvm when it runs under KVM, none under TCG. */
export function qemuGroups(accel: 'kvm' | 'tcg', kvmGid: number | undefined): number[] {
  return accel === 'kvm' && kvmGid !== undefined && kvmGid !== 0 ? [kvmGid] : [];
}
