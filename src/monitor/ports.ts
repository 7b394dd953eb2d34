/**
 * Live port forwards of QEMU's user-mode network. QMP has no command for
 * them: they go through HMP (`hostfwd_add`, `hostfwd_remove`) and are read
 * back from `info usernet`, which is the truth about what QEMU forwards.
 */
import type { Forward } from './protocol.ts';

/** The id of the user-mode netdev (src/qemu/devices/registry.ts). */
export const NETDEV_ID = 'net0';

/**
 * Pure: the host forwards in HMP `info usernet` output.
 *
 *     Hub -1 (net0):
 *       Protocol[State]    FD  Source Address  Port   Dest. Address  Port RecvQ SendQ
 *       TCP[HOST_FORWARD]   9       127.0.0.1 18022       10.0.2.15    22     0     0
 */
export function parseUsernet(text: string): Forward[] {
  const out: Forward[] = [];
  for (const line of text.split(/\r?\n/)) {
    const m = /^\s*(TCP|UDP)\[HOST_FORWARD\]\s+\d+\s+(\d{1,3}(?:\.\d{1,3}){3})\s+(\d+)\s+\S+\s+(\d+)\b/.exec(line);
    if (!m) continue;
    out.push({ proto: m[1] === 'TCP' ? 'tcp' : 'udp', hostAddr: m[2]!, host: Number(m[3]), guest: Number(m[4]) });
  }
  return out.sort((a, b) => a.proto.localeCompare(b.proto) || a.host - b.host);
}
