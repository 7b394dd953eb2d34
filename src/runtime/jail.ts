/**
 * The jail, as the runtime applies it to one VM before its monitor starts
 * QEMU (docs/security.md): the spec names none of GoShip's own files, the
 * overlay's header names only the base the VM was made on, the VM's files
 * and directories belong to its identity (root) or stay private (a user),
 * its cgroup is made, and the words that start QEMU are built.
 */
import { lstat, open, realpath, rm, stat } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { ValidationError, type Issue } from '../errors.ts';
import { FILES, type Layout } from '../layout.ts';
import {
  JailError,
  applyCgroup,
  chainIssue,
  giveFile,
  jailedCommand,
  limitsFor,
  ownDir,
  pathChain,
  planCgroup,
  privateRunDir,
  qemuGroups,
  readQcow2Header,
  reachIssues,
  realOrResolved,
  specPathIssues,
  virtiofsdCommand,
  within,
  type Identity,
  type NamedPath,
  type TrustedBase,
  type Who,
} from '../jail/index.ts';
import { VM_SPEC_HINT, VM_SPEC_SUBJECT, type VmConfig } from '../qemu/index.ts';
import type { Vm, VmJail } from '../store/index.ts';

/** What QEMU opens by path, as the spec names it. */
export function namedPaths(config: VmConfig): NamedPath[] {
  const out: NamedPath[] = [];
  config.disks.forEach((d, i) => out.push({ at: `disks[${i}].path`, path: d.path, access: d.readOnly ? 'r' : 'rw' }));
  if (config.seed) out.push({ at: 'seed', path: config.seed, access: 'r' });
  if (config.boot.kind === 'kernel') {
    out.push({ at: 'boot.kernel', path: config.boot.kernel, access: 'r' });
    if (config.boot.initrd) out.push({ at: 'boot.initrd', path: config.boot.initrd, access: 'r' });
  } else if (config.boot.firmware === 'uefi') {
    out.push({ at: 'boot.ovmfCode', path: config.boot.ovmfCode, access: 'r' });
    if (config.boot.ovmfVars) out.push({ at: 'boot.ovmfVars', path: config.boot.ovmfVars, access: 'rw' });
  }
  return out;
}

/** Refuses a spec that names GoShip's own files (the state file, another VM's disk, an image's file to write): EINVALID, each field named. */
export async function checkSpecPaths(layout: Layout, vmDir: string, config: VmConfig): Promise<void> {
  const real = await Promise.all(namedPaths(config).map(async (p) => ({ ...p, path: await realOrResolved(p.path) })));
  const [home, run, dir, imagesDir] = await Promise.all([layout.home, layout.run, vmDir, layout.imagesDir].map(realOrResolved));
  const issues = specPathIssues(real, { home: home!, run: run!, vmDir: dir!, imagesDir: imagesDir! });
  if (issues.length > 0) throw new ValidationError(issues, { subject: VM_SPEC_SUBJECT, hint: VM_SPEC_HINT });
}

/** The base a VM's overlay may name: as recorded at create, or (a VM made before GoShip recorded it) its catalogued image's. */
export function trustedBase(layout: Layout, vm: Pick<Vm, 'base' | 'image'>): TrustedBase | undefined {
  if (vm.base) return vm.base;
  return vm.image ? { path: join(layout.imageDir(vm.image), FILES.imageBase), format: 'qcow2' } : undefined;
}

/**
 * Refuses an overlay whose header is not what GoShip made for this VM (a
 * rewritten backing file or data file), reading its bytes only: nothing it
 * names is opened. The base it stands on is checked the same way.
 */
export async function checkChain(layout: Layout, vm: Pick<Vm, 'name' | 'base' | 'image' | 'paths'>): Promise<void> {
  const overlay = vm.paths.overlay;
  if (!overlay) return;
  const refuse = (why: string): JailError =>
    new JailError(`VM ${vm.name}: ${why}; GoShip changed nothing and will not start it`, {
      hint: `the overlay was rewritten outside GoShip (by its QEMU, or by hand): restore it from a backup, or destroy the VM (goshipctl vm destroy ${vm.name})`,
    });
  const base = trustedBase(layout, vm);
  const issue = chainIssue(overlay, await readQcow2Header(overlay), base);
  if (issue) throw refuse(issue);
  if (base?.backing) {
    // A template's disk: it names exactly the image's base, which stands alone.
    const issue = chainIssue(base.path, await readQcow2Header(base.path), base.backing);
    if (issue) throw refuse(`its base, a template's disk: ${issue}`);
    const header = await readQcow2Header(base.backing.path);
    if (header?.backingFile !== undefined || header?.dataFile !== undefined) throw refuse(`its template's base ${base.backing.path} names another file (${header.backingFile ?? header.dataFile}): a base stands alone`);
  } else if (base) {
    const header = await readQcow2Header(base.path);
    if (header?.backingFile !== undefined || header?.dataFile !== undefined) throw refuse(`its base ${base.path} names another file (${header.backingFile ?? header.dataFile}): a base stands alone`);
  }
}

/** What the monitor needs to start the virtiofsd of each shared folder (launch.json `filesystems`). */
export interface FilesystemLaunch {
  tag: string;
  socket: string;
  exec: string[];
  dirOwner?: { uid: number; gid: number };
  socketOwner?: { uid: number; gid: number };
}

/**
 * Each shared folder's virtiofsd, as GoShip runs as root: as the folder's
 * owner (read now, at each start), its socket given to QEMU's identity. A
 * folder owned by root is shared read-only only: read-write, a guest's root
 * could leave setuid-root files on this host. As a user: as that user.
 */
export async function filesystemLaunch(config: VmConfig, identity: Identity | undefined): Promise<FilesystemLaunch[]> {
  const out: FilesystemLaunch[] = [];
  for (const [i, fs] of config.filesystems.entries()) {
    if (!identity) {
      out.push({ tag: fs.tag, socket: fs.socket, exec: virtiofsdCommand({ source: fs.source, readOnly: fs.readOnly }) });
      continue;
    }
    const gone = (err: NodeJS.ErrnoException): never => {
      throw new JailError(`VM ${config.name}: shared folder ${fs.source}: ${err.code ?? err.message}`, { hint: 'make the folder again, or remove the project and create it without it' });
    };
    // Its daemon runs as the owner of what the path names now: a path that has become a link (anywhere on it) would choose another owner.
    const real = await realpath(fs.source).catch(gone);
    const s = await lstat(fs.source).catch(gone);
    if (real !== fs.source || !s.isDirectory()) {
      throw new JailError(`VM ${config.name}: shared folder ${fs.source} is no longer the directory it was at create (${s.isSymbolicLink() ? 'a link' : real !== fs.source ? `it leads to ${real}` : 'not a directory'}); GoShip will not start it`, {
        hint: 'put the directory back, or remove the project and create it again',
      });
    }
    if (s.uid === 0 && !fs.readOnly) {
      throw new JailError(`VM ${config.name}: shared folder ${fs.source} (filesystems[${i}]) is owned by root: shared read-write, the guest's root could leave setuid-root files on this host`, {
        hint: 'share a folder owned by another user, or share this one read-only (HOST:GUEST:ro)',
      });
    }
    const owner = { uid: s.uid, gid: s.gid };
    out.push({ tag: fs.tag, socket: fs.socket, exec: virtiofsdCommand({ source: fs.source, readOnly: fs.readOnly, owner }), dirOwner: owner, socketOwner: { uid: identity.uid, gid: identity.gid } });
  }
  return out;
}

/** The group that owns /dev/kvm (a KVM VM's QEMU keeps it), if there is one. */
export async function kvmGid(): Promise<number | undefined> {
  return stat('/dev/kvm').then(
    (s) => s.gid,
    () => undefined,
  );
}

export interface JailRequest {
  layout: Layout;
  vm: Vm;
  config: VmConfig;
  /** QEMU's argv (buildArgv). */
  argv: string[];
  /** The VM's identity (GoShip runs as root); absent: QEMU runs as GoShip's own user. */
  identity?: Identity;
}

export interface Jailed {
  /** The words that start QEMU in its jail. */
  exec: string[];
  jail: VmJail;
}

/**
 * Everything before QEMU's start: checks first (nothing changes when one
 * fails), then ownership and modes, then the cgroup.
 */
export async function prepareJail(r: JailRequest): Promise<Jailed> {
  const { layout, vm, config, identity } = r;
  await privateRunDir(layout.run);
  await checkSpecPaths(layout, vm.paths.dir, config);
  await checkChain(layout, vm);
  const runDir = layout.vmRunDir(vm.id);
  const groups = identity ? qemuGroups(config.accel, config.accel === 'kvm' ? await kvmGid() : undefined) : [];
  if (identity) {
    const who: Who = { name: `VM ${vm.name}'s QEMU (uid ${identity.uid})`, uid: identity.uid, groups: [identity.gid, ...groups] };
    const root = { uid: 0, gid: 0 };
    // GoShip's own directories: passed through (never listed) by the VMs' identities.
    for (const d of [layout.home, layout.vmsDir]) await ownDir(d, root, 0o711);
    await ownDir(vm.paths.dir, { uid: 0, gid: identity.gid }, 0o710);
    // QEMU makes its sockets and pidfile here; sticky: it cannot remove the monitor's socket.
    await ownDir(layout.run, root, 0o711);
    await ownDir(runDir, { uid: 0, gid: identity.gid }, 0o1770);
    if (vm.paths.overlay) await giveFile(vm.paths.overlay, identity, 0o600);
    if (vm.paths.seed) await giveFile(vm.paths.seed, { uid: 0, gid: identity.gid }, 0o640);
    // A catalogued image the VM stands on: read-only to every VM, never given to one.
    const base = trustedBase(layout, vm);
    // (An image directory may be a link to one elsewhere, a cache: passed through as it is, its target checked below.)
    const imagesDir = await realOrResolved(layout.imagesDir);
    const imageFiles = [base?.path, base?.backing?.path, ...namedPaths(config).filter((p) => p.access === 'r').map((p) => p.path)].filter((p): p is string => p !== undefined);
    for (const f of imageFiles) {
      const real = await realOrResolved(f);
      if (within(resolve(f), resolve(layout.imagesDir)) || within(real, imagesDir)) await ownDir(layout.imagesDir, root, 0o711);
      if (!within(real, imagesDir)) continue;
      await ownDir(dirname(real), root, 0o711);
      await giveFile(real, root, 0o644, { shared: true });
    }
    // Everything QEMU opens must be reachable by its identity, GoShip's own files too (the home may sit under a closed directory).
    const issues: Issue[] = [];
    for (const p of namedPaths(config)) issues.push(...reachIssues(await pathChain(p.path), who, p.access, p.at));
    if (base) issues.push(...reachIssues(await pathChain(base.path), who, 'r', 'disks[0] (its base image)'));
    if (base?.backing) issues.push(...reachIssues(await pathChain(base.backing.path), who, 'r', "disks[0] (its template's base image)"));
    if (config.accel === 'kvm') issues.push(...reachIssues(await pathChain('/dev/kvm'), who, 'rw', 'accel'));
    const unique = [...new Map(issues.map((i) => [i.message, i])).values()];
    if (unique.length > 0) {
      throw new JailError(`VM ${vm.name}: its QEMU runs as uid ${identity.uid} and could not open what it needs: ${unique.map((i) => `${i.path}: ${i.message}`).join('; ')}`, {
        hint: `let others reach what the spec names outside GoShip's directories (chmod o+x on each directory named, o+r on files QEMU reads, o+rw on disks it writes), or keep it under GoShip (project create, image import)`,
      });
    }
  } else {
    await ownDir(vm.paths.dir, { uid: process.getuid?.() ?? 0, gid: process.getgid?.() ?? 0 }, 0o700);
    await ownDir(runDir, { uid: process.getuid?.() ?? 0, gid: process.getgid?.() ?? 0 }, 0o700);
  }
  const limits = limitsFor({ memoryBytes: config.memory.bytes, vcpus: config.cpu.count, accel: config.accel, limits: config.limits });
  const plan = await planCgroup(vm.id, limits);
  let jail: VmJail = { ...(identity ? { uid: identity.uid, gid: identity.gid } : {}) };
  let procs: string[] = [];
  if (plan.version === 0) {
    jail = { ...jail, noLimits: plan.reason };
  } else {
    try {
      await applyCgroup(plan);
      procs = plan.procs;
      jail = { ...jail, cgroup: { version: plan.version, vmDirs: plan.vmDirs, ...limits } };
    } catch (err) {
      const why = `the cgroup could not be made: ${(err as Error).message}`;
      // As root a limit is part of the jail: no QEMU without it. A user's delegated cgroup is a bonus.
      if (identity) throw new JailError(`VM ${vm.name}: ${why}`, { hint: 'GoShip needs the memory, cpu and pids controllers writable as root (cgroup v1 or v2)', cause: err });
      jail = { ...jail, noLimits: why };
    }
  }
  const exec = jailedCommand({ qemuArgv: r.argv, ...(identity ? { identity, groups } : {}), cgroupProcs: procs });
  return { exec, jail };
}

/**
 * A template's VM's RAM file (FILES.sharedRam in its directory): made anew,
 * never a name found there, at the guest's memory size (a sparse file), and
 * given to the VM's identity, whose QEMU maps it shared.
 */
export async function sharedRamFile(vm: Vm, bytes: number, identity: Identity | undefined): Promise<string> {
  const path = join(vm.paths.dir, FILES.sharedRam);
  await rm(path, { force: true });
  const f = await open(path, 'wx', 0o600);
  try {
    await f.truncate(bytes);
  } finally {
    await f.close();
  }
  if (identity) await giveFile(path, identity, 0o600);
  return path;
}
