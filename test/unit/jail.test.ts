/**
 * The jail's pure rules (src/jail): the command that starts QEMU, the cgroup
 * plan for v1 and v2, the limits, the qcow2 header reader, which paths a
 * spec may name, which backing chain an overlay may have, which run
 * directory may be used, what a VM's identity can reach, and which ids it
 * may get.
 */
import { describe, expect, it } from 'vitest';
import {
  JAIL_ID_BASE,
  JAIL_SCRIPT,
  candidateIds,
  cgroupPlan,
  chainIssue,
  jailedCommand,
  limitsFor,
  parseCgroupMounts,
  parseOomKills,
  parseOwnCgroups,
  parseQcow2Header,
  permits,
  qemuGroups,
  reachIssues,
  runDirIssue,
  specPathIssues,
  systemIds,
  type CgroupLimits,
} from '../../src/jail/index.ts';

const QEMU = ['/usr/bin/qemu-system-x86_64', '-name', 'guest=web,process=goship-web', '-S'];
const JAIL_HEAD = ['/bin/sh', '-c', JAIL_SCRIPT, 'goship-jail'];
const SCRUB = ['/usr/bin/env', '-i', 'PATH=/usr/sbin:/usr/bin:/sbin:/bin', '/usr/bin/setsid', '--'];

describe('jailedCommand', () => {
  it('as root, a TCG VM: its cgroups, a scrubbed environment, its own session, its identity with no supplementary group', () => {
    const procs = ['/sys/fs/cgroup/memory/goship/web/cgroup.procs', '/sys/fs/cgroup/pids/goship/web/cgroup.procs'];
    expect(jailedCommand({ qemuArgv: QEMU, identity: { uid: 1879048192, gid: 1879048192 }, groups: qemuGroups('tcg', 993), cgroupProcs: procs })).toEqual([
      ...JAIL_HEAD,
      ...procs,
      '--',
      ...SCRUB,
      '/usr/bin/setpriv',
      '--reuid=1879048192',
      '--regid=1879048192',
      '--clear-groups',
      '--no-new-privs',
      '--',
      ...QEMU,
    ]);
  });

  it('as root, a KVM VM keeps the group of /dev/kvm, and only it', () => {
    expect(jailedCommand({ qemuArgv: QEMU, identity: { uid: 1879048193, gid: 1879048193 }, groups: qemuGroups('kvm', 993) })).toEqual([
      ...JAIL_HEAD,
      '--',
      ...SCRUB,
      '/usr/bin/setpriv',
      '--reuid=1879048193',
      '--regid=1879048193',
      '--groups=993',
      '--no-new-privs',
      '--',
      ...QEMU,
    ]);
  });

  it('not root: no identity to take, the rest the same', () => {
    expect(jailedCommand({ qemuArgv: QEMU })).toEqual([...JAIL_HEAD, '--', ...SCRUB, ...QEMU]);
  });

  it('qemuGroups: the kvm group only under KVM, never root\'s group, nothing when /dev/kvm is missing', () => {
    expect(qemuGroups('kvm', 993)).toEqual([993]);
    expect(qemuGroups('tcg', 993)).toEqual([]);
    expect(qemuGroups('kvm', 0)).toEqual([]);
    expect(qemuGroups('kvm', undefined)).toEqual([]);
  });
});

// This project's test host: systemd's hybrid hierarchy, v1 controllers, an empty v2 `unified`.
const MOUNTINFO_V1 = [
  '30 22 0:27 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755',
  '31 30 0:28 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu',
  '34 30 0:31 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory',
  '38 30 0:35 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids',
  '39 30 0:36 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd',
  '40 30 0:37 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw',
].join('\n');
// Debian 11+, Fedora, Ubuntu 22.04: the unified hierarchy alone.
const MOUNTINFO_V2 = '35 24 0:30 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot';
// Older distributions mount cpu and cpuacct together.
const MOUNTINFO_CPUACCT = [
  '26 25 0:23 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid shared:8 - cgroup cgroup rw,cpu,cpuacct',
  '27 25 0:24 / /sys/fs/cgroup/memory rw,nosuid shared:9 - cgroup cgroup rw,memory',
  '28 25 0:25 / /sys/fs/cgroup/pids rw,nosuid shared:10 - cgroup cgroup rw,pids',
].join('\n');

describe('cgroup hierarchies', () => {
  it('parseCgroupMounts: v1 where the memory controller is a v1 hierarchy; v2 alone; combined controllers; none', () => {
    expect(parseCgroupMounts(MOUNTINFO_V1)).toEqual({ version: 1, mounts: { cpu: '/sys/fs/cgroup/cpu', memory: '/sys/fs/cgroup/memory', pids: '/sys/fs/cgroup/pids' } });
    expect(parseCgroupMounts(MOUNTINFO_V2)).toEqual({ version: 2, mount: '/sys/fs/cgroup' });
    expect(parseCgroupMounts(MOUNTINFO_CPUACCT)).toEqual({ version: 1, mounts: { cpu: '/sys/fs/cgroup/cpu,cpuacct', memory: '/sys/fs/cgroup/memory', pids: '/sys/fs/cgroup/pids' } });
    expect(parseCgroupMounts('22 1 8:1 / / rw - ext4 /dev/sda1 rw')).toEqual({ version: 0 });
  });

  it('parseOwnCgroups: each controller\'s path, and the unified one', () => {
    const text = '9:name=systemd:/\n8:pids:/\n4:memory:/process_api/52a5\n1:cpu,cpuacct:/user.slice\n0::/\n';
    expect(parseOwnCgroups(text)).toEqual({ pids: '/', memory: '/process_api/52a5', cpu: '/user.slice', v2: '/' });
  });
});

describe('limitsFor', () => {
  const GiB = 1024 ** 3;
  const MiB = 1024 ** 2;
  it('defaults: the weight of vCPUs + 1 tasks, guest memory + 256 MiB (+ the 256 MiB translation buffer and 256 MiB per vCPU under TCG), vCPUs + 1 host CPUs, 128 + vCPUs tasks', () => {
    expect(limitsFor({ memoryBytes: GiB, vcpus: 2, accel: 'tcg' })).toEqual({ cpuWeight: 3, memoryBytes: 2 * GiB, cpuQuotaUs: 300_000, cpuPeriodUs: 100_000, pids: 130 });
    expect(limitsFor({ memoryBytes: GiB, vcpus: 1, accel: 'kvm' })).toEqual({ cpuWeight: 2, memoryBytes: GiB + 256 * MiB, cpuQuotaUs: 200_000, cpuPeriodUs: 100_000, pids: 129 });
  });
  it('the spec\'s limits win', () => {
    expect(limitsFor({ memoryBytes: GiB, vcpus: 4, accel: 'tcg', limits: { cpus: 0.5, memoryOverheadBytes: 64 * MiB, pids: 64 } })).toEqual({
      cpuWeight: 5,
      memoryBytes: GiB + 64 * MiB,
      cpuQuotaUs: 50_000,
      cpuPeriodUs: 100_000,
      pids: 64,
    });
  });
});

describe('cgroupPlan', () => {
  const limits: CgroupLimits = { cpuWeight: 2, memoryBytes: 1610612736, cpuQuotaUs: 200_000, cpuPeriodUs: 100_000, pids: 129 };
  const v1 = parseCgroupMounts(MOUNTINFO_V1);
  const v2 = parseCgroupMounts(MOUNTINFO_V2);

  it('v1 as root: goship/VMID below the starter\'s own cgroup of each controller', () => {
    expect(cgroupPlan({ host: v1, own: { memory: '/process_api/52a5', cpu: '/', pids: '/' }, vmId: 'web', limits, root: true, hostCpus: 2 })).toEqual({
      version: 1,
      dirs: ['/sys/fs/cgroup/memory/process_api/52a5/goship', '/sys/fs/cgroup/memory/process_api/52a5/goship/web', '/sys/fs/cgroup/cpu/goship', '/sys/fs/cgroup/cpu/goship/web', '/sys/fs/cgroup/pids/goship', '/sys/fs/cgroup/pids/goship/web'],
      vmDirs: ['/sys/fs/cgroup/memory/process_api/52a5/goship/web', '/sys/fs/cgroup/cpu/goship/web', '/sys/fs/cgroup/pids/goship/web'],
      writes: [
        { path: '/sys/fs/cgroup/cpu/goship/cpu.shares', value: '2048' },
        { path: '/sys/fs/cgroup/memory/process_api/52a5/goship/web/memory.limit_in_bytes', value: '1610612736' },
        { path: '/sys/fs/cgroup/cpu/goship/web/cpu.shares', value: '2048' },
        { path: '/sys/fs/cgroup/cpu/goship/web/cpu.cfs_period_us', value: '100000' },
        { path: '/sys/fs/cgroup/cpu/goship/web/cpu.cfs_quota_us', value: '200000' },
        { path: '/sys/fs/cgroup/pids/goship/web/pids.max', value: '129' },
      ],
      procs: ['/sys/fs/cgroup/memory/process_api/52a5/goship/web/cgroup.procs', '/sys/fs/cgroup/cpu/goship/web/cgroup.procs', '/sys/fs/cgroup/pids/goship/web/cgroup.procs'],
      limits,
    });
  });

  it('v2 as root: goship/VMID at the top, the controllers enabled on the way', () => {
    expect(cgroupPlan({ host: v2, own: { v2: '/user.slice/session-1.scope' }, vmId: 'web', limits, root: true, hostCpus: 2 })).toEqual({
      version: 2,
      dirs: ['/sys/fs/cgroup/goship', '/sys/fs/cgroup/goship/web'],
      vmDirs: ['/sys/fs/cgroup/goship/web'],
      writes: [
        { path: '/sys/fs/cgroup/cgroup.subtree_control', value: '+memory +cpu +pids' },
        { path: '/sys/fs/cgroup/goship/cgroup.subtree_control', value: '+memory +cpu +pids' },
        { path: '/sys/fs/cgroup/goship/cpu.weight', value: '200' },
        { path: '/sys/fs/cgroup/goship/web/memory.max', value: '1610612736' },
        { path: '/sys/fs/cgroup/goship/web/cpu.weight', value: '200' },
        { path: '/sys/fs/cgroup/goship/web/cpu.max', value: '200000 100000' },
        { path: '/sys/fs/cgroup/goship/web/pids.max', value: '129' },
      ],
      procs: ['/sys/fs/cgroup/goship/web/cgroup.procs'],
      limits,
    });
  });

  it('v2 as a user: below the cgroup systemd delegated, or no limit and why', () => {
    const delegated = '/sys/fs/cgroup/user.slice/user-1000.slice/user@1000.service';
    const plan = cgroupPlan({ host: v2, own: {}, vmId: 'web', limits, root: false, delegated, hostCpus: 4 });
    expect(plan).toMatchObject({ version: 2, vmDirs: [`${delegated}/goship/web`], procs: [`${delegated}/goship/web/cgroup.procs`] });
    expect(plan.version === 2 && plan.writes[0]).toEqual({ path: `${delegated}/cgroup.subtree_control`, value: '+memory +cpu +pids' });
    // GoShip's parent weighs as the host's 4 CPUs (400), the VM by its own weight (200).
    expect(plan.version === 2 && plan.writes.filter((w) => w.path.endsWith('cpu.weight'))).toEqual([
      { path: `${delegated}/goship/cpu.weight`, value: '400' },
      { path: `${delegated}/goship/web/cpu.weight`, value: '200' },
    ]);
    expect(cgroupPlan({ host: v2, own: {}, vmId: 'web', limits, root: false, hostCpus: 4 })).toEqual({ version: 0, reason: 'GoShip does not run as root and systemd delegated no cgroup to this user' });
  });

  it('v1 as a user, a host without a controller, a host without cgroups: no limit, and why', () => {
    expect(cgroupPlan({ host: v1, own: {}, vmId: 'web', limits, root: false, hostCpus: 4 })).toEqual({ version: 0, reason: 'cgroup v1 cannot be delegated to a user: run GoShip as root for limits' });
    expect(cgroupPlan({ host: { version: 1, mounts: { memory: '/m' } }, own: {}, vmId: 'web', limits, root: true, hostCpus: 2 })).toEqual({ version: 0, reason: 'the host mounts no cgroup v1 cpu, pids controller' });
    expect(cgroupPlan({ host: { version: 0 }, own: {}, vmId: 'web', limits, root: true, hostCpus: 2 })).toEqual({ version: 0, reason: 'the host mounts no cgroup hierarchy' });
  });

  it('parseOomKills: v1 memory.oom_control and v2 memory.events', () => {
    expect(parseOomKills('oom_kill_disable 0\nunder_oom 0\noom_kill 2\n')).toBe(2);
    expect(parseOomKills('low 0\nhigh 0\nmax 14\noom 1\noom_kill 1\noom_group_kill 0\n')).toBe(1);
    expect(parseOomKills('oom_kill_disable 0\nunder_oom 0\n')).toBe(0);
  });
});

/** A qcow2 header as QEMU writes it: version 3, 104 bytes, extensions after it. */
function qcow2(o: { version?: number; backing?: string; extensions?: Array<[number, string]> } = {}): Buffer {
  const version = o.version ?? 3;
  const headerLength = version === 3 ? 104 : 72;
  const buf = Buffer.alloc(4096);
  buf.writeUInt32BE(0x514649fb, 0);
  buf.writeUInt32BE(version, 4);
  if (version === 3) buf.writeUInt32BE(headerLength, 100);
  let at = headerLength;
  for (const [type, data] of o.extensions ?? []) {
    buf.writeUInt32BE(type, at);
    buf.writeUInt32BE(Buffer.byteLength(data), at + 4);
    buf.write(data, at + 8);
    at += 8 + Math.ceil(Buffer.byteLength(data) / 8) * 8;
  }
  at += 8; // the end extension (type 0)
  if (o.backing !== undefined) {
    buf.writeBigUInt64BE(BigInt(at), 8);
    buf.writeUInt32BE(Buffer.byteLength(o.backing), 16);
    buf.write(o.backing, at);
  }
  return buf;
}

describe('parseQcow2Header', () => {
  it('reads the backing file and its format, an external data file, version 2 too', () => {
    expect(parseQcow2Header(qcow2({ backing: '/var/lib/goship/images/default/base.qcow2', extensions: [[0xe2792aca, 'qcow2']] }), 'o')).toEqual({
      version: 3,
      backingFile: '/var/lib/goship/images/default/base.qcow2',
      backingFormat: 'qcow2',
    });
    expect(parseQcow2Header(qcow2({ extensions: [[0x44415441, '/etc/shadow']] }), 'o')).toEqual({ version: 3, dataFile: '/etc/shadow' });
    expect(parseQcow2Header(qcow2({ version: 2, backing: '/b' }), 'o')).toEqual({ version: 2, backingFile: '/b' });
    expect(parseQcow2Header(qcow2(), 'o')).toEqual({ version: 3 });
  });

  it('not qcow2 (raw bytes): undefined; a header that lies: refused with the file named', () => {
    expect(parseQcow2Header(Buffer.alloc(512), 'raw.img')).toBeUndefined();
    const long = qcow2();
    long.writeBigUInt64BE(200n, 8);
    long.writeUInt32BE(5000, 16);
    expect(() => parseQcow2Header(long, '/v/disk.qcow2')).toThrow('/v/disk.qcow2: not a qcow2 header GoShip accepts: a backing file name of 5000 bytes (at most 1023)');
    const beyond = qcow2().subarray(0, 300);
    beyond.writeBigUInt64BE(290n, 8);
    beyond.writeUInt32BE(100, 16);
    expect(() => parseQcow2Header(beyond, 'd')).toThrow('d: not a qcow2 header GoShip accepts: the backing file name lies beyond the first 300 bytes');
    const v9 = qcow2({ version: 3 });
    v9.writeUInt32BE(9, 4);
    expect(() => parseQcow2Header(v9, 'd')).toThrow('d: not a qcow2 header GoShip accepts: version 9');
  });
});

describe('chainIssue', () => {
  const base = { path: '/var/lib/goship/images/default/base.qcow2', format: 'qcow2' };
  it('the recorded base with its format, or no backing file at all: accepted', () => {
    expect(chainIssue('/o', { version: 3, backingFile: base.path, backingFormat: 'qcow2' }, base)).toBeUndefined();
    expect(chainIssue('/o', { version: 3 }, undefined)).toBeUndefined();
  });
  it('another backing file, a missing format, a data file, no qcow2: each refused with what it names', () => {
    expect(chainIssue('/o', { version: 3, backingFile: '/etc/shadow', backingFormat: 'raw' }, base)).toBe(
      '/o names "/etc/shadow" as its backing file, not the image it was created on (/var/lib/goship/images/default/base.qcow2)',
    );
    expect(chainIssue('/o', { version: 3, backingFile: base.path }, base)).toBe('/o names its backing file\'s format as "(none)", not qcow2');
    expect(chainIssue('/o', { version: 3, backingFile: '/x' }, undefined)).toBe('/o names a backing file, "/x", but the VM was created on no base image');
    expect(chainIssue('/o', { version: 3, dataFile: '/etc/passwd' }, base)).toBe('/o names an external data file, "/etc/passwd": GoShip makes none');
    expect(chainIssue('/o', undefined, base)).toBe('/o is not a qcow2 file');
  });
});

describe('specPathIssues', () => {
  const own = { home: '/var/lib/goship', run: '/run/goship', vmDir: '/var/lib/goship/vms/web', imagesDir: '/var/lib/goship/images' };
  it('its own VM\'s files, an image\'s files to read, anything outside GoShip: accepted', () => {
    expect(
      specPathIssues(
        [
          { at: 'disks[0].path', path: '/var/lib/goship/vms/web/disk.qcow2', access: 'rw' },
          { at: 'boot.kernel', path: '/var/lib/goship/images/default/vmlinuz', access: 'r' },
          { at: 'disks[1].path', path: '/srv/data.raw', access: 'rw' },
        ],
        own,
      ),
    ).toEqual([]);
  });
  it('the state file, another VM\'s disk, a socket, an image to write: each field named', () => {
    expect(
      specPathIssues(
        [
          { at: 'disks[0].path', path: '/var/lib/goship/state.json', access: 'rw' },
          { at: 'disks[1].path', path: '/var/lib/goship/vms/db/disk.qcow2', access: 'r' },
          { at: 'seed', path: '/run/goship/db/qmp.sock', access: 'r' },
          { at: 'disks[2].path', path: '/var/lib/goship/images/default/base.qcow2', access: 'rw' },
          { at: 'disks[3].path', path: '/var/lib/goship/vms/webby/disk.qcow2', access: 'rw' },
        ],
        own,
      ),
    ).toEqual([
      { path: 'disks[0].path', message: "/var/lib/goship/state.json is one of GoShip's own files, in GoShip's home (/var/lib/goship): a spec may name its own VM's files, an image's files (read-only) and files outside GoShip's directories" },
      { path: 'disks[1].path', message: "/var/lib/goship/vms/db/disk.qcow2 is one of GoShip's own files, in GoShip's home (/var/lib/goship): a spec may name its own VM's files, an image's files (read-only) and files outside GoShip's directories" },
      { path: 'seed', message: "/run/goship/db/qmp.sock is one of GoShip's own files, in GoShip's run directory (/run/goship): a spec may name its own VM's files, an image's files (read-only) and files outside GoShip's directories" },
      { path: 'disks[2].path', message: '/var/lib/goship/images/default/base.qcow2 is a file of image default, shared by every VM on it: a VM may only read it (readOnly: true)' },
      { path: 'disks[3].path', message: "/var/lib/goship/vms/webby/disk.qcow2 is one of GoShip's own files, in GoShip's home (/var/lib/goship): a spec may name its own VM's files, an image's files (read-only) and files outside GoShip's directories" },
    ]);
  });
});

describe('runDirIssue', () => {
  const dir = (o: Partial<{ isDirectory: boolean; isSymbolicLink: boolean; uid: number; mode: number }>) => ({ isDirectory: true, isSymbolicLink: false, uid: 1000, mode: 0o40700, ...o });
  it('a missing directory (GoShip makes it) or the user\'s own 0700: used', () => {
    expect(runDirIssue(undefined, 1000, false)).toBeUndefined();
    expect(runDirIssue(dir({}), 1000, false)).toBeUndefined();
    expect(runDirIssue(dir({ uid: 0, mode: 0o40711 }), 0, true)).toBeUndefined();
  });
  it('another user\'s, a link, a file, one others may write or enter: refused, saying which', () => {
    expect(runDirIssue(dir({ uid: 1001, mode: 0o41777 }), 1000, false)).toBe('belongs to uid 1001, not to uid 1000 (who runs GoShip)');
    expect(runDirIssue(dir({ isSymbolicLink: true, isDirectory: false }), 1000, false)).toBe('is a symbolic link');
    expect(runDirIssue(dir({ isDirectory: false }), 1000, false)).toBe('is not a directory');
    expect(runDirIssue(dir({ mode: 0o40777 }), 1000, false)).toBe("is mode 0777: others may enter it (GoShip's own must be 0700)");
    expect(runDirIssue(dir({ mode: 0o40711 }), 1000, false)).toBe("is mode 0711: others may enter it (GoShip's own must be 0700)");
    expect(runDirIssue(dir({ uid: 0, mode: 0o40775 }), 0, true)).toBe("is mode 0775: others may read or write it (GoShip's own must be 0711)");
  });
});

describe('permits and reachIssues: what the kernel lets a VM\'s identity open', () => {
  const who = { name: "VM web's QEMU (uid 1879048192)", uid: 1879048192, groups: [1879048192] };
  const dir = (path: string, mode: number, gid = 0) => ({ path, uid: 0, gid, mode: 0o040000 | mode });
  it('owner, group, other bits, as the kernel picks them (owner first)', () => {
    expect(permits({ path: '/f', uid: 1879048192, gid: 0, mode: 0o600 }, who, 'rw')).toBe(true);
    expect(permits({ path: '/f', uid: 0, gid: 1879048192, mode: 0o640 }, who, 'r')).toBe(true);
    expect(permits({ path: '/f', uid: 0, gid: 1879048192, mode: 0o640 }, who, 'rw')).toBe(false);
    expect(permits({ path: '/d', uid: 0, gid: 1879048192, mode: 0o710 }, who, 'x')).toBe(true);
    expect(permits({ path: '/d', uid: 0, gid: 0, mode: 0o700 }, who, 'x')).toBe(false);
    expect(permits({ path: '/d', uid: 0, gid: 0, mode: 0o711 }, who, 'x')).toBe(true);
    // The owner's bits decide for the owner, even when the others' would allow more.
    expect(permits({ path: '/f', uid: 1879048192, gid: 0, mode: 0o044 }, who, 'r')).toBe(false);
  });
  it('names the directory that stops it, with its mode; a file it cannot open as needed; nothing when all is well', () => {
    const closed = [dir('/', 0o755), dir('/tmp', 0o1777), dir('/tmp/t', 0o700), { path: '/tmp/t/disk.qcow2', uid: 0, gid: 0, mode: 0o100666 }];
    expect(reachIssues(closed, who, 'rw', 'disks[0].path')).toEqual([
      { path: 'disks[0].path', message: "VM web's QEMU (uid 1879048192) cannot reach /tmp/t/disk.qcow2: /tmp/t is mode 0700 (0:0) and lets it not pass" },
    ]);
    const ok = [dir('/', 0o755), dir('/var', 0o755), { path: '/var/k', uid: 0, gid: 0, mode: 0o100644 }];
    expect(reachIssues(ok, who, 'r', 'boot.kernel')).toEqual([]);
    expect(reachIssues(ok, who, 'rw', 'disks[1].path')).toEqual([{ path: 'disks[1].path', message: "VM web's QEMU (uid 1879048192) cannot read and write /var/k: mode 0644 (0:0)" }]);
  });
});

describe('VM identities', () => {
  it('systemIds: every uid and gid /etc/passwd and /etc/group name', () => {
    expect([...systemIds('root:x:0:0::/root:/bin/bash\nodd:x:1879048192:5::/:/bin/false\nbad:x:z:y\n', 'kvm:x:993:\nx:x:1879048194:\n')].sort()).toEqual([0, 1879048192, 1879048194, 5, 993].sort());
  });
  it('candidateIds: the lowest of the range first, skipping those taken', () => {
    const it = candidateIds(new Set([JAIL_ID_BASE, JAIL_ID_BASE + 2]));
    expect([it.next().value, it.next().value, it.next().value]).toEqual([JAIL_ID_BASE + 1, JAIL_ID_BASE + 3, JAIL_ID_BASE + 4]);
  });
});
