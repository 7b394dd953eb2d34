/**
 * VmSpec: what a user writes (YAML or JSON), its valibot schema and defaults,
 * and VmConfig: the fully resolved spec that `buildArgv` turns into argv.
 *
 * The schema checks shape and the rules that need no context (name syntax,
 * ranges, enums, size syntax); `resolveSpec` (validate.ts) adds defaults that
 * depend on the host, cross-field rules and the host's facts.
 */
import * as v from 'valibot';
import { parseSize, SIZE_RULE } from './sizes.ts';

// ─── Defaults (named, so docs and code agree) ───────────────────────────────

export const DEFAULT_MACHINE = 'q35';
export const DEFAULT_ACCEL = 'auto';
export const DEFAULT_MEMORY = '1G';
/** `-cpu` when none is given: every feature TCG emulates. */
export const DEFAULT_CPU_MODEL_TCG = 'max';
/** `-cpu` when none is given under KVM: pass the host CPU through. */
export const DEFAULT_CPU_MODEL_KVM = 'host';
export const DEFAULT_DISK_FORMAT = 'qcow2';
export const DEFAULT_DISK_CACHE = 'writeback';
export const DEFAULT_HOST_ADDR = '127.0.0.1';
/** Debian's `ovmf` package (4 MiB flash layout; pair it with OVMF_VARS_4M.fd). */
export const DEFAULT_OVMF_CODE = '/usr/share/OVMF/OVMF_CODE_4M.fd';
/** Where hugetlbfs of each page size is expected to be mounted (`-object memory-backend-file,mem-path=…`). */
export const HUGEPAGE_MOUNTS = { '2M': '/dev/hugepages', '1G': '/dev/hugepages1G' } as const;
/** The smallest guest memory GoShip accepts (`-m`). */
export const MIN_MEMORY_BYTES = 16 * 1024 * 1024;
/** AMD EPYC (Rome, Milan, Genoa): C-bit 51, 1 bit of physical address space lost. */
export const DEFAULT_SEV_CBITPOS = 51;
export const DEFAULT_SEV_REDUCED_PHYS_BITS = 1;
/** SEV: NODBG. SEV-ES: NODBG | ES. SEV-SNP: bit 17 (reserved, must be 1) | SMT allowed. */
export const DEFAULT_SEV_POLICY = { sev: 0x1, 'sev-es': 0x5, 'sev-snp': 0x30000 } as const;
/** virtio-blk's serial is at most 20 bytes (VIRTIO_BLK_ID_BYTES). */
export const DISK_SERIAL_MAX = 20;

/** The machine-type aliases; each stands for the newest versioned type of this QEMU (`q35` → `pc-q35-7.2`). */
export const MACHINES = ['q35', 'pc'] as const;
/** An alias, or a versioned type (`pc-q35-7.2`, `pc-i440fx-7.2`): what GoShip pins when it creates a VM. */
export const MACHINE_PATTERN = /^(q35|pc|pc-q35-\d{1,3}\.\d{1,3}|pc-i440fx-\d{1,3}\.\d{1,3})$/;
export const ACCELS = ['auto', 'kvm', 'tcg'] as const;
export const DISK_FORMATS = ['qcow2', 'raw'] as const;
export const DISK_CACHES = ['none', 'writeback', 'writethrough', 'directsync', 'unsafe'] as const;
export const HUGEPAGE_SIZES = ['2M', '1G'] as const;
export const FIRMWARES = ['bios', 'uefi'] as const;
export const NETWORK_MODES = ['user', 'none'] as const;
export const PROTOCOLS = ['tcp', 'udp'] as const;
export const CONFIDENTIAL_TYPES = ['sev', 'sev-es', 'sev-snp', 'tdx'] as const;
/** What the VM's monitor does when QEMU crashes: nothing, or start it again with backoff. */
export const RESTART_POLICIES = ['no', 'on-crash'] as const;
/** console.log is rotated at this size; `keep` older files stay (console.log.1 …). Two files of 8 MiB by default. */
export const DEFAULT_CONSOLE_MAX_SIZE = '8M';
export const DEFAULT_CONSOLE_KEEP = 1;
/** The smallest console.log cap accepted. */
export const MIN_CONSOLE_MAX_BYTES = 64 * 1024;

export type MachineType = (typeof MACHINES)[number] | `pc-q35-${number}.${number}` | `pc-i440fx-${number}.${number}`;
export type Accel = (typeof ACCELS)[number];
export type DiskFormat = (typeof DISK_FORMATS)[number];
export type DiskCache = (typeof DISK_CACHES)[number];
export type HugepageSize = (typeof HUGEPAGE_SIZES)[number];
export type ConfidentialType = (typeof CONFIDENTIAL_TYPES)[number];
export type RestartPolicy = (typeof RESTART_POLICIES)[number];

// ─── Messages ───────────────────────────────────────────────────────────────

const MAX_SHOWN = 48;

/** How a bad value is quoted in a message: strings in JSON quotes (shortened), others by value or type. */
export function shown(value: unknown): string {
  if (typeof value === 'string') {
    if (value.length > MAX_SHOWN) return `${value.length} characters (${JSON.stringify(value.slice(0, 24))}…)`;
    return JSON.stringify(value);
  }
  if (typeof value === 'number' || typeof value === 'boolean') return String(value);
  if (Array.isArray(value)) return 'an array';
  if (value === null) return 'null';
  if (value === undefined) return 'nothing';
  return typeof value === 'object' ? 'an object' : typeof value;
}

function listed(options: readonly unknown[]): string {
  const q = options.map((o) => (typeof o === 'string' ? `"${o}"` : String(o)));
  return q.length <= 2 ? q.join(' or ') : `${q.slice(0, -1).join(', ')} or ${q.at(-1)}`;
}

// ─── Schema building blocks ─────────────────────────────────────────────────

/** Lowercase letters, digits and `-`, not starting with `-`, 1–63 characters. */
export const NAME_PATTERN = /^[a-z0-9][a-z0-9-]{0,62}$/;
export const NAME_RULE = '1-63 lowercase letters, digits or "-", not starting with "-" (it is used in file names)';
/** A CPU model name as `-cpu help` prints them (`max`, `host`, `EPYC-v4`, `Skylake-Server-IBRS`). */
export const CPU_MODEL_PATTERN = /^[A-Za-z0-9][A-Za-z0-9_.-]*$/;
const IPV4 = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/;
const SERIAL = /^[\x21-\x7e]+$/;

/** An object (never an array) with only the given fields. */
function strict<const E extends v.ObjectEntries>(entries: E) {
  const allowed = Object.keys(entries).join(', ');
  return v.pipe(
    v.custom<Record<string, unknown>>((x) => typeof x === 'object' && x !== null && !Array.isArray(x), (issue) => `expected an object, got ${shown(issue.input)}`),
    v.strictObject(entries, (issue) =>
      issue.expected === 'never' ? `unknown field; allowed fields: ${allowed}` : `expected an object, got ${shown(issue.input)}`,
    ),
  );
}

function oneOf<const T extends readonly (string | number)[]>(options: T) {
  return v.picklist(options, (issue) => `expected ${listed(options)}, got ${shown(issue.input)}`);
}

function bool() {
  return v.boolean((issue) => `expected true or false, got ${shown(issue.input)}`);
}

function int(min: number, max: number) {
  const message = (issue: { input: unknown }) => `expected a whole number from ${min} to ${max}, got ${shown(issue.input)}`;
  return v.pipe(v.number(message), v.integer(message), v.minValue(min, message), v.maxValue(max, message));
}

function name() {
  return v.pipe(
    v.string((issue) => `expected ${NAME_RULE}, got ${shown(issue.input)}`),
    v.check((s) => NAME_PATTERN.test(s), (issue) => `expected ${NAME_RULE}, got ${issue.input === '' ? 'an empty string' : shown(issue.input)}`),
  );
}

/** An absolute path without newlines (it ends up in a QEMU option or argument). */
function absPath() {
  return v.pipe(
    v.string((issue) => `expected an absolute path, got ${shown(issue.input)}`),
    v.check((s) => s.startsWith('/'), (issue) => `expected an absolute path, got ${shown(issue.input)}`),
    v.check((s) => !/[\n\r\0]/.test(s), 'a path must not contain a newline or NUL byte'),
  );
}

function size() {
  return v.pipe(
    v.union([v.string(), v.number()], (issue) => `expected ${SIZE_RULE}, got ${shown(issue.input)}`),
    v.check((s) => parseSize(s).ok, (issue) => {
      const r = parseSize(issue.input);
      return r.ok ? '' : r.message;
    }),
  );
}

// ─── The schema ─────────────────────────────────────────────────────────────

export const CpuSchema = strict({
  /** `-cpu MODEL`. Default: "max" under TCG, "host" under KVM. */
  model: v.optional(
    v.pipe(
      v.string((i) => `expected a CPU model name such as "max", "host" or "EPYC-v4", got ${shown(i.input)}`),
      v.check((s) => CPU_MODEL_PATTERN.test(s), (i) => `expected a CPU model name such as "max", "host" or "EPYC-v4" (letters, digits, "_", ".", "-"), got ${shown(i.input)}`),
    ),
  ),
  /** `-smp cpus=N`. Default 1. */
  count: v.optional(int(1, 1024)),
  /** `-smp sockets=N`. */
  sockets: v.optional(int(1, 1024)),
  /** `-smp cores=N`. */
  cores: v.optional(int(1, 1024)),
  /** `-smp threads=N`. */
  threads: v.optional(int(1, 1024)),
});

export const KernelBootSchema = strict({
  /** `-kernel PATH`: direct kernel boot (no firmware boot loader). */
  kernel: absPath(),
  /** `-initrd PATH`. */
  initrd: v.optional(absPath()),
  /** `-append CMDLINE`. */
  cmdline: v.optional(
    v.pipe(
      v.string((i) => `expected a kernel command line, got ${shown(i.input)}`),
      v.check((s) => !/[\n\r\0]/.test(s), 'the kernel command line must not contain a newline or NUL byte'),
    ),
  ),
});

export const FirmwareBootSchema = strict({
  /** "bios": SeaBIOS (QEMU's default); "uefi": OVMF on two pflash drives (`-machine pflash0=…,pflash1=…`). */
  firmware: oneOf(FIRMWARES),
  /** UEFI only: the read-only OVMF code image (pflash0). Default DEFAULT_OVMF_CODE. */
  ovmfCode: v.optional(absPath()),
  /** UEFI only: this VM's own writable copy of OVMF_VARS (pflash1). Without it, UEFI variables are not kept. */
  ovmfVars: v.optional(absPath()),
});

function isObject(x: unknown): x is Record<string, unknown> {
  return typeof x === 'object' && x !== null && !Array.isArray(x);
}

/** `{kernel, initrd?, cmdline?}` or `{firmware, ovmfCode?, ovmfVars?}`, chosen by the `kernel` key. */
export const BootSchema = v.lazy((input): typeof KernelBootSchema | typeof FirmwareBootSchema =>
  isObject(input) && 'kernel' in input ? KernelBootSchema : FirmwareBootSchema,
);

export const DiskSchema = strict({
  /** The image file: `-blockdev driver=file,filename=PATH`. */
  path: absPath(),
  /** The format node: `-blockdev driver=qcow2|raw`. Default qcow2. */
  format: v.optional(oneOf(DISK_FORMATS), DEFAULT_DISK_FORMAT),
  /** libvirt's cache modes → `cache.direct`, `cache.no-flush` on the nodes, `write-cache` on the device. Default writeback. */
  cache: v.optional(oneOf(DISK_CACHES), DEFAULT_DISK_CACHE),
  /** `discard=unmap` (true, default) or `discard=ignore`. */
  discard: v.optional(bool(), true),
  /** `read-only=on` on both nodes. Default false. */
  readOnly: v.optional(bool(), false),
  /** `-device virtio-blk-pci,serial=…` (`/dev/disk/by-id/virtio-SERIAL`), 1–20 printable ASCII characters. */
  serial: v.optional(
    v.pipe(
      v.string((i) => `expected 1-${DISK_SERIAL_MAX} printable ASCII characters without spaces, got ${shown(i.input)}`),
      v.check((s) => s.length >= 1 && s.length <= DISK_SERIAL_MAX && SERIAL.test(s), (i) => `expected 1-${DISK_SERIAL_MAX} printable ASCII characters without spaces, got ${shown(i.input)}`),
    ),
  ),
});

export const ForwardSchema = strict({
  /** Default tcp. */
  proto: v.optional(oneOf(PROTOCOLS), 'tcp'),
  /** The host port (`hostfwd=tcp:ADDR:HOST-:GUEST`). */
  host: int(1, 65535),
  /** The guest port. */
  guest: int(1, 65535),
  /** The host address to listen on, IPv4 (QEMU 7.2's hostfwd takes IPv4 only). Default 127.0.0.1. */
  hostAddr: v.optional(
    v.pipe(
      v.string((i) => `expected an IPv4 address such as "127.0.0.1" or "0.0.0.0", got ${shown(i.input)}`),
      v.check((s) => IPV4.test(s), (i) => `expected an IPv4 address such as "127.0.0.1" or "0.0.0.0", got ${shown(i.input)}`),
    ),
    DEFAULT_HOST_ADDR,
  ),
});

export const NetworkSchema = strict({
  /** "user": `-netdev user` (slirp) + `-device virtio-net-pci`; "none": no NIC. Default user. */
  mode: v.optional(oneOf(NETWORK_MODES), 'user'),
  /** Host → guest port forwards (`hostfwd=`). */
  forwards: v.optional(v.array(ForwardSchema, (i) => `expected a list of forwards, got ${shown(i.input)}`), []),
});

export const ConfidentialSchema = strict({
  /** `-object sev-guest` (sev, sev-es), `sev-snp-guest` or `tdx-guest`, id cgs0. */
  type: oneOf(CONFIDENTIAL_TYPES),
  /** SEV policy (`policy=`); defaults in DEFAULT_SEV_POLICY. Not for tdx. */
  policy: v.optional(int(0, Number.MAX_SAFE_INTEGER)),
  /** The C-bit position (`cbitpos=`). Default 51. Not for tdx. */
  cbitpos: v.optional(int(1, 63)),
  /** `reduced-phys-bits=`. Default 1. Not for tdx. */
  reducedPhysBits: v.optional(int(0, 63)),
});

/** A virtio-fs tag: what the guest mounts (`mount -t virtiofs TAG DIR`); the kernel takes at most 36 bytes. */
export const FS_TAG_PATTERN = /^[a-z0-9][a-z0-9-]{0,35}$/;
export const FS_TAG_RULE = '1-36 lowercase letters, digits and dashes, starting with a letter or digit';
/** The most shared folders one VM may have. */
export const MAX_FILESYSTEMS = 8;

/** A shared folder: QEMU's side is a vhost-user-fs device; the monitor starts the virtiofsd that serves `source`. */
export const FilesystemSchema = strict({
  /** The tag the guest mounts it by. */
  tag: v.pipe(
    v.string((i) => `expected ${FS_TAG_RULE}, got ${shown(i.input)}`),
    v.check((s) => FS_TAG_PATTERN.test(s), (i) => `expected ${FS_TAG_RULE}, got ${shown(i.input)}`),
  ),
  /** Not a QEMU option: the host directory, served by virtiofsd. */
  source: absPath(),
  /** Not a QEMU option: virtiofsd serves a read-only bind mount of it. Default false. */
  readOnly: v.optional(bool(), false),
});

export const ConsoleLogSchema = strict({
  /** console.log is rotated once it reaches this size. Default 8M. */
  maxSize: v.optional(size(), DEFAULT_CONSOLE_MAX_SIZE),
  /** How many rotated files are kept beside console.log (console.log.1 …). Default 1. */
  keep: v.optional(int(1, 9), DEFAULT_CONSOLE_KEEP),
});

/** Not QEMU options: the VM's cgroup (docs/security.md). Each has a default from the rest of the spec. */
export const LimitsSchema = strict({
  /** Host CPUs QEMU may use, fractions allowed (cgroup `cpu.max` / `cpu.cfs_quota_us`). Default: vCPUs + 1. */
  cpus: v.optional(
    v.pipe(
      v.number((i) => `expected a number of host CPUs from 0.01 to 1024, got ${shown(i.input)}`),
      v.minValue(0.01, (i) => `expected a number of host CPUs from 0.01 to 1024, got ${shown(i.input)}`),
      v.maxValue(1024, (i) => `expected a number of host CPUs from 0.01 to 1024, got ${shown(i.input)}`),
    ),
  ),
  /** Memory QEMU may use beyond the guest's (cgroup `memory.max` / `memory.limit_in_bytes` = memory + this). Default 256M, plus 1G under TCG. */
  memoryOverhead: v.optional(size()),
  /** Tasks (threads) QEMU may have (cgroup `pids.max`). Default 128 + vCPUs. */
  pids: v.optional(int(16, 65536)),
});

export const VmSpecSchema = strict({
  /** The VM's name: `-name guest=NAME`; used in file names. */
  name: name(),
  /** GoShip's id of the VM: `-name …,process=goship-ID`. Default: the name. */
  id: v.optional(name()),
  /** `-machine TYPE`: "q35", "pc", or a versioned type ("pc-q35-7.2"). Default q35; a created VM gets the versioned type pinned. */
  machine: v.optional(
    v.pipe(
      v.string((i) => `expected "q35" or "pc", or a versioned type such as "pc-q35-7.2", got ${shown(i.input)}`),
      v.check((s) => MACHINE_PATTERN.test(s), (i) => `expected "q35" or "pc", or a versioned type such as "pc-q35-7.2", got ${shown(i.input)}`),
      v.transform((s) => s as MachineType),
    ),
    DEFAULT_MACHINE,
  ),
  /** `-accel kvm|tcg`; auto picks KVM when the host can run a normal guest with it. */
  accel: v.optional(oneOf(ACCELS), DEFAULT_ACCEL),
  cpu: v.optional(CpuSchema, {}),
  /** `-m size=…M`. Default 1G. */
  memory: v.optional(size(), DEFAULT_MEMORY),
  /** Back guest RAM with hugetlbfs pages: `-object memory-backend-file,…,prealloc=on`. Default false. */
  hugepages: v.optional(
    v.union([v.literal(false), v.picklist(HUGEPAGE_SIZES)], (i) => `expected false, "2M" or "1G", got ${shown(i.input)}`),
    false,
  ),
  /** Default `{firmware: 'bios'}`. */
  boot: v.optional(BootSchema, { firmware: 'bios' }),
  /** Boot disk first. */
  disks: v.optional(v.array(DiskSchema, (i) => `expected a list of disks, got ${shown(i.input)}`), []),
  /** The cloud-init `cidata` ISO, attached as a read-only CD-ROM. */
  seed: v.optional(absPath()),
  network: v.optional(NetworkSchema, { mode: 'user', forwards: [] }),
  /** Shared folders (virtio-fs); any makes the guest's memory shared (a memfd). Default none. */
  filesystems: v.optional(v.array(FilesystemSchema, (i) => `expected a list of shared folders, got ${shown(i.input)}`), []),
  /** The guest agent's virtio-serial port. Default true. */
  agent: v.optional(bool(), true),
  /** `-sandbox on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny`. Default true. */
  sandbox: v.optional(bool(), true),
  confidential: v.optional(ConfidentialSchema),
  /** Not a QEMU option: the VM's monitor starts a crashed QEMU again ("on-crash", backoff 1 s doubling to 60 s) or not ("no"). Default no. */
  restart: v.optional(oneOf(RESTART_POLICIES), 'no'),
  /** Not a QEMU option: how the monitor keeps console.log (rotated at `maxSize`, `keep` older files). */
  console: v.optional(ConsoleLogSchema, {}),
  /** Not QEMU options: the VM's cgroup limits. */
  limits: v.optional(LimitsSchema, {}),
});

/** What a user writes (every optional field may be left out). */
export type VmSpec = v.InferInput<typeof VmSpecSchema>;
/** The spec after the schema: context-free defaults filled. */
export type ParsedVmSpec = v.InferOutput<typeof VmSpecSchema>;

// ─── Host facts and context ─────────────────────────────────────────────────

export interface CapabilityFact {
  available: boolean;
  /** What the probe saw, phrased for a person ("no sev_snp flag in /proc/cpuinfo", "kvm_amd not loaded"). */
  evidence: string[];
}

/** What the host can do; the lead maps the kvm-probe's report onto this. */
export interface HostFacts {
  cpuCount: number;
  memTotalBytes: number;
  kvm: { usable: boolean; reason: string };
  confidential: Record<'sev' | 'sevEs' | 'sevSnp' | 'tdx', CapabilityFact>;
  /** The lowest port an unprivileged process may bind (`net.ipv4.ip_unprivileged_port_start`); absent: the kernel's default, 1024. */
  unprivilegedPortStart?: number;
}

/** The kernel's default `net.ipv4.ip_unprivileged_port_start`. */
export const DEFAULT_UNPRIVILEGED_PORT_START = 1024;

/** Per-instance files, from layout.ts. */
export interface VmPaths {
  /** GoShip's QMP socket (the VM's monitor holds it). */
  qmpSocket: string;
  /** The people's QMP socket. */
  qmpUserSocket: string;
  agentSocket: string;
  /** The serial console's socket (the VM's monitor writes what it reads to console.log). */
  consoleSocket: string;
  pidfile: string;
}

export interface ResolveContext {
  host: HostFacts;
  paths: VmPaths;
  /** Whether a file exists (injected: resolution does no I/O of its own). */
  exists: (path: string) => boolean;
}

// ─── The resolved config ────────────────────────────────────────────────────

export interface CpuConfig {
  model: string;
  count: number;
  sockets: number;
  cores: number;
  threads: number;
}

export interface MemoryConfig {
  bytes: number;
  hugepages: false | HugepageSize;
  /** The hugetlbfs mount used when hugepages is set. */
  hugepagePath: string | undefined;
  /** A memfd other processes may map (virtiofsd): set when the VM has shared folders. */
  shared: boolean;
}

export interface FilesystemConfig {
  tag: string;
  source: string;
  readOnly: boolean;
  /** virtiofsd's socket: `fs-TAG/sock` in the VM's run directory. */
  socket: string;
}

export type BootConfig =
  | { kind: 'kernel'; kernel: string; initrd: string | undefined; cmdline: string | undefined }
  | { kind: 'firmware'; firmware: 'bios' }
  | { kind: 'firmware'; firmware: 'uefi'; ovmfCode: string; ovmfVars: string | undefined };

export interface DiskConfig {
  path: string;
  format: DiskFormat;
  cache: DiskCache;
  discard: boolean;
  readOnly: boolean;
  serial: string | undefined;
}

export interface ForwardConfig {
  proto: 'tcp' | 'udp';
  host: number;
  guest: number;
  hostAddr: string;
}

export type NetworkConfig = { mode: 'user'; forwards: ForwardConfig[] } | { mode: 'none' };

export type ConfidentialConfig =
  | { type: 'sev' | 'sev-es' | 'sev-snp'; policy: number; cbitpos: number; reducedPhysBits: number }
  | { type: 'tdx' };

/** The fully resolved VM: every default filled, accelerator decided, paths attached. */
export interface VmConfig {
  name: string;
  id: string;
  machine: MachineType;
  accel: 'kvm' | 'tcg';
  /** Why this accelerator (shown to the user). */
  accelReason: string;
  cpu: CpuConfig;
  memory: MemoryConfig;
  boot: BootConfig;
  disks: DiskConfig[];
  seed: string | undefined;
  network: NetworkConfig;
  filesystems: FilesystemConfig[];
  agent: boolean;
  sandbox: boolean;
  confidential: ConfidentialConfig | undefined;
  /** The monitor's restart policy. */
  restart: RestartPolicy;
  /** The monitor's console log: rotated at maxBytes, `keep` older files. */
  console: { maxBytes: number; keep: number };
  /** The limits the spec sets for the VM's cgroup (the jail fills the defaults). */
  limits: { cpus?: number; memoryOverheadBytes?: number; pids?: number };
  paths: VmPaths;
}
