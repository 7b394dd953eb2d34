/**
 * resolveSpec: user input → VmConfig, or one ValidationError naming every
 * problem (each with the field's path and what is allowed). Pure: the host's
 * facts, the instance's paths and a file-existence check come in through the
 * context.
 *
 * Order: the schema (shape, syntax, ranges) → context-dependent defaults →
 * cross-field and host rules → each device's own checks. When the schema finds
 * a value of the wrong type, the later steps cannot run and only the schema's
 * issues are reported; every other problem is reported together (a later
 * check of a field the schema already refused is not repeated).
 */
import { dirname, join } from 'node:path';
import * as v from 'valibot';
import { ValidationError } from '../errors.ts';
import type { Issue } from '../errors.ts';
import { plainPath, fileExists } from './devices/checks.ts';
import { devicesOf, validateDevice } from './devices/registry.ts';
import type { ValidateContext } from './devices/types.ts';
import { formatSize, MiB, parseSize } from './sizes.ts';
import {
  DEFAULT_CPU_MODEL_KVM,
  DEFAULT_CPU_MODEL_TCG,
  DEFAULT_OVMF_CODE,
  DEFAULT_SEV_CBITPOS,
  DEFAULT_SEV_POLICY,
  DEFAULT_SEV_REDUCED_PHYS_BITS,
  HUGEPAGE_MOUNTS,
  MAX_FILESYSTEMS,
  MIN_CONSOLE_MAX_BYTES,
  MIN_MEMORY_BYTES,
  VmSpecSchema,
  shown,
} from './spec.ts';
import type { BootConfig, ConfidentialConfig, CpuConfig, FilesystemConfig, HostFacts, ParsedVmSpec, ResolveContext, VmConfig } from './spec.ts';

/** The subject of the ValidationError resolveSpec throws. */
export const VM_SPEC_SUBJECT = 'invalid VM spec';
export const VM_SPEC_HINT = 'docs/vm-spec.md lists every field, its default and what it allows';

type SchemaIssue = v.InferIssue<typeof VmSpecSchema>;

/** valibot's path → `disks[1].path`. */
export function issuePath(issue: { path?: { key: unknown }[] | undefined }): string {
  let out = '';
  for (const item of issue.path ?? []) {
    if (typeof item.key === 'number') out += `[${item.key}]`;
    else out += out === '' ? String(item.key) : `.${String(item.key)}`;
  }
  return out;
}

function schemaIssue(issue: SchemaIssue): Issue {
  const path = issuePath(issue);
  // A required key that is absent is reported by its object, whatever the field's own message says.
  if (issue.kind === 'schema' && issue.type === 'strict_object' && issue.expected !== 'never' && issue.input === undefined && path !== '') {
    return { path, message: 'required field is missing' };
  }
  return { path, message: issue.message };
}

/** Whether one path is the other or contains it (`cpu` and `cpu.count`, `disks[0]` and `disks[0].path`). */
function related(a: string, b: string): boolean {
  const under = (x: string, y: string) => x.startsWith(y) && (x[y.length] === '.' || x[y.length] === '[');
  return a === b || under(a, b) || under(b, a);
}

function resolveAccel(s: ParsedVmSpec, host: HostFacts, issues: Issue[]): { accel: 'kvm' | 'tcg'; accelReason: string } {
  const cgs = s.confidential?.type;
  if (s.accel === 'tcg') {
    if (cgs) issues.push({ path: 'confidential.type', message: `${cgs} needs accel "kvm", but accel is "tcg"` });
    return { accel: 'tcg', accelReason: 'accel "tcg" was requested' };
  }
  if (s.accel === 'kvm') {
    if (!host.kvm.usable) {
      issues.push({ path: 'accel', message: `"kvm" was requested but KVM is not usable on this host: ${host.kvm.reason}; use "auto" or "tcg"` });
    }
    return { accel: 'kvm', accelReason: 'accel "kvm" was requested' };
  }
  if (host.kvm.usable) return { accel: 'kvm', accelReason: `auto: KVM is usable (${host.kvm.reason})` };
  if (cgs) {
    issues.push({ path: 'confidential.type', message: `${cgs} needs accel "kvm", but KVM is not usable on this host: ${host.kvm.reason}` });
    return { accel: 'kvm', accelReason: 'auto: a confidential guest needs KVM' };
  }
  return { accel: 'tcg', accelReason: `auto: KVM is not usable (${host.kvm.reason}), using TCG` };
}

/** Fills the missing topology numbers so that sockets × cores × threads = count. */
export function resolveTopology(
  c: { count?: number | undefined; sockets?: number | undefined; cores?: number | undefined; threads?: number | undefined },
  issues: Issue[],
): Omit<CpuConfig, 'model'> {
  const threads = c.threads ?? 1;
  if (c.count === undefined) {
    const sockets = c.sockets ?? 1;
    const cores = c.cores ?? 1;
    return { count: sockets * cores * threads, sockets, cores, threads };
  }
  const count = c.count;
  let sockets = c.sockets ?? 1;
  let cores = c.cores ?? 1;
  if (c.sockets !== undefined && c.cores === undefined) cores = count / (sockets * threads);
  else if (c.sockets === undefined && c.cores !== undefined) sockets = count / (cores * threads);
  else if (c.sockets === undefined && c.cores === undefined) cores = count / threads;
  if (!Number.isInteger(sockets) || !Number.isInteger(cores) || sockets * cores * threads !== count) {
    const given = (n: number | undefined) => (n === undefined ? '?' : String(n));
    issues.push({
      path: 'cpu',
      message: `sockets × cores × threads must equal count (${count}); got sockets ${given(c.sockets)}, cores ${given(c.cores)}, threads ${given(c.threads)}`,
    });
    return { count, sockets: 1, cores: count, threads: 1 };
  }
  return { count, sockets, cores, threads };
}

function resolveCpu(s: ParsedVmSpec, accel: 'kvm' | 'tcg', accelReason: string, host: HostFacts, issues: Issue[]): CpuConfig {
  const model = s.cpu.model ?? (accel === 'kvm' ? DEFAULT_CPU_MODEL_KVM : DEFAULT_CPU_MODEL_TCG);
  if (model === 'host' && accel === 'tcg') {
    issues.push({ path: 'cpu.model', message: `"host" needs KVM, but accel is tcg (${accelReason}); use "max" or a named model such as "EPYC-v4"` });
  }
  const topo = resolveTopology(s.cpu, issues);
  if (topo.count > host.cpuCount) {
    issues.push({ path: 'cpu.count', message: `${topo.count} is more than this host's ${host.cpuCount} logical CPUs` });
  }
  return { model, ...topo };
}

function resolveMemory(s: ParsedVmSpec, host: HostFacts, issues: Issue[]): number {
  const parsed = parseSize(s.memory);
  const bytes = parsed.ok ? parsed.bytes : 0;
  if (bytes < MIN_MEMORY_BYTES) {
    issues.push({ path: 'memory', message: `must be at least ${formatSize(MIN_MEMORY_BYTES)}, got ${shown(s.memory)}` });
  } else if (bytes % MiB !== 0) {
    issues.push({ path: 'memory', message: `must be a whole number of MiB (QEMU's -m unit), got ${shown(s.memory)}` });
  } else if (bytes > host.memTotalBytes) {
    issues.push({ path: 'memory', message: `${formatSize(bytes)} is more than this host's memory (${formatSize(host.memTotalBytes)})` });
  }
  return bytes;
}

function resolveBoot(s: ParsedVmSpec, ctx: ResolveContext, issues: Issue[]): BootConfig {
  const boot = s.boot;
  if ('kernel' in boot) {
    issues.push(...fileExists(boot.kernel, 'boot.kernel', ctx.exists));
    if (boot.initrd !== undefined) issues.push(...fileExists(boot.initrd, 'boot.initrd', ctx.exists));
    return { kind: 'kernel', kernel: boot.kernel, initrd: boot.initrd, cmdline: boot.cmdline };
  }
  if (boot.firmware === 'bios') {
    for (const key of ['ovmfCode', 'ovmfVars'] as const) {
      if (boot[key] !== undefined) issues.push({ path: `boot.${key}`, message: 'only used with firmware "uefi"; remove it or set firmware: uefi' });
    }
    return { kind: 'firmware', firmware: 'bios' };
  }
  return { kind: 'firmware', firmware: 'uefi', ovmfCode: boot.ovmfCode ?? DEFAULT_OVMF_CODE, ovmfVars: boot.ovmfVars };
}

const hex = (n: number): string => `0x${n.toString(16)}`;
const bit = (n: number, b: number): boolean => Math.floor(n / 2 ** b) % 2 === 1;

function resolveConfidential(s: ParsedVmSpec, issues: Issue[]): ConfidentialConfig | undefined {
  const c = s.confidential;
  if (c === undefined) return undefined;
  if (c.type === 'tdx') {
    for (const key of ['policy', 'cbitpos', 'reducedPhysBits'] as const) {
      if (c[key] !== undefined) issues.push({ path: `confidential.${key}`, message: 'not used by tdx (AMD SEV only); remove it' });
    }
    return { type: 'tdx' };
  }
  const policy = c.policy ?? DEFAULT_SEV_POLICY[c.type];
  if (c.type === 'sev-es' && !bit(policy, 2)) {
    issues.push({ path: 'confidential.policy', message: `sev-es needs the ES bit (0x4) set, got ${hex(policy)}` });
  }
  if (c.type === 'sev' && bit(policy, 2)) {
    issues.push({ path: 'confidential.policy', message: `the ES bit (0x4) makes this an SEV-ES guest: use type "sev-es", got ${hex(policy)}` });
  }
  if (c.type === 'sev-snp' && !bit(policy, 17)) {
    issues.push({ path: 'confidential.policy', message: `sev-snp needs bit 17 (0x20000, reserved, must be 1) set, got ${hex(policy)}` });
  }
  return {
    type: c.type,
    policy,
    cbitpos: c.cbitpos ?? DEFAULT_SEV_CBITPOS,
    reducedPhysBits: c.reducedPhysBits ?? DEFAULT_SEV_REDUCED_PHYS_BITS,
  };
}

/** Shared folders: unique tags, at most MAX_FILESYSTEMS, each socket in the VM's run directory; not with hugepages. */
function resolveFilesystems(s: ParsedVmSpec, ctx: ResolveContext, issues: Issue[]): FilesystemConfig[] {
  if (s.filesystems.length > MAX_FILESYSTEMS) issues.push({ path: 'filesystems', message: `at most ${MAX_FILESYSTEMS} shared folders, got ${s.filesystems.length}` });
  if (s.filesystems.length > 0 && s.hugepages !== false) {
    issues.push({ path: 'filesystems', message: 'shared folders need the guest memory in a shared memfd, hugepages put it on hugetlbfs: choose one' });
  }
  const seen = new Map<string, number>();
  s.filesystems.forEach((f, i) => {
    const first = seen.get(f.tag);
    if (first === undefined) seen.set(f.tag, i);
    else issues.push({ path: `filesystems[${i}].tag`, message: `the same tag as filesystems[${first}]: ${f.tag}` });
  });
  const runDir = dirname(ctx.paths.qmpSocket);
  return s.filesystems.map((f) => ({ tag: f.tag, source: f.source, readOnly: f.readOnly, socket: join(runDir, `fs-${f.tag}`, 'sock') }));
}

/**
 * Validates `input` against the schema, the host and the files, fills every
 * default and returns the VmConfig `buildArgv` takes. Throws a
 * ValidationError (code EINVALID) listing every problem.
 */
export function resolveSpec(input: unknown, ctx: ResolveContext): VmConfig {
  const parsed = v.safeParse(VmSpecSchema, input);
  const shape: Issue[] = (parsed.issues ?? []).map(schemaIssue);
  if (!parsed.typed) throw new ValidationError(shape, { subject: VM_SPEC_SUBJECT, hint: VM_SPEC_HINT });
  const issues: Issue[] = [];
  const s = parsed.output;
  const { host } = ctx;

  const { accel, accelReason } = resolveAccel(s, host, issues);
  const cpu = resolveCpu(s, accel, accelReason, host, issues);
  const bytes = resolveMemory(s, host, issues);
  const boot = resolveBoot(s, ctx, issues);
  const confidential = resolveConfidential(s, issues);

  const seenDisks = new Map<string, number>();
  s.disks.forEach((d, i) => {
    const first = seenDisks.get(d.path);
    if (first === undefined) seenDisks.set(d.path, i);
    else issues.push({ path: `disks[${i}].path`, message: `the same file as disks[${first}]: ${d.path}; a file can be attached once` });
  });
  const filesystems = resolveFilesystems(s, ctx, issues);
  if (s.network.mode === 'none' && s.network.forwards.length > 0) {
    issues.push({ path: 'network.forwards', message: 'forwards need network mode "user"; mode is "none"' });
  }
  issues.push(...plainPath(ctx.paths.pidfile, 'paths.pidfile'));
  const consoleSize = parseSize(s.console.maxSize);
  const consoleMaxBytes = consoleSize.ok ? consoleSize.bytes : 0;
  if (consoleSize.ok && consoleMaxBytes < MIN_CONSOLE_MAX_BYTES) {
    issues.push({ path: 'console.maxSize', message: `must be at least ${formatSize(MIN_CONSOLE_MAX_BYTES)}, got ${shown(s.console.maxSize)}` });
  }

  const overhead = s.limits.memoryOverhead === undefined ? undefined : parseSize(s.limits.memoryOverhead);
  const config: VmConfig = {
    name: s.name,
    id: s.id ?? s.name,
    machine: s.machine,
    accel,
    accelReason,
    cpu,
    memory: {
      bytes,
      hugepages: s.hugepages,
      hugepagePath: s.hugepages === false ? undefined : HUGEPAGE_MOUNTS[s.hugepages],
      shared: filesystems.length > 0,
    },
    boot,
    disks: s.disks.map((d) => ({ path: d.path, format: d.format, cache: d.cache, discard: d.discard, readOnly: d.readOnly, serial: d.serial })),
    seed: s.seed,
    network: s.network.mode === 'user' ? { mode: 'user', forwards: s.network.forwards.map((f) => ({ ...f })) } : { mode: 'none' },
    filesystems,
    agent: s.agent,
    sandbox: s.sandbox,
    confidential,
    restart: s.restart,
    console: { maxBytes: consoleMaxBytes, keep: s.console.keep },
    limits: {
      ...(s.limits.cpus !== undefined ? { cpus: s.limits.cpus } : {}),
      ...(overhead?.ok ? { memoryOverheadBytes: overhead.bytes } : {}),
      ...(s.limits.pids !== undefined ? { pids: s.limits.pids } : {}),
    },
    paths: { ...ctx.paths },
  };

  const vctx: ValidateContext = { machine: config.machine, host, exists: ctx.exists };
  for (const device of devicesOf(config)) issues.push(...validateDevice(device, vctx));

  const all = [...shape, ...issues.filter((i) => !shape.some((s) => related(s.path, i.path)))];
  if (all.length > 0) throw new ValidationError(all, { subject: VM_SPEC_SUBJECT, hint: VM_SPEC_HINT });
  return config;
}
