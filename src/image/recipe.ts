/**
 * What goes into a built image, as data and pure functions: the package list,
 * the texts baked into the root tree (the customize hook, unit files, cloud-init
 * and initramfs settings, the boot probe), the mmdebstrap argv and the cache
 * key over all of it. build.ts carries them out. Every text here is part of the
 * key: changing one rebuilds the image.
 */
import { createHash } from 'node:crypto';
import type { Issue } from '../errors.ts';
import { AGENT_GUEST_PATH, AGENT_START_GUEST_PATH, AGENT_UNIT, AGENT_UNIT_GUEST_PATH, AGENT_UNIT_NAME } from './agent-unit.ts';
import { AGENT_START_SCRIPT } from './agent-start.ts';

/** Bump whenever the build changes in a way the other key inputs do not capture. */
export const IMAGE_BUILDER_VERSION = 1;

/** The file system label of the root file system; the kernel command line mounts it by label. */
export const ROOT_LABEL = 'goship-root';

/** The host name of a built image's guest until cloud-init (or a clone's identity) names it. */
export const IMAGE_HOSTNAME = 'goship';

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
  // the kernel and a small initramfs (virtio modules and ext4 only, zstd); the generic kernel, not the
  // cloud one: it has CONFIG_VMGENID, so a clone of a template reseeds its RNG (docs/templates.md)
  'linux-image-amd64',
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

/** Modules in the initramfs (MODULES=list): root disk and its file system, seed, agent port. */
export const INITRAMFS_MODULES: readonly string[] = [
  'ext4',
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
export const PRESET = `# GoShip: dockerd starts on first use of /run/docker.sock (docker.socket).
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
export const CUSTOMIZE_SCRIPT = `#!/bin/sh
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
echo ${IMAGE_HOSTNAME} > "$root/etc/hostname"
printf '127.0.0.1\\tlocalhost\\n127.0.1.1\\t${IMAGE_HOSTNAME}\\n::1\\tlocalhost ip6-localhost ip6-loopback\\n' > "$root/etc/hosts"
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
export const PROBE_SCRIPT = `#!/bin/sh
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

/** Root file system size: the files plus 25% and 256 MiB for growth, in whole MiB. Pure. */
export function fsSizeFor(usedBytes: number): number {
  const MiB = 1024 * 1024;
  return Math.ceil((usedBytes * 1.25 + 256 * MiB) / MiB) * MiB;
}
