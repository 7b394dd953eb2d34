/**
 * The jail: each VM's QEMU runs as an identity of its own, in a cgroup of its
 * own, with a scrubbed environment, and nothing on the host trusts what a
 * VM's files say. docs/security.md is the model; this module holds the pure
 * rules (command.ts, cgroup.ts, policy.ts, qcow2.ts, identity.ts) and the
 * thin effects around them (files.ts, cgroup-io.ts, registry.ts).
 */
export { JailError } from './errors.ts';
export { asIdentity, jailedCommand, qemuGroups, JAIL_SCRIPT, QEMU_ENV, SH, ENV, SETSID, SETPRIV, type JailCommand } from './command.ts';
export { JAIL_ID_BASE, JAIL_ID_COUNT, candidateIds, systemIds, type Identity } from './identity.ts';
export { allocateIdentity, releaseIdentity, ID_REGISTRY, RECLAIM_AFTER_MS, type IdOwner } from './registry.ts';
export {
  CONTROLLERS,
  CPU_PERIOD_US,
  QEMU_OVERHEAD_BYTES,
  TCG_BUFFER_BYTES,
  QEMU_BASE_PIDS,
  cgroupPlan,
  limitsFor,
  parseCgroupMounts,
  parseOwnCgroups,
  parseOomKills,
  type CgroupHost,
  type CgroupLimits,
  type CgroupPlan,
  type NoCgroup,
} from './cgroup.ts';
export { planCgroup, applyCgroup, removeCgroup, oomKills } from './cgroup-io.ts';
export { parseQcow2Header, QCOW2_MAGIC, EXT_BACKING_FORMAT, EXT_DATA_FILE, type Qcow2Header } from './qcow2.ts';
export { virtiofsdCommand, VIRTIOFSD, VIRTIOFSD_SCRIPT, VIRTIOFSD_SOCKET } from './virtiofsd.ts';
export { specPathIssues, chainIssue, runDirIssue, reachIssues, permits, within, type NamedPath, type OwnPlaces, type TrustedBase, type DirFacts, type PathFacts, type Who } from './policy.ts';
export { readHead, readQcow2Header, giveFile, ownDir, privateRunDir, pathChain, realOrResolved, removeVmTree, processesOf, dirFacts } from './files.ts';
