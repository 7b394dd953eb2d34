/**
 * Builds a base image from Debian packages:
 *
 *   mmdebstrap (minbase + packages, customize hook)  → a root tree
 *   mkfs.ext4 -d TREE -L goship-root                 → a sized raw file
 *   qemu-img convert -c -O qcow2                     → base.qcow2
 *   + vmlinuz, initrd.img (direct kernel boot) and manifest.json
 *
 * The image boots lean under TCG: the guest agent is a systemd unit wanted by
 * sysinit.target (not behind cloud-init), timers and daemons that only cost
 * time at boot are masked or socket-activated, and a small initramfs holds only
 * the virtio modules. See docs/images.md for the measured timeline.
 *
 * Builds are cached: the key hashes every input (builder version, suite,
 * mirrors, package list, the agent bundle, the customisation texts). A build
 * with the key of the existing image returns it at once. A build happens in a
 * private directory inside imagesDir and is renamed into place, so a killed
 * build never leaves a half image.
 *
 * Needs root (mmdebstrap's root mode writes a directory with real ownership,
 * which `mkfs.ext4 -d` copies as is).
 */
import { createHash, randomBytes } from 'node:crypto';
import { chmod, copyFile, mkdir, readdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { ValidationError } from '../errors.ts';
import { ImageError } from './errors.ts';
import type { Issue } from '../errors.ts';
import { FILES } from '../layout.ts';
import { AGENT_GUEST_PATH, AGENT_START_GUEST_PATH, AGENT_UNIT, AGENT_UNIT_GUEST_PATH, AGENT_UNIT_NAME } from './agent-unit.ts';
import { AGENT_START_SCRIPT } from './agent-start.ts';
import { MANIFEST_FORMAT, readManifest, sha256File, writeManifest } from './manifest.ts';
import type { ImageManifest } from './manifest.ts';
import { PHASE_START } from './progress.ts';
import type { BuildPhase, ProgressListener } from './progress.ts';
import { imageInfoFromDir, staleWorkDirs, validateImageName } from './catalog.ts';
import type { ImageInfo } from './catalog.ts';

/** Bump whenever the build changes in a way the other key inputs do not capture. */
export const IMAGE_BUILDER_VERSION = 1;

/** The file system label of the root file system; the kernel command line mounts it by label. */
export const ROOT_LABEL = 'goship-root';

/**
 * Kernel command line of built images. `root=LABEL=…` does not depend on the
 * order of virtio disks (the seed may be a second virtio disk). `panic=-1`
 * reboots at once on a panic: with QEMU's `-no-reboot` that is an exit, not a hang.
 */
export const DEFAULT_CMDLINE = `root=LABEL=${ROOT_LABEL} rw rootfstype=ext4 console=ttyS0 panic=-1`;

/** Debian's default mirror. */
export const DEFAULT_MIRROR = 'http://deb.debian.org/debian';
/** Debian's security archive. */
export const DEFAULT_SECURITY_MIRROR = 'http://deb.debian.org/debian-security';

/**
 * What goes into the default image, and why (docs/images.md has the long form).
 * `mmdebstrap --variant=minbase` adds the Essential and Priority: required set.
 */
export const DEFAULT_PACKAGES: readonly string[] = [
  // boot: systemd as PID 1, udev for devices, dbus for logind (the ACPI power button)
  'systemd-sysv',
  'udev',
  'dbus',
  'kmod',
  // the kernel and a small initramfs (virtio modules only, zstd)
  'linux-image-cloud-amd64',
  'initramfs-tools',
  'zstd',
  'e2fsprogs',
  // provisioning: cloud-init (NoCloud seed), with networkd as its network renderer
  'cloud-init',
  'systemd-resolved',
  'iproute2',
  'netbase',
  'ca-certificates',
  'sudo',
  // the agent's runtime (Node 18 on bookworm)
  'nodejs',
  // workloads and access
  'docker.io',
  // dockerd confines containers (build steps too) with AppArmor when the kernel has it on:
  // without apparmor_parser, every RUN step of a build fails.
  'apparmor',
  'openssh-server',
  'procps',
];

/** Modules in the initramfs (MODULES=list): root disk, seed, agent port. ext4 is built into the cloud kernel. */
export const INITRAMFS_MODULES: readonly string[] = [
  'virtio_pci',
  'virtio_blk',
  'virtio_scsi',
  'sr_mod',
  'isofs',
  'virtio_console',
  'virtio_rng',
];

/** Units that cost boot time under TCG and are not needed in a project VM: masked. */
export const MASKED_UNITS: readonly string[] = [
  'apt-daily.timer',
  'apt-daily-upgrade.timer',
  'dpkg-db-backup.timer',
  'e2scrub_all.timer',
  'e2scrub_reap.service',
  'fstrim.timer',
  'man-db.timer',
  // no VGA console in a GoShip VM (-nodefaults); the serial getty stays
  'getty@tty1.service',
  // with an empty /etc/machine-id the first boot would prompt on the console
  'systemd-firstboot.service',
  // systemd's static module loads for hardware a GoShip VM does not have: no
  // display (-nodefaults), no EFI (SeaBIOS). Seconds of modprobe at sysinit under TCG.
  'modprobe@drm.service',
  'modprobe@efi_pstore.service',
];

/**
 * systemd generators a GoShip VM has no use for (no encrypted, verity or
 * integrity volumes, no hibernation, no GPT auto-mounts: the root is on the
 * kernel's command line, the rest in fstab; no SysV scripts without a native
 * unit, no rc.local, no offline updates, no `systemd.run=`/debug-shell
 * cmdlines). Every generator runs at each boot and at each daemon-reload;
 * under TCG each exec costs about 0.2 s, and a reload (which a process app's
 * deploy may need) took 4.8 s with all of them. Masked the way
 * systemd.generator(7) says: a link to /dev/null of the same name in
 * /etc/systemd/system-generators. fstab, getty and cloud-init's stay.
 */
export const MASKED_GENERATORS: readonly string[] = [
  'systemd-cryptsetup-generator',
  'systemd-debug-generator',
  'systemd-gpt-auto-generator',
  'systemd-hibernate-resume-generator',
  'systemd-integritysetup-generator',
  'systemd-rc-local-generator',
  'systemd-run-generator',
  'systemd-system-update-generator',
  'systemd-sysv-generator',
  'systemd-veritysetup-generator',
];

/**
 * Modules udev would load at coldplug because the CPU (QEMU's `-cpu max`)
 * advertises a feature: nested KVM, a cpufreq driver, SIMD crypto. Useless in a
 * GoShip VM, and under TCG each load takes seconds of CPU while the agent and
 * cloud-init start. Worse, they are still loading when a reboot comes soon
 * after boot: systemd-shutdown's SIGTERM cannot interrupt a module load, so the
 * shutdown waited 2–8 s for `kvm: Nested Virtualization enabled` and
 * `powernow_k8` (docs/images.md, "Reboots"). Blacklisted: ignored when udev or
 * a kernel request resolves an alias; `modprobe NAME` still loads them.
 * crc32c_intel stays (ext4 and jbd2 checksums use it).
 */
export const BLACKLISTED_MODULES: readonly string[] = [
  'kvm_amd',
  'kvm_intel',
  'powernow_k8',
  'acpi_cpufreq',
  'aesni_intel',
  'ghash_clmulni_intel',
  'crc32_pclmul',
  'crct10dif_pclmul',
  'sha1_ssse3',
  'sha256_ssse3',
  'sha512_ssse3',
];

/** `/etc/modprobe.d/goship.conf`. */
export const MODPROBE_CONF = `# GoShip: modules udev would autoload from CPU features; useless in a VM, slow under TCG.
${BLACKLISTED_MODULES.map((m) => `blacklist ${m}`).join('\n')}
`;

/** Started on first use (docker.socket) instead of at boot. */
export const SOCKET_ACTIVATED_UNITS: readonly string[] = ['docker.service', 'containerd.service'];

/** cloud-init settings of built images (`/etc/cloud/cloud.cfg.d/90-goship.cfg`). */
export const CLOUD_CFG = `# GoShip: the only datasource is the NoCloud seed (a cidata volume) GoShip attaches;
# no network metadata services are probed. None keeps cloud-init running without a seed.
datasource_list: [ NoCloud, None ]
# RSA host keys take seconds to generate under TCG; ed25519 and ecdsa are enough.
ssh_genkeytypes: [ ed25519, ecdsa ]
# The image has no locales package: C.UTF-8 needs no locale-gen.
locale: C.UTF-8
`;

/** Overrides systemd's defaults for our units, so a first-boot preset cannot re-enable them. */
const PRESET = `# GoShip: dockerd starts on first use of /run/docker.sock (docker.socket).
${SOCKET_ACTIVATED_UNITS.map((u) => `disable ${u}`).join('\n')}
enable docker.socket
enable ${AGENT_UNIT_NAME}
enable systemd-networkd.service
enable systemd-resolved.service
`;

/** systemd-networkd-wait-online: any one link is enough, and give up after 20 s. */
export const WAIT_ONLINE_DROPIN = `[Service]
ExecStart=
ExecStart=/lib/systemd/systemd-networkd-wait-online --any --timeout=20
`;

/** initramfs-tools configuration: only the listed modules, zstd, no resume device to wait for. */
export const INITRAMFS_CONF = `MODULES=list
COMPRESS=zstd
RESUME=none
`;

/**
 * The customisation, run by mmdebstrap as a customize hook after every package
 * is installed. `$1` is the image's root; `$GOSHIP_STAGE` holds the files it
 * installs (written by buildImage). A fixed text: nothing from the user is
 * interpolated into it.
 */
const CUSTOMIZE_SCRIPT = `#!/bin/sh
set -eu
root=$1
stage=$GOSHIP_STAGE
in_root() { chroot "$root" "$@"; }

# The guest agent, started early (WantedBy=sysinit.target), through its start
# script. Not in an image built as if imported (bakeAgent: false): cloud-init installs it.
if [ -f "$stage/agent.mjs" ]; then
  install -d -m 0755 "$root${dirOf(AGENT_GUEST_PATH)}"
  install -m 0755 "$stage/agent.mjs" "$root${AGENT_GUEST_PATH}"
  install -m 0755 "$stage/agent-start" "$root${AGENT_START_GUEST_PATH}"
  install -m 0644 "$stage/agent.service" "$root${AGENT_UNIT_GUEST_PATH}"
  in_root systemctl enable ${AGENT_UNIT_NAME}
fi

# Root file system, host name (cloud-init sets the real one), machine id.
printf 'LABEL=${ROOT_LABEL} / ext4 rw,errors=remount-ro 0 0\\n' > "$root/etc/fstab"
echo goship > "$root/etc/hostname"
printf '127.0.0.1\\tlocalhost\\n127.0.1.1\\tgoship\\n::1\\tlocalhost ip6-localhost ip6-loopback\\n' > "$root/etc/hosts"
# empty: every VM gets its own machine id at first boot
: > "$root/etc/machine-id"
rm -f "$root/var/lib/dbus/machine-id"
# every VM gets its own SSH host keys from cloud-init
rm -f "$root"/etc/ssh/ssh_host_*_key "$root"/etc/ssh/ssh_host_*_key.pub

# cloud-init: NoCloud only.
install -m 0644 "$stage/cloud.cfg" "$root/etc/cloud/cloud.cfg.d/90-goship.cfg"

# Network: systemd-networkd (cloud-init renders .network files) and resolved.
in_root systemctl enable systemd-networkd.service systemd-resolved.service
install -d "$root/etc/systemd/system/systemd-networkd-wait-online.service.d"
install -m 0644 "$stage/wait-online.conf" "$root/etc/systemd/system/systemd-networkd-wait-online.service.d/goship.conf"

# Lean boot under TCG.
install -d "$root/etc/systemd/system-preset"
install -m 0644 "$stage/goship.preset" "$root/etc/systemd/system-preset/10-goship.preset"
in_root systemctl mask ${MASKED_UNITS.join(' ')}
install -d "$root/etc/systemd/system-generators"
for g in ${MASKED_GENERATORS.join(' ')}; do ln -sf /dev/null "$root/etc/systemd/system-generators/$g"; done
# (Only where docker is in the package list: an image may be built without it.)
if [ -e "$root/lib/systemd/system/docker.socket" ]; then
  in_root systemctl disable ${SOCKET_ACTIVATED_UNITS.join(' ')}
  in_root systemctl enable docker.socket
fi

# No CPU-feature module autoloads (nested KVM, cpufreq, SIMD crypto).
install -m 0644 "$stage/modprobe.conf" "$root/etc/modprobe.d/goship.conf"

# A small initramfs: the virtio modules only.
install -m 0644 "$stage/initramfs.conf" "$root/etc/initramfs-tools/conf.d/goship.conf"
install -m 0644 "$stage/initramfs-modules" "$root/etc/initramfs-tools/modules"
in_root update-initramfs -u -k all
`;

/** The virtio-serial port name the boot probe writes to (when a VM has it). */
export const PROBE_PORT_NAME = 'org.goship.probe.0';

/**
 * The boot probe (option `bootProbe`, for measurements): a shell unit as early
 * as the agent that writes its uptime to the serial console and to the
 * virtio-serial port PROBE_PORT_NAME, if the VM has one.
 */
const PROBE_SCRIPT = `#!/bin/sh
line="goship-probe: early unit up=$(cut -d' ' -f1 /proc/uptime)"
echo "$line" > /dev/ttyS0
for f in /sys/class/virtio-ports/*/name; do
  [ -r "$f" ] && [ "$(cat "$f")" = "${PROBE_PORT_NAME}" ] || continue
  d=\${f%/name}
  echo "$line" > "/dev/\${d##*/}"
done
`;

export const PROBE_UNIT = `[Unit]
Description=GoShip boot probe
DefaultDependencies=no
After=systemd-remount-fs.service

[Service]
# simple, not oneshot: a write on the port blocks until the host connects
Type=simple
ExecStart=/usr/local/lib/goship/boot-probe

[Install]
WantedBy=sysinit.target
`;

/** Installs the probe when the stage has it (a separate hook, so the main script is the same with or without it). */
export const PROBE_HOOK_SCRIPT = `#!/bin/sh
set -eu
install -d -m 0755 "$1/usr/local/lib/goship"
install -m 0755 "$GOSHIP_STAGE/boot-probe" "$1/usr/local/lib/goship/boot-probe"
install -m 0644 "$GOSHIP_STAGE/boot-probe.service" "$1/etc/systemd/system/goship-boot-probe.service"
chroot "$1" systemctl enable goship-boot-probe.service
`;

function dirOf(path: string): string {
  return path.slice(0, path.lastIndexOf('/'));
}

export interface BuildImageOptions {
  /** Image name (1–63 of a-z, 0-9, `-`). Default `default`. */
  name?: string;
  /** Debian suite. Default `bookworm`. */
  suite?: string;
  /** Replaces the default package list. */
  packages?: readonly string[];
  /** Added to the package list. */
  extraPackages?: readonly string[];
  /** The bundled guest agent (dist/goship-agent.mjs). */
  agentBundle: string;
  /** Where images live (Layout.imagesDir). */
  imagesDir: string;
  /** Debian mirror. Default deb.debian.org. */
  mirror?: string;
  /**
   * A directory of .deb files shared between builds: filled after a build,
   * used by the next one (saves the downloads). Does not change the image.
   */
  debCacheDir?: string;
  /** Per-phase progress. */
  onProgress?: ProgressListener;
  /** Rebuild even if the image exists with the same key. */
  force?: boolean;
  /** Also bake the boot probe (measurements; see PROBE_UNIT). Part of the key. */
  bootProbe?: boolean;
  /**
   * Bake the guest agent in (default true). false builds an image as a foreign
   * cloud image would arrive: no agent, cloud-init installs it (tests of `image import`).
   */
  bakeAgent?: boolean;
}

export interface KeyInputs {
  builderVersion: number;
  suite: string;
  mirrors: readonly string[];
  packages: readonly string[];
  agentSha256: string;
  texts: readonly string[];
}

/** The cache key: sha256 over every input, in a fixed order. Pure. */
export function imageCacheKey(inputs: KeyInputs): string {
  const h = createHash('sha256');
  const part = (label: string, value: string): void => {
    h.update(`${label}\0${value.length}\0${value}\0`);
  };
  part('builder', String(inputs.builderVersion));
  part('suite', inputs.suite);
  for (const m of inputs.mirrors) part('mirror', m);
  for (const p of [...new Set(inputs.packages)].sort()) part('package', p);
  part('agent', inputs.agentSha256);
  for (const t of inputs.texts) part('text', t);
  return h.digest('hex');
}

/** Every text baked into an image, in key order. */
export function customisationTexts(cmdline: string = DEFAULT_CMDLINE, bootProbe = false): string[] {
  const probe = bootProbe ? [PROBE_HOOK_SCRIPT, PROBE_SCRIPT, PROBE_UNIT] : [];
  return [
    ...probe,
    CUSTOMIZE_SCRIPT,
    AGENT_UNIT,
    AGENT_START_SCRIPT,
    CLOUD_CFG,
    PRESET,
    WAIT_ONLINE_DROPIN,
    INITRAMFS_CONF,
    INITRAMFS_MODULES.join('\n'),
    MODPROBE_CONF,
    cmdline,
  ];
}

/** The apt sources for a suite (one-line format), as mmdebstrap takes them. */
export function mirrorsFor(suite: string, mirror: string = DEFAULT_MIRROR): string[] {
  const list = [`deb ${mirror} ${suite} main`, `deb ${mirror} ${suite}-updates main`];
  if (mirror === DEFAULT_MIRROR) list.push(`deb ${DEFAULT_SECURITY_MIRROR} ${suite}-security main`);
  return list;
}

const PACKAGE_RE = /^[a-z0-9][a-z0-9+.-]+$/;
const SUITE_RE = /^[a-z][a-z0-9-]{1,30}$/;
const MIRROR_RE = /^https?:\/\/[A-Za-z0-9.-]+(:\d+)?(\/[A-Za-z0-9._~/-]*)?$/;

/** Validates the package list, suite and mirror: every problem at once. Pure. */
export function validateBuildInputs(o: { suite: string; packages: readonly string[]; extraPackages?: readonly string[]; mirror: string }): Issue[] {
  const issues: Issue[] = [];
  if (!SUITE_RE.test(o.suite)) issues.push({ path: 'suite', message: `expected a Debian suite name like bookworm, got ${JSON.stringify(o.suite)}` });
  if (!MIRROR_RE.test(o.mirror)) issues.push({ path: 'mirror', message: `expected an http(s) URL, got ${JSON.stringify(o.mirror)}` });
  if (o.packages.length === 0) issues.push({ path: 'packages', message: 'the package list is empty' });
  const check = (list: readonly string[], field: string): void =>
    list.forEach((p, i) => {
      if (!PACKAGE_RE.test(p)) issues.push({ path: `${field}[${i}]`, message: `not a Debian package name: ${JSON.stringify(p)}` });
    });
  check(o.packages, 'packages');
  check(o.extraPackages ?? [], 'extraPackages');
  return issues;
}

/** The paths mmdebstrap is told to skip, to keep the image small (dpkg path-exclude). */
export const DPKG_EXCLUDES: readonly string[] = [
  'path-exclude=/usr/share/man/*',
  'path-exclude=/usr/share/info/*',
  'path-exclude=/usr/share/doc/*',
  'path-include=/usr/share/doc/*/copyright',
  'path-exclude=/usr/share/locale/*',
  'path-include=/usr/share/locale/locale.alias',
];

/** The mmdebstrap argv (without the program). Pure. */
export function mmdebstrapArgs(o: {
  suite: string;
  packages: readonly string[];
  mirrors: readonly string[];
  tree: string;
  debCache: boolean;
  bootProbe?: boolean;
}): string[] {
  const args = [
    '--variant=minbase',
    '--mode=root',
    '--format=directory',
    `--include=${[...new Set(o.packages)].sort().join(',')}`,
    ...DPKG_EXCLUDES.map((d) => `--dpkgopt=${d}`),
    // The hook runs under sh; every path reaches it through the environment.
    '--customize-hook="$GOSHIP_STAGE/customize.sh" "$1"',
  ];
  if (o.bootProbe) args.push('--customize-hook="$GOSHIP_STAGE/probe-hook.sh" "$1"');
  if (o.debCache) {
    args.push(
      '--skip=download/empty',
      '--skip=essential/unlink',
      '--setup-hook=mkdir -p "$1/var/cache/apt/archives" && find "$GOSHIP_DEB_CACHE" -maxdepth 1 -name "*.deb" -exec cp -t "$1/var/cache/apt/archives/" {} +',
      '--customize-hook=find "$1/var/cache/apt/archives" -maxdepth 1 -name "*.deb" -exec cp -n -t "$GOSHIP_DEB_CACHE/" {} +',
    );
  }
  args.push(o.suite, o.tree, ...o.mirrors);
  return args;
}

/** Builds (or finds cached) the image `name` in imagesDir. */
export async function buildImage(opts: BuildImageOptions): Promise<ImageInfo> {
  const started = Date.now();
  const name = opts.name ?? 'default';
  const suite = opts.suite ?? 'bookworm';
  const mirror = opts.mirror ?? DEFAULT_MIRROR;
  const packages = [...new Set([...(opts.packages ?? DEFAULT_PACKAGES), ...(opts.extraPackages ?? [])])].sort();
  const imagesDir = resolve(opts.imagesDir);
  const report = (phase: BuildPhase, message: string, fraction = PHASE_START[phase]): void => {
    opts.onProgress?.({ phase, message, fraction });
  };

  validateImageName(name);
  const issues = validateBuildInputs({ suite, packages: opts.packages ?? DEFAULT_PACKAGES, extraPackages: opts.extraPackages ?? [], mirror });
  if (issues.length > 0) throw new ValidationError(issues, { subject: 'cannot build image' });

  report('check', 'checking the host and the inputs');
  const agentBundle = resolve(opts.agentBundle);
  let agentSha256: string;
  try {
    agentSha256 = await sha256File(agentBundle);
  } catch (cause) {
    throw new ImageError('EAGENT_BUNDLE', `cannot read the agent bundle ${agentBundle}: ${(cause as Error).message}`, {
      hint: 'build it: npm run build (writes dist/goship-agent.mjs)',
      cause,
    });
  }
  const mirrors = mirrorsFor(suite, mirror);
  const cmdline = DEFAULT_CMDLINE;
  const bakeAgent = opts.bakeAgent !== false;
  const key = imageCacheKey({ builderVersion: IMAGE_BUILDER_VERSION, suite, mirrors, packages, agentSha256: bakeAgent ? agentSha256 : 'not baked', texts: customisationTexts(cmdline, opts.bootProbe === true) });

  const finalDir = join(imagesDir, name);
  if (!opts.force) {
    const existing = await readManifest(finalDir).catch(() => undefined);
    if (existing?.key === key && (await isFile(join(finalDir, FILES.imageBase)))) {
      report('cached', `image ${name} is up to date (key ${key.slice(0, 12)})`, 1);
      return imageInfoFromDir(finalDir, name);
    }
  }

  await checkHost();
  await mkdir(imagesDir, { recursive: true, mode: 0o700 });
  await sweepStaleBuilds(imagesDir);
  const work = join(imagesDir, `.build-${process.pid}-${randomBytes(4).toString('hex')}`);
  await mkdir(work, { mode: 0o700 });
  const stage = join(work, 'stage');
  const tree = join(work, 'tree');
  const out = join(work, 'out');
  try {
    await mkdir(stage);
    await mkdir(out);
    if (bakeAgent) {
      await copyFile(agentBundle, join(stage, 'agent.mjs'));
      await writeFile(join(stage, 'agent-start'), AGENT_START_SCRIPT);
      await writeFile(join(stage, 'agent.service'), AGENT_UNIT);
    }
    await writeFile(join(stage, 'cloud.cfg'), CLOUD_CFG);
    await writeFile(join(stage, 'goship.preset'), PRESET);
    await writeFile(join(stage, 'wait-online.conf'), WAIT_ONLINE_DROPIN);
    await writeFile(join(stage, 'initramfs.conf'), INITRAMFS_CONF);
    await writeFile(join(stage, 'initramfs-modules'), `${INITRAMFS_MODULES.join('\n')}\n`);
    await writeFile(join(stage, 'modprobe.conf'), MODPROBE_CONF);
    await writeFile(join(stage, 'customize.sh'), CUSTOMIZE_SCRIPT);
    await chmod(join(stage, 'customize.sh'), 0o755);
    if (opts.bootProbe) {
      await writeFile(join(stage, 'probe-hook.sh'), PROBE_HOOK_SCRIPT, { mode: 0o755 });
      await writeFile(join(stage, 'boot-probe'), PROBE_SCRIPT, { mode: 0o755 });
      await writeFile(join(stage, 'boot-probe.service'), PROBE_UNIT);
    }
    if (opts.debCacheDir) await mkdir(opts.debCacheDir, { recursive: true });

    // 1. bootstrap + customise (mmdebstrap runs the customize hook)
    report('bootstrap', `mmdebstrap ${suite}: ${packages.length} packages`);
    await runMmdebstrap({ suite, packages, mirrors, tree, stage, debCacheDir: opts.debCacheDir, bootProbe: opts.bootProbe === true, report });

    // 2. kernel and initrd out of the tree
    report('kernel', 'copying the kernel and the initramfs');
    const kernelVersion = await copyKernel(tree, out);

    // 3. ext4 from the tree
    const raw = join(work, 'root.raw');
    const used = await duBytes(tree);
    const sizeBytes = fsSizeFor(used);
    report('mkfs', `mkfs.ext4: ${mib(used)} MiB of files in a ${mib(sizeBytes)} MiB file system`);
    await writeFile(raw, '');
    const { execa } = await import('execa');
    await execa('truncate', ['-s', String(sizeBytes), raw]);
    await run('mkfs.ext4', ['-q', '-F', '-L', ROOT_LABEL, '-m', '1', '-E', 'lazy_itable_init=1,nodiscard', '-d', tree, raw]);
    await rm(tree, { recursive: true, force: true, maxRetries: 2 }).catch(() => undefined);

    // 4. compressed qcow2
    report('convert', 'qemu-img convert -c -O qcow2 (compressed)');
    const base = join(out, FILES.imageBase);
    await run('qemu-img', ['convert', '-c', '-O', 'qcow2', '-o', 'compression_type=zstd', raw, base]);
    await rm(raw, { force: true });

    report('finish', 'checksum and manifest');
    const sha256 = await sha256File(base);
    const st = await stat(base);
    const manifest: ImageManifest = {
      format: MANIFEST_FORMAT,
      name,
      source: 'built',
      builtAt: new Date().toISOString(),
      suite,
      packages,
      kernelVersion,
      key,
      builderVersion: IMAGE_BUILDER_VERSION,
      agentBaked: bakeAgent,
      ...(bakeAgent ? { agentSha256 } : {}),
      ...(opts.bootProbe ? { bootProbe: true } : {}),
      base: { file: FILES.imageBase, format: 'qcow2', sizeBytes: st.size, virtualSizeBytes: sizeBytes, sha256 },
      kernel: FILES.imageKernel,
      initrd: FILES.imageInitrd,
      cmdline,
      buildSeconds: Math.round((Date.now() - started) / 100) / 10,
    };
    await writeManifest(out, manifest);
    await installDir(out, finalDir, work);
    report('finish', `image ${name} built in ${manifest.buildSeconds} s (${mib(st.size)} MiB)`, 1);
    return imageInfoFromDir(finalDir, name);
  } finally {
    await removeBuildDir(work);
  }
}

/** Root file system size: the files plus 25% and 256 MiB for growth, in whole MiB. Pure. */
export function fsSizeFor(usedBytes: number): number {
  const MiB = 1024 * 1024;
  return Math.ceil((usedBytes * 1.25 + 256 * MiB) / MiB) * MiB;
}

function mib(n: number): number {
  return Math.round(n / (1024 * 1024));
}

async function isFile(path: string): Promise<boolean> {
  try {
    return (await stat(path)).isFile();
  } catch {
    return false;
  }
}

async function checkHost(): Promise<void> {
  if (typeof process.getuid === 'function' && process.getuid() !== 0) {
    throw new ImageError('EIMAGE_BUILD', 'building an image needs root: mmdebstrap writes a root-owned tree that mkfs.ext4 copies as is', {
      hint: 'run it as root (sudo goshipctl image build), or import a cloud image instead: goshipctl image import',
    });
  }
  const missing: string[] = [];
  const { execa } = await import('execa');
  for (const [cmd, pkg] of [
    ['mmdebstrap', 'mmdebstrap'],
    ['mkfs.ext4', 'e2fsprogs'],
    ['qemu-img', 'qemu-utils'],
  ] as const) {
    const r = await execa('sh', ['-c', 'command -v "$1"', 'sh', cmd], { reject: false, env: { PATH: `${process.env.PATH ?? ''}:/usr/sbin:/sbin` } });
    if (r.exitCode !== 0) missing.push(pkg);
  }
  if (missing.length > 0) {
    throw new ImageError('EIMAGE_BUILD', `cannot build an image: missing host tools (${missing.join(', ')})`, {
      hint: `install them: apt-get install -y ${missing.join(' ')}`,
    });
  }
}

async function run(cmd: string, args: string[]): Promise<void> {
  const { execa } = await import('execa');
  const r = await execa(cmd, args, { reject: false, all: true, env: { PATH: `${process.env.PATH ?? ''}:/usr/sbin:/sbin` } });
  if (r.exitCode !== 0) {
    throw new ImageError('EIMAGE_BUILD', `${cmd} failed (exit ${r.exitCode ?? r.signal}): ${tail(r.all ?? '', 15)}`, {
      hint: `the command was: ${[cmd, ...args].join(' ')}`,
    });
  }
}

function tail(text: string, lines: number): string {
  return text.trim().split('\n').slice(-lines).join('\n');
}

async function runMmdebstrap(o: {
  suite: string;
  packages: string[];
  mirrors: string[];
  tree: string;
  stage: string;
  debCacheDir: string | undefined;
  bootProbe: boolean;
  report: (phase: BuildPhase, message: string, fraction?: number) => void;
}): Promise<void> {
  const args = mmdebstrapArgs({ suite: o.suite, packages: o.packages, mirrors: o.mirrors, tree: o.tree, debCache: o.debCacheDir !== undefined, bootProbe: o.bootProbe });
  const { execa } = await import('execa');
  const child = execa('mmdebstrap', args, {
    reject: false,
    env: {
      GOSHIP_STAGE: o.stage,
      ...(o.debCacheDir ? { GOSHIP_DEB_CACHE: resolve(o.debCacheDir) } : {}),
      PATH: `${process.env.PATH ?? ''}:/usr/sbin:/sbin`,
    },
    stdout: 'pipe',
    stderr: 'pipe',
  });
  const lines: string[] = [];
  const steps: Array<[RegExp, BuildPhase, string, number]> = [
    [/downloading packages/i, 'bootstrap', 'downloading packages', 0.08],
    [/extracting archives/i, 'bootstrap', 'extracting the essential packages', 0.2],
    [/installing essential/i, 'bootstrap', 'installing the essential packages', 0.28],
    [/installing remaining|installing packages/i, 'bootstrap', 'installing the packages', 0.4],
    [/running --customize-hook|customize-hook/i, 'customize', 'customising: agent, cloud-init, lean boot, initramfs', PHASE_START.customize],
    [/cleaning up/i, 'customize', 'cleaning up', 0.77],
  ];
  let seen = -1;
  let buffered = '';
  child.stderr?.on('data', (chunk: Buffer) => {
    buffered += chunk.toString('utf8');
    let nl: number;
    while ((nl = buffered.indexOf('\n')) >= 0) {
      const line = buffered.slice(0, nl);
      buffered = buffered.slice(nl + 1);
      lines.push(line);
      if (lines.length > 400) lines.shift();
      steps.forEach(([re, phase, message, fraction], i) => {
        if (i > seen && re.test(line)) {
          seen = i;
          o.report(phase, message, fraction);
        }
      });
    }
  });
  const r = await child;
  if (r.exitCode !== 0) {
    throw new ImageError('EIMAGE_BUILD', `mmdebstrap failed (exit ${r.exitCode ?? r.signal}): ${lines.slice(-20).join('\n')}`, {
      hint: 'check that the Debian archive is reachable and every package name exists in the suite',
    });
  }
}

/** Copies /boot/vmlinuz-* and /boot/initrd.img-* (exactly one kernel) to out; returns the version. */
async function copyKernel(tree: string, out: string): Promise<string> {
  const boot = join(tree, 'boot');
  const kernels = (await readdir(boot)).filter((f) => f.startsWith('vmlinuz-')).sort();
  const kernel = kernels.at(-1);
  if (!kernel) {
    throw new ImageError('EIMAGE_BUILD', 'the image has no kernel in /boot', { hint: 'include a kernel package, e.g. linux-image-cloud-amd64' });
  }
  const version = kernel.slice('vmlinuz-'.length);
  const initrd = join(boot, `initrd.img-${version}`);
  if (!(await isFile(initrd))) {
    throw new ImageError('EIMAGE_BUILD', `the image has no initramfs for kernel ${version}`, { hint: 'include initramfs-tools' });
  }
  await copyFile(join(boot, kernel), join(out, FILES.imageKernel));
  await copyFile(initrd, join(out, FILES.imageInitrd));
  await chmod(join(out, FILES.imageKernel), 0o644);
  await chmod(join(out, FILES.imageInitrd), 0o644);
  return version;
}

/** Disk usage of a tree in bytes (`du -s -B1 -x`: blocks, not apparent size). */
async function duBytes(dir: string): Promise<number> {
  const { execa } = await import('execa');
  const r = await execa('du', ['-s', '-x', '-B1', dir]);
  const n = Number.parseInt(r.stdout.split(/\s/)[0] ?? '', 10);
  if (!Number.isFinite(n)) throw new ImageError('EIMAGE_BUILD', `cannot measure ${dir}: du said ${JSON.stringify(r.stdout)}`);
  return n;
}

/**
 * Puts `out` at `finalDir` with renames only: an existing image is first moved
 * aside into the build directory (and removed with it).
 */
async function installDir(out: string, finalDir: string, work: string): Promise<void> {
  try {
    await rename(out, finalDir);
    return;
  } catch (cause) {
    const code = (cause as NodeJS.ErrnoException).code;
    if (code !== 'ENOTEMPTY' && code !== 'EEXIST') throw cause;
  }
  await rename(finalDir, join(work, 'previous'));
  await rename(out, finalDir);
}

/** Mount points at or below dir (a killed mmdebstrap may leave /proc, /sys, /dev mounted in its tree). */
async function mountsBelow(dir: string): Promise<string[]> {
  const text = await readFile('/proc/self/mountinfo', 'utf8').catch(() => '');
  const prefix = `${dir}/`;
  return text
    .split('\n')
    .map((l) => l.split(' ')[4] ?? '')
    .map((p) => p.replace(/\\(\d{3})/g, (_m, o: string) => String.fromCharCode(Number.parseInt(o, 8))))
    .filter((p) => p === dir || p.startsWith(prefix));
}

/** Removes a build directory, never crossing into a mount (it could be the host's /dev). */
async function removeBuildDir(dir: string): Promise<void> {
  const mounts = await mountsBelow(dir);
  if (mounts.length > 0) {
    // deepest first; lazy, so a busy mount does not block
    const { execa } = await import('execa');
    for (const m of mounts.sort((a, b) => b.length - a.length)) await execa('umount', ['-l', m], { reject: false });
    if ((await mountsBelow(dir)).length > 0) return; // leave it: never delete through a mount
  }
  await rm(dir, { recursive: true, force: true, maxRetries: 2 });
}

/** Removes `.build-PID-*` directories whose process is gone (a killed build). */
export async function sweepStaleBuilds(imagesDir: string): Promise<void> {
  for (const dir of await staleWorkDirs(imagesDir, 'build')) await removeBuildDir(dir);
}
