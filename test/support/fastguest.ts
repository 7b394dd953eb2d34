/**
 * The fast test guest: Debian's cloud kernel plus a busybox initramfs whose
 * /init boots in seconds under TCG, says so on the serial console and on the
 * virtio-serial port `org.goship.agent.0`, and powers off on the ACPI power
 * button (or ignores it with `goship.acpi=ignore` on the kernel command line).
 *
 * Built from Debian packages by GoShip's own code (no prebuilt blobs), cached
 * under `cacheDir/<key>/` where the key hashes every input. A build happens in
 * a private directory beside the cache and is renamed into place, so a killed
 * build never leaves a half entry and concurrent builders cannot corrupt one.
 * See docs/test-guests.md.
 */
import { execa } from 'execa';
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { copyFile, mkdir, readdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join, posix, relative, resolve } from 'node:path';
import { gzipSync } from 'node:zlib';
import { pidAlive } from '../../src/proc.ts';

/** A fast-guest build failure (test support: not one of GoShip's own error codes). */
export class FastGuestError extends Error {
  readonly code: string;
  readonly hint: string | undefined;
  constructor(code: string, message: string, options: { hint?: string; cause?: unknown } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'FastGuestError';
    this.code = code;
    this.hint = options.hint;
  }
}

/** Bump whenever the build changes in a way the other key inputs do not capture. */
export const FASTGUEST_BUILDER_VERSION = 2;

/** The Debian metapackage whose dependency names the current cloud kernel. */
export const FASTGUEST_KERNEL_METAPACKAGE = 'linux-image-cloud-amd64';

/**
 * Kernel command line. `panic=-1` reboots at once on a panic (for instance if
 * /init died): run QEMU with `-no-reboot` and a panic becomes a prompt QEMU
 * exit instead of a hang. `quiet` keeps the serial log short.
 */
export const FASTGUEST_CMDLINE = 'console=ttyS0 panic=-1 quiet';

/** Kernel command-line word that makes the guest ignore the ACPI power button. */
export const FASTGUEST_ACPI_IGNORE = 'goship.acpi=ignore';

/** `goship.fill=MiB` on the kernel command line: the guest's init writes through one buffer of that size once it is ready. */
export const FASTGUEST_FILL = 'goship.fill';

/** The virtio-serial port name the guest writes its ready line to. */
export const FASTGUEST_AGENT_PORT = 'org.goship.agent.0';

/** Printed on the serial console (ttyS0) once modules are loaded. */
export const FASTGUEST_UP_LINE = 'goship-fastguest: up';

/** Written, with a newline, to the `org.goship.agent.0` port once it is found. */
export const FASTGUEST_READY_LINE = 'goship-fastguest ready';

/** Printed on the serial console just before the guest powers off on the power button. */
export const FASTGUEST_POWEROFF_LINE = 'goship-fastguest: power button: powering off';

/**
 * Modules loaded at boot (with their dependencies, from each module's
 * `.modinfo`). Everything else the guest needs is built into the cloud kernel
 * (8250 serial, devtmpfs, ext4, binfmt_script, initramfs gzip); a requested
 * module that is built in is skipped.
 */
export const FASTGUEST_MODULES: readonly string[] = [
  'virtio_pci', // every virtio device on q35
  'virtio_console', // virtio-serial
  'virtio_blk',
  'virtio_net',
  'virtio_rng',
  'button', // ACPI power button -> input device
  'evdev', // /dev/input/event* for acpid
];

/** The busybox binary packed into the initramfs (Debian's busybox-static). */
export const HOST_BUSYBOX_CANDIDATES: readonly string[] = ['/bin/busybox', '/usr/bin/busybox'];

export interface FastGuest {
  /** Absolute path of the kernel image (`-kernel`). */
  kernel: string;
  /** Absolute path of the gzip'd newc initramfs (`-initrd`). */
  initrd: string;
  /** Kernel command line (`-append`); append `goship.acpi=ignore` to ignore the power button. */
  cmdline: string;
  /** The cache key: sha256 of every build input. */
  key: string;
}

export interface FastGuestOptions {
  /** Progress lines (resolution, download, build steps). */
  log?: (line: string) => void;
}

/** PID 1 of the guest. Kept in the cache key: change it and the guest is rebuilt. */
export const FASTGUEST_INIT = `#!/bin/sh
# GoShip fast test guest: PID 1. It must never exit (the kernel would panic).
export PATH=/sbin:/bin:/usr/sbin:/usr/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /run /tmp /var/run /var/log
exec </dev/console >/dev/console 2>&1

# Modules, in dependency order (one path per line, relative to /lib/modules).
while read -r mod; do
  [ -n "$mod" ] || continue
  insmod "/lib/modules/$mod" || echo "goship-fastguest: insmod $mod failed"
done </etc/goship/modules

echo "${FASTGUEST_UP_LINE}"
read -r up _ </proc/uptime
echo "goship-fastguest: uptime $up s"

# The agent port: /sys/class/virtio-ports/vportNpM/name -> /dev/vportNpM. Ports
# are added asynchronously after virtio_console binds: wait for it, but only
# when a virtio-serial device is present at all.
find_port() {
  for f in /sys/class/virtio-ports/*/name; do
    [ -r "$f" ] || continue
    if [ "$(cat "$f")" = "${FASTGUEST_AGENT_PORT}" ]; then
      d=\${f%/name}
      echo "/dev/\${d##*/}"
      return 0
    fi
  done
  return 1
}
port=
if ls /sys/bus/virtio/drivers/virtio_console/ 2>/dev/null | grep -q '^virtio'; then
  i=0
  while [ $i -lt 100 ]; do
    port=$(find_port) && [ -c "$port" ] && break
    port=
    i=$((i + 1))
    sleep 0.05
  done
fi
if [ -n "$port" ]; then
  echo "goship-fastguest: agent port $port"
  # Blocks until the host side connects (virtio-serial has no connection
  # semantics): in the background, so boot goes on.
  ( echo "${FASTGUEST_READY_LINE}" >"$port" ) &
else
  echo "goship-fastguest: no ${FASTGUEST_AGENT_PORT} port"
fi

# The ACPI power button (button.ko -> input device -> evdev) -> busybox acpid
# -> /etc/acpi/PWRF/00000080 -> poweroff -f.
case " $(cat /proc/cmdline) " in
  *" ${FASTGUEST_ACPI_IGNORE} "*) acpi=ignore ;;
  *) acpi=handle ;;
esac
if [ "$acpi" = ignore ]; then
  echo "goship-fastguest: ignoring the ACPI power button"
else
  i=0
  while [ $i -lt 100 ] && ! ls /dev/input/event* >/dev/null 2>&1; do
    i=$((i + 1))
    sleep 0.05
  done
  acpid -d -c /etc/acpi >/dev/null 2>&1 &
  acpid=$!
  # Announce only once acpid holds an event device open: a button pressed
  # before that is lost (a test pressing it right after the line saw it lost).
  i=0
  while [ $i -lt 200 ] && ! ls -l /proc/$acpid/fd 2>/dev/null | grep -q /dev/input/event; do
    i=$((i + 1))
    sleep 0.05
  done
  echo "goship-fastguest: acpid handles the power button"
fi

read -r up _ </proc/uptime
echo "goship-fastguest: ready at uptime $up s"

# goship.fill=MiB: one buffer of that many MiB, written through (the guest's
# pages become QEMU's): the tests' way to make QEMU outgrow a memory limit.
for w in $(cat /proc/cmdline); do
  case $w in
    ${FASTGUEST_FILL}=*)
      fill=\${w#${FASTGUEST_FILL}=}
      echo "goship-fastguest: filling \${fill} MiB"
      dd if=/dev/zero of=/dev/null bs=\${fill}M count=1 2>&1
      echo "goship-fastguest: filled"
      ;;
  esac
done
while :; do
  sleep 3600
done
`;

/** Run by busybox acpid on the power button (its default action for PWRF). */
export const FASTGUEST_POWER_HANDLER = `#!/bin/sh
echo "${FASTGUEST_POWEROFF_LINE}" >/dev/console
sync
poweroff -f
`;

// ---------------------------------------------------------------------------
// Public entry point

/** In-process builds in flight, by entry directory: concurrent callers share one. */
const inflight = new Map<string, Promise<FastGuest>>();

/**
 * Returns the fast guest, building it into `cacheDir/<key>/` first if needed.
 * A cached entry is returned without touching it. Needs `apt-cache` and
 * `apt-get` with package lists (root runs `apt-get update` itself when they
 * are missing), `dpkg-deb`, and a static busybox (Debian `busybox-static`).
 */
export async function ensureFastGuest(cacheDir: string, opts: FastGuestOptions = {}): Promise<FastGuest> {
  const log = opts.log ?? (() => {});
  const root = resolve(cacheDir);
  await mkdir(root, { recursive: true });

  const busybox = await findBusybox();
  let pkg: KernelPackage;
  try {
    pkg = await resolveKernelPackage(log);
  } catch (e) {
    // No usable apt (offline lists, not Debian): fall back to a complete entry of this builder version.
    const fallback = await newestEntry(root);
    if (fallback === undefined) throw e;
    log(`fastguest: ${(e as Error).message}; using the cached ${fallback.key}`);
    return fallback;
  }

  const inputs: KeyInputs = {
    builderVersion: FASTGUEST_BUILDER_VERSION,
    kernelDebSha256: pkg.sha256,
    busyboxSha256: await sha256File(busybox),
    init: FASTGUEST_INIT,
    powerHandler: FASTGUEST_POWER_HANDLER,
    modules: [...FASTGUEST_MODULES],
    cmdline: FASTGUEST_CMDLINE,
  };
  const key = cacheKey(inputs);
  const dir = join(root, key);
  const done = await readEntry(dir, key);
  if (done) return done;

  const running = inflight.get(dir);
  if (running) return running;
  const build = buildEntry(root, key, pkg, busybox, log).finally(() => inflight.delete(dir));
  inflight.set(dir, build);
  return build;
}

// ---------------------------------------------------------------------------
// Cache key and entries

export interface KeyInputs {
  builderVersion: number;
  kernelDebSha256: string;
  busyboxSha256: string;
  init: string;
  powerHandler: string;
  modules: string[];
  cmdline: string;
}

/** Pure: sha256 over every input, in a fixed order. */
export function cacheKey(inputs: KeyInputs): string {
  const h = createHash('sha256');
  h.update(
    JSON.stringify([
      'goship-fastguest',
      inputs.builderVersion,
      inputs.kernelDebSha256,
      inputs.busyboxSha256,
      inputs.init,
      inputs.powerHandler,
      inputs.modules,
      inputs.cmdline,
    ]),
  );
  return h.digest('hex');
}

interface Manifest {
  builderVersion: number;
  key: string;
  kernelPackage: string;
  kernelVersion: string;
  kernelRelease: string;
  kernelDebSha256: string;
  modules: string[];
  cmdline: string;
  builtAt: string;
}

const KERNEL_FILE = 'vmlinuz';
const INITRD_FILE = 'initrd.img';
const MANIFEST_FILE = 'manifest.json';
const BUILD_PREFIX = '.build-';

async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch {
    return false;
  }
}

/** A complete entry (vmlinuz + initrd.img present), or undefined. Reads nothing else. */
async function readEntry(dir: string, key: string): Promise<FastGuest | undefined> {
  const kernel = join(dir, KERNEL_FILE);
  const initrd = join(dir, INITRD_FILE);
  if (!(await exists(kernel)) || !(await exists(initrd))) return undefined;
  return { kernel, initrd, cmdline: FASTGUEST_CMDLINE, key };
}

/** The most recently built complete entry of this builder version. */
async function newestEntry(root: string): Promise<FastGuest | undefined> {
  let best: { guest: FastGuest; at: string } | undefined;
  for (const name of await readdir(root).catch(() => [] as string[])) {
    if (!/^[0-9a-f]{64}$/.test(name)) continue;
    try {
      const m = JSON.parse(await readFile(join(root, name, MANIFEST_FILE), 'utf8')) as Manifest;
      if (m.builderVersion !== FASTGUEST_BUILDER_VERSION || m.key !== name) continue;
      const guest = await readEntry(join(root, name), name);
      if (guest && (!best || m.builtAt > best.at)) best = { guest, at: m.builtAt };
    } catch {
      // not an entry of ours
    }
  }
  return best?.guest;
}

/** Removes build directories left by killed builds: dead PID on this host, or older than a day. */
async function sweepStaleBuilds(root: string, log: (line: string) => void): Promise<void> {
  const host = safeName(hostname());
  for (const name of await readdir(root).catch(() => [] as string[])) {
    if (!name.startsWith(BUILD_PREFIX)) continue;
    const m = /^\.build-(.+)-(\d+)-[0-9a-f]+$/.exec(name);
    let stale = false;
    if (m && m[1] === host && !pidAlive(Number(m[2]))) stale = true;
    if (!stale) {
      const st = await stat(join(root, name)).catch(() => undefined);
      stale = st !== undefined && Date.now() - st.mtimeMs > 24 * 3600_000;
    }
    if (stale) {
      log(`fastguest: removing the stale build ${name}`);
      await rm(join(root, name), { recursive: true, force: true });
    }
  }
}

function safeName(s: string): string {
  return s.replace(/[^A-Za-z0-9_.]/g, '_');
}

async function buildEntry(
  root: string,
  key: string,
  pkg: KernelPackage,
  busybox: string,
  log: (line: string) => void,
): Promise<FastGuest> {
  await sweepStaleBuilds(root, log);
  const t0 = Date.now();
  const build = join(root, `${BUILD_PREFIX}${safeName(hostname())}-${process.pid}-${randomBytes(4).toString('hex')}`);
  const work = join(build, 'work');
  const out = join(build, 'out');
  await mkdir(work, { recursive: true });
  await mkdir(out);
  try {
    log(`fastguest: building ${key.slice(0, 12)} from ${pkg.name} ${pkg.version}`);
    const deb = await downloadDeb(pkg, work, log);
    const tree = join(work, 'x');
    await run('dpkg-deb', ['-x', deb, tree], 'EFASTGUEST', 'dpkg-deb is missing: apt-get install dpkg');
    await rm(deb, { force: true });

    const release = await kernelRelease(tree);
    const modulesRoot = join(tree, 'lib', 'modules', release);
    const modules = await resolveModules(modulesRoot, FASTGUEST_MODULES);
    log(`fastguest: kernel ${release}; modules: ${modules.map((m) => posix.basename(m.path)).join(' ')}`);

    const entries = await initramfsEntries(busybox, modulesRoot, release, modules);
    const initrd = gzipSync(newcArchive(entries), { level: 9 });
    await writeFile(join(out, INITRD_FILE), initrd);
    await copyFile(join(tree, 'boot', `vmlinuz-${release}`), join(out, KERNEL_FILE));
    const manifest: Manifest = {
      builderVersion: FASTGUEST_BUILDER_VERSION,
      key,
      kernelPackage: pkg.name,
      kernelVersion: pkg.version,
      kernelRelease: release,
      kernelDebSha256: pkg.sha256,
      modules: modules.map((m) => m.path),
      cmdline: FASTGUEST_CMDLINE,
      builtAt: new Date().toISOString(),
    };
    await writeFile(join(out, MANIFEST_FILE), JSON.stringify(manifest, null, 2) + '\n');
    await writeFile(join(out, 'cmdline'), FASTGUEST_CMDLINE + '\n');

    const dir = join(root, key);
    try {
      await rename(out, dir);
      log(`fastguest: built ${dir} in ${((Date.now() - t0) / 1000).toFixed(1)} s (initrd ${initrd.length} bytes)`);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      // Another builder won the race: its entry is complete (it was renamed whole).
      if (code !== 'ENOTEMPTY' && code !== 'EEXIST') throw e;
      log(`fastguest: ${dir} was built concurrently; using it`);
    }
    const guest = await readEntry(dir, key);
    if (!guest) throw new FastGuestError('EINTERNAL', `fast guest entry ${dir} is incomplete after the build`);
    return guest;
  } finally {
    await rm(build, { recursive: true, force: true });
  }
}

// ---------------------------------------------------------------------------
// Debian packages

interface KernelPackage {
  name: string;
  version: string;
  sha256: string;
}

function isRoot(): boolean {
  return typeof process.getuid === 'function' && process.getuid() === 0;
}

async function run(file: string, args: string[], code: string, missingHint: string, cwd?: string): Promise<string> {
  try {
    const r = await execa(file, args, { cwd, env: { LC_ALL: 'C' }, stripFinalNewline: true });
    return r.stdout;
  } catch (cause) {
    const e = cause as { code?: string; stderr?: string; shortMessage?: string };
    if (e.code === 'ENOENT') throw new FastGuestError(code, `${file} is not installed`, { hint: missingHint, cause });
    const why = (e.stderr || e.shortMessage || String(cause)).trim().split('\n').filter(Boolean).pop() ?? '';
    throw new FastGuestError(code, `${file} ${args.join(' ')} failed: ${why}`, { cause });
  }
}

/** Pure: one field of the first stanza of `apt-cache show` output. */
export function aptField(show: string, field: string): string | undefined {
  const re = new RegExp(`^${field}:[ \\t]*(.*)$`, 'm');
  const stanza = show.split(/\n\s*\n/)[0] ?? '';
  return re.exec(stanza)?.[1]?.trim();
}

/** Pure: the versioned kernel package named in the metapackage's Depends. */
export function kernelDependency(depends: string): { name: string; version?: string } | undefined {
  for (const alt of depends.split(/[,|]/)) {
    const m = /^\s*(linux-image-[0-9][^\s(]*-cloud-amd64)(?:\s*\(\s*=\s*([^)\s]+)\s*\))?/.exec(alt);
    if (m?.[1]) return m[2] ? { name: m[1], version: m[2] } : { name: m[1] };
  }
  return undefined;
}

async function aptShow(spec: string): Promise<string | undefined> {
  try {
    const r = await execa('apt-cache', ['show', '--no-all-versions', spec], { env: { LC_ALL: 'C' } });
    return r.stdout.trim() === '' ? undefined : r.stdout;
  } catch (cause) {
    const e = cause as { code?: string };
    if (e.code === 'ENOENT') {
      throw new FastGuestError('EFASTGUEST', 'apt-cache is not installed: the fast test guest is built from Debian packages', {
        hint: 'build the test guest on Debian or Ubuntu (with apt), or copy a built cache entry here',
        cause,
      });
    }
    return undefined; // "No packages found" or the like
  }
}

async function aptUpdate(log: (line: string) => void): Promise<void> {
  log('fastguest: apt-get update (no package lists)');
  await run('apt-get', ['update', '-q'], 'EFASTGUEST', 'apt-get is missing');
}

function noListsError(what: string): FastGuestError {
  return new FastGuestError('EFASTGUEST', `cannot find ${what} in the apt package lists`, {
    hint: 'run `sudo apt-get update` once (building the test guest needs the Debian package lists), then retry',
  });
}

/** linux-image-cloud-amd64 -> linux-image-6.1.0-N-cloud-amd64, its version and .deb sha256 (from the lists, no download). */
async function resolveKernelPackage(log: (line: string) => void): Promise<KernelPackage> {
  let meta = await aptShow(FASTGUEST_KERNEL_METAPACKAGE);
  if (meta === undefined) {
    if (!isRoot()) throw noListsError(FASTGUEST_KERNEL_METAPACKAGE);
    await aptUpdate(log);
    meta = await aptShow(FASTGUEST_KERNEL_METAPACKAGE);
    if (meta === undefined) throw noListsError(FASTGUEST_KERNEL_METAPACKAGE);
  }
  const dep = kernelDependency(aptField(meta, 'Depends') ?? aptField(meta, 'Pre-Depends') ?? '');
  if (!dep) {
    throw new FastGuestError('EFASTGUEST', `${FASTGUEST_KERNEL_METAPACKAGE} depends on no linux-image-*-cloud-amd64 package`);
  }
  const show = await aptShow(dep.version ? `${dep.name}=${dep.version}` : dep.name);
  if (show === undefined) throw noListsError(dep.name);
  const version = aptField(show, 'Version');
  const sha256 = aptField(show, 'SHA256');
  if (!version || !sha256 || !/^[0-9a-f]{64}$/.test(sha256)) {
    throw new FastGuestError('EFASTGUEST', `apt-cache show ${dep.name} gives no Version/SHA256`);
  }
  return { name: dep.name, version, sha256 };
}

/** `apt-get download NAME=VERSION` into `dir` (no installation), checked against the lists' sha256. */
async function downloadDeb(pkg: KernelPackage, dir: string, log: (line: string) => void): Promise<string> {
  const spec = `${pkg.name}=${pkg.version}`;
  const download = () =>
    execa('apt-get', ['download', '-q', spec], { cwd: dir, env: { LC_ALL: 'C' }, stripFinalNewline: true });
  log(`fastguest: apt-get download ${spec}`);
  try {
    await download();
  } catch (first) {
    const e = first as { code?: string; stderr?: string };
    if (e.code === 'ENOENT') throw new FastGuestError('EFASTGUEST', 'apt-get is not installed', { cause: first });
    const why = (e.stderr ?? '').trim().split('\n').filter((l) => !l.startsWith('W:')).pop() ?? String(first);
    if (!isRoot()) {
      throw new FastGuestError('EFASTGUEST', `apt-get download ${spec} failed: ${why}`, {
        hint: 'run `sudo apt-get update`, then retry (or run the tests as root, which does it itself)',
        cause: first,
      });
    }
    await aptUpdate(log);
    try {
      await download();
    } catch (second) {
      const why2 = ((second as { stderr?: string }).stderr ?? '').trim().split('\n').pop() ?? String(second);
      throw new FastGuestError('EFASTGUEST', `apt-get download ${spec} failed: ${why2}`, { cause: second });
    }
  }
  const debs = (await readdir(dir)).filter((f) => f.endsWith('.deb'));
  if (debs.length !== 1 || !debs[0]) throw new FastGuestError('EFASTGUEST', `apt-get download ${spec} left ${debs.length} .deb files`);
  const deb = join(dir, debs[0]);
  const got = await sha256File(deb);
  if (got !== pkg.sha256) {
    throw new FastGuestError('EFASTGUEST', `${debs[0]} has sha256 ${got}, the package lists say ${pkg.sha256}`, {
      hint: 'run `apt-get update` and retry',
    });
  }
  return deb;
}

async function sha256File(path: string): Promise<string> {
  const h = createHash('sha256');
  for await (const chunk of createReadStream(path)) h.update(chunk as Buffer);
  return h.digest('hex');
}

/** The single kernel release in an extracted linux-image .deb. */
async function kernelRelease(tree: string): Promise<string> {
  const releases = await readdir(join(tree, 'lib', 'modules')).catch(() => [] as string[]);
  const boot = await readdir(join(tree, 'boot')).catch(() => [] as string[]);
  const release = releases.find((r) => boot.includes(`vmlinuz-${r}`));
  if (releases.length !== 1 || !release) {
    throw new FastGuestError('EFASTGUEST', `the kernel package holds ${releases.length} module trees (${releases.join(', ')}), expected one with its vmlinuz`);
  }
  return release;
}

// ---------------------------------------------------------------------------
// busybox

async function findBusybox(): Promise<string> {
  for (const p of HOST_BUSYBOX_CANDIDATES) {
    let data: Buffer;
    try {
      data = await readFile(p);
    } catch {
      continue;
    }
    if (elfHasInterpreter(data)) {
      throw new FastGuestError('EFASTGUEST', `${p} is dynamically linked: the test initramfs needs a static busybox`, {
        hint: 'apt-get install busybox-static',
      });
    }
    return p;
  }
  throw new FastGuestError('EFASTGUEST', 'busybox is not installed: the test initramfs is built around it', {
    hint: 'apt-get install busybox-static',
  });
}

async function busyboxApplets(busybox: string): Promise<string[]> {
  const list = await run(busybox, ['--list-full'], 'EFASTGUEST', 'apt-get install busybox-static');
  return list
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '' && !l.includes('..') && !l.startsWith('/'));
}

// ---------------------------------------------------------------------------
// ELF: just enough for .modinfo and PT_INTERP (ELF64 little-endian)

function elf64(data: Buffer): boolean {
  return data.length >= 64 && data.readUInt32BE(0) === 0x7f454c46 && data[4] === 2 && data[5] === 1;
}

/** Pure: true when the ELF executable names a program interpreter (dynamically linked). */
export function elfHasInterpreter(data: Buffer): boolean {
  if (!elf64(data)) return false;
  const phoff = Number(data.readBigUInt64LE(0x20));
  const phentsize = data.readUInt16LE(0x36);
  const phnum = data.readUInt16LE(0x38);
  for (let i = 0; i < phnum; i++) {
    const at = phoff + i * phentsize;
    if (at + 4 > data.length) break;
    if (data.readUInt32LE(at) === 3 /* PT_INTERP */) return true;
  }
  return false;
}

/** Pure: the `key=value` strings of a kernel module's `.modinfo` section. */
export function modinfo(data: Buffer): Map<string, string[]> {
  const info = new Map<string, string[]>();
  if (!elf64(data)) throw new Error('not an ELF64 little-endian object');
  const shoff = Number(data.readBigUInt64LE(0x28));
  const shentsize = data.readUInt16LE(0x3a);
  const shnum = data.readUInt16LE(0x3c);
  const shstrndx = data.readUInt16LE(0x3e);
  const section = (i: number) => {
    const at = shoff + i * shentsize;
    return { name: data.readUInt32LE(at), offset: Number(data.readBigUInt64LE(at + 0x18)), size: Number(data.readBigUInt64LE(at + 0x20)) };
  };
  const strtab = section(shstrndx);
  for (let i = 0; i < shnum; i++) {
    const s = section(i);
    const nameStart = strtab.offset + s.name;
    const name = data.toString('latin1', nameStart, data.indexOf(0, nameStart));
    if (name !== '.modinfo') continue;
    for (const kv of data.toString('latin1', s.offset, s.offset + s.size).split('\0')) {
      const eq = kv.indexOf('=');
      if (eq <= 0) continue;
      const k = kv.slice(0, eq);
      info.set(k, [...(info.get(k) ?? []), kv.slice(eq + 1)]);
    }
  }
  return info;
}

// ---------------------------------------------------------------------------
// Modules

export interface ResolvedModule {
  /** Module name (underscores). */
  name: string;
  /** Path relative to /lib/modules (`<release>/kernel/...ko`). */
  path: string;
}

/** Pure: module names compare with `-` and `_` equal. */
export function moduleName(fileOrName: string): string {
  return posix.basename(fileOrName).replace(/\.ko(\.(xz|zst|gz))?$/, '').replace(/-/g, '_');
}

async function walk(dir: string, acc: string[] = []): Promise<string[]> {
  for (const ent of await readdir(dir, { withFileTypes: true })) {
    const p = join(dir, ent.name);
    if (ent.isDirectory()) await walk(p, acc);
    else if (ent.isFile()) acc.push(p);
  }
  return acc;
}

/**
 * Pure: the modules to load, dependencies first (`deps` maps a module to the
 * modules it depends on). Built-in names are dropped. Throws on a missing
 * module or a dependency cycle.
 */
export function moduleOrder(wanted: readonly string[], deps: (name: string) => string[] | undefined, builtin: ReadonlySet<string>): string[] {
  const order: string[] = [];
  const state = new Map<string, 'visiting' | 'done'>();
  const visit = (raw: string, chain: string[]) => {
    const name = moduleName(raw);
    if (builtin.has(name) || state.get(name) === 'done') return;
    if (state.get(name) === 'visiting') throw new Error(`module dependency cycle: ${[...chain, name].join(' -> ')}`);
    const d = deps(name);
    if (d === undefined) throw new Error(`module ${name} is neither built in nor in the kernel package`);
    state.set(name, 'visiting');
    for (const dep of d) visit(dep, [...chain, name]);
    state.set(name, 'done');
    order.push(name);
  };
  for (const w of wanted) visit(w, []);
  return order;
}

/** The wanted modules and their dependencies (from `.modinfo`), in load order. The .deb ships no modules.dep. */
async function resolveModules(modulesRoot: string, wanted: readonly string[]): Promise<ResolvedModule[]> {
  const files = new Map<string, string>();
  for (const f of await walk(join(modulesRoot, 'kernel'))) {
    if (/\.ko$/.test(f)) files.set(moduleName(f), f);
    else if (/\.ko\.(xz|zst|gz)$/.test(f)) {
      // Debian bookworm ships uncompressed modules; busybox insmod could not load these anyway.
      throw new FastGuestError('EFASTGUEST', `compressed kernel module ${f}: not supported by the fast guest builder`);
    }
  }
  const builtin = new Set(
    (await readFile(join(modulesRoot, 'modules.builtin'), 'utf8').catch(() => ''))
      .split('\n')
      .filter(Boolean)
      .map(moduleName),
  );
  const depCache = new Map<string, string[]>();
  const deps = (name: string): string[] | undefined => depCache.get(name) ?? (files.has(name) ? [] : undefined);
  // Read the .modinfo of the wanted modules' closure first; moduleOrder then works on that map.
  const pending = wanted.map(moduleName);
  while (pending.length > 0) {
    const name = pending.pop() as string;
    if (depCache.has(name) || builtin.has(name)) continue;
    const file = files.get(name);
    if (!file) continue; // moduleOrder reports it
    const info = modinfo(await readFile(file));
    const d = (info.get('depends')?.[0] ?? '').split(',').map((s) => s.trim()).filter(Boolean).map(moduleName);
    depCache.set(name, d);
    pending.push(...d);
  }
  let order: string[];
  try {
    order = moduleOrder(wanted, deps, builtin);
  } catch (cause) {
    throw new FastGuestError('EFASTGUEST', `kernel modules: ${(cause as Error).message}`, { cause });
  }
  const release = posix.basename(modulesRoot);
  return order.map((name) => ({ name, path: posix.join(release, relative(modulesRoot, files.get(name) as string).split('\\').join('/')) }));
}

// ---------------------------------------------------------------------------
// initramfs (newc cpio)

export interface CpioEntry {
  /** Path inside the archive, without a leading slash. */
  name: string;
  /** Full st_mode: type bits and permissions. */
  mode: number;
  /** File contents or symlink target. */
  data?: Uint8Array;
  rdevMajor?: number;
  rdevMinor?: number;
}

export const S_IFDIR = 0o040000;
export const S_IFREG = 0o100000;
export const S_IFLNK = 0o120000;
export const S_IFCHR = 0o020000;

function hex8(n: number): string {
  return n.toString(16).padStart(8, '0');
}

function pad4(n: number): number {
  return (4 - (n % 4)) % 4;
}

/**
 * Pure: a newc ("070701") cpio archive of `entries`, in order, owned by root,
 * mtime 0 (so equal inputs give equal bytes). Parents must come before children.
 */
export function newcArchive(entries: readonly CpioEntry[]): Buffer {
  const parts: Buffer[] = [];
  const push = (e: CpioEntry, ino: number) => {
    const data = e.data ?? new Uint8Array(0);
    const name = Buffer.from(e.name + '\0', 'utf8');
    const isDir = (e.mode & 0o170000) === S_IFDIR;
    const header =
      '070701' +
      [ino, e.mode, 0, 0, isDir ? 2 : 1, 0, data.length, 0, 0, e.rdevMajor ?? 0, e.rdevMinor ?? 0, name.length, 0].map(hex8).join('');
    parts.push(Buffer.from(header, 'ascii'), name, Buffer.alloc(pad4(110 + name.length)));
    if (data.length > 0) parts.push(Buffer.from(data), Buffer.alloc(pad4(data.length)));
  };
  entries.forEach((e, i) => push(e, i + 1));
  push({ name: 'TRAILER!!!', mode: 0 }, 0);
  return Buffer.concat(parts);
}

async function initramfsEntries(
  busybox: string,
  modulesRoot: string,
  release: string,
  modules: ResolvedModule[],
): Promise<CpioEntry[]> {
  const files: CpioEntry[] = [];
  const dirs = new Set<string>();
  const addDirs = (path: string) => {
    const parts = path.split('/');
    for (let i = 1; i < parts.length; i++) dirs.add(parts.slice(0, i).join('/'));
  };
  const file = (name: string, mode: number, data: Uint8Array) => {
    addDirs(name);
    files.push({ name, mode: S_IFREG | mode, data });
  };

  for (const d of ['bin', 'sbin', 'usr/bin', 'usr/sbin', 'dev', 'proc', 'sys', 'run', 'tmp', 'etc', 'var', 'root']) addDirs(`${d}/x`);
  files.push({ name: 'dev/console', mode: S_IFCHR | 0o600, rdevMajor: 5, rdevMinor: 1 });
  file('bin/busybox', 0o755, await readFile(busybox));
  file('init', 0o755, Buffer.from(FASTGUEST_INIT));
  file('etc/acpi/PWRF/00000080', 0o755, Buffer.from(FASTGUEST_POWER_HANDLER));
  file('etc/goship/modules', 0o644, Buffer.from(modules.map((m) => m.path).join('\n') + '\n'));
  for (const m of modules) {
    file(`lib/modules/${m.path}`, 0o644, await readFile(join(modulesRoot, posix.relative(release, m.path))));
  }

  for (const applet of await busyboxApplets(busybox)) {
    if (applet === 'bin/busybox') continue;
    addDirs(applet);
    files.push({ name: applet, mode: S_IFLNK | 0o777, data: Buffer.from('/bin/busybox') });
  }

  const dirEntries: CpioEntry[] = [...dirs].sort().map((name) => ({ name, mode: S_IFDIR | 0o755 }));
  // First entry wins: an applet symlink never replaces a directory or one of our files.
  const taken = new Set(dirEntries.map((d) => d.name));
  const out: CpioEntry[] = [...dirEntries];
  for (const f of files) {
    if (taken.has(f.name)) continue;
    taken.add(f.name);
    out.push(f);
  }
  return out;
}
