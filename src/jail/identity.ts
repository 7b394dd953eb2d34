/**
 * One identity per VM (pure part). When GoShip runs as root, each VM's QEMU
 * runs as a uid and gid of its own, the same number for both:
 * `JAIL_ID_BASE + n`, n = 0 … JAIL_ID_COUNT - 1 (0x70000000 upwards: above
 * the range systemd-nspawn takes container ids from, 0x00080000–0x6FFFFFFF,
 * and below 2^31, where tools that read ids as signed numbers break). A
 * number named in /etc/passwd or /etc/group is never taken. The registry
 * (src/jail/registry.ts) hands each out once, host-wide.
 */

/** A VM's own identity: QEMU runs as it when GoShip runs as root. */
export interface Identity {
  uid: number;
  gid: number;
}

export const JAIL_ID_BASE = 0x70000000;
export const JAIL_ID_COUNT = 65536;

/** Pure: every uid and gid /etc/passwd and /etc/group name. */
export function systemIds(passwd: string, group: string): Set<number> {
  const ids = new Set<number>();
  for (const line of passwd.split('\n')) {
    const f = line.split(':');
    for (const v of [f[2], f[3]]) if (v !== undefined && /^\d+$/.test(v)) ids.add(Number(v));
  }
  for (const line of group.split('\n')) {
    const v = line.split(':')[2];
    if (v !== undefined && /^\d+$/.test(v)) ids.add(Number(v));
  }
  return ids;
}

/** Pure: the ids to try, in order: the lowest of the range first, skipping those taken. */
export function* candidateIds(taken: ReadonlySet<number>): Generator<number> {
  for (let n = 0; n < JAIL_ID_COUNT; n++) {
    const id = JAIL_ID_BASE + n;
    if (!taken.has(id)) yield id;
  }
}
