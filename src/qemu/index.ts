/**
 * src/qemu: the VmSpec → argv contract (pure: spec.ts, validate.ts, argv.ts,
 * devices/), and the thin effectful edges around it: qemu-img overlays
 * (img.ts), QEMU processes (process.ts), the binary (binary.ts: its version,
 * machine aliases, a bare QEMU to ask over QMP). It never imports src/qmp or
 * the store.
 */
export { qemuOpts } from './opts.ts';
export type { OptValue } from './opts.ts';
export { parseSize, formatSize, SIZE_RULE, KiB, MiB, GiB, TiB } from './sizes.ts';
export type { SizeResult } from './sizes.ts';
export {
  VmSpecSchema,
  NAME_PATTERN,
  NAME_RULE,
  DEFAULT_MACHINE,
  MACHINES,
  MACHINE_PATTERN,
  DEFAULT_ACCEL,
  DEFAULT_MEMORY,
  DEFAULT_CPU_MODEL_KVM,
  DEFAULT_CPU_MODEL_TCG,
  DEFAULT_DISK_FORMAT,
  DEFAULT_DISK_CACHE,
  DEFAULT_HOST_ADDR,
  DEFAULT_UNPRIVILEGED_PORT_START,
  DEFAULT_OVMF_CODE,
  DEFAULT_SEV_CBITPOS,
  DEFAULT_SEV_REDUCED_PHYS_BITS,
  DEFAULT_SEV_POLICY,
  HUGEPAGE_MOUNTS,
  MIN_MEMORY_BYTES,
  MIN_CONSOLE_MAX_BYTES,
  RESTART_POLICIES,
  MAX_FILESYSTEMS,
  DEFAULT_CONSOLE_MAX_SIZE,
  DEFAULT_CONSOLE_KEEP,
} from './spec.ts';
export type {
  VmSpec,
  ParsedVmSpec,
  HostFacts,
  CapabilityFact,
  VmPaths,
  ResolveContext,
  VmConfig,
  CpuConfig,
  MemoryConfig,
  BootConfig,
  DiskConfig,
  ForwardConfig,
  NetworkConfig,
  ConfidentialConfig,
  MachineType,
  Accel,
  DiskFormat,
  DiskCache,
  HugepageSize,
  ConfidentialType,
  RestartPolicy,
} from './spec.ts';
export { resolveSpec, VM_SPEC_SUBJECT, VM_SPEC_HINT } from './validate.ts';
export { buildArgv, processMarker, ramFileArgs, DEFAULT_QEMU_BINARY, SANDBOX_OPTS, TCG_TB_SIZE_MIB } from './argv.ts';
export { devicesOf, DEVICE_BUILDERS } from './devices/registry.ts';
export { privilegedPortIssue } from './devices/net-user.ts';
export { FIRST_DISK_NODE } from './devices/disk.ts';
export type { Device, DeviceKind } from './devices/types.ts';
export { loadSpecFile, parseSpecJson, parseSpecYaml } from './spec-file.ts';
export { createOverlay, flattenOnto, imageChain, imageSnapshot, renameBacking, imageSnapshotArgs, inspectBase, type ImageSnapshotOp, type OverlayOptions } from './img.ts';
export { parseImageChain, type ImageLayer } from './img-info.ts';
export { cmdlineHasMarker, isOurProcess, logTail, statState, waitGone } from './process.ts';
export { QEMU_BINARY, parseQemuVersionText, parseMachineAliases, readQemuVersion, machineAliases, startBareQemu, waitForPath, type BareQemu } from './binary.ts';
export { QemuError, QemuExitError, type QemuErrorCode } from './errors.ts';
