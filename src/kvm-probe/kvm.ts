/**
 * The KVM verdict and the confidential-computing facts (pure).
 *
 * KVM is usable for a normal guest only when all hold: /dev/kvm is
 * read-write for this user, `kvm_intel` or `kvm_amd` provides it, and the
 * CPU flags show the matching extension (`vmx` for Intel, `svm` for AMD).
 * A /dev/kvm that opens fine is not enough: `kvm_pvm` provides one that runs
 * only PVM-aware guests, and a stock kernel hangs under it.
 */
import { parseKernelBool } from './parse.ts';
import type { CapabilityFact, ConfidentialReport, KvmReport } from './types.ts';

/** Vendor modules that run unmodified guests, and the CPU flag each needs. */
export const STANDARD_KVM_PROVIDERS = { kvm_intel: 'vmx', kvm_amd: 'svm' } as const;

/** The parameters read for each module (others are not looked at). */
export const KVM_MODULE_PARAMS: Record<string, readonly string[]> = {
  kvm_intel: ['nested', 'tdx'],
  kvm_amd: ['nested', 'sev', 'sev_es', 'sev_snp'],
};
/** Parameters read for any other `kvm_*` vendor module. */
export const OTHER_MODULE_PARAMS: readonly string[] = ['nested'];

/** A loaded module and the text of the parameters that were read (`undefined`: no such file). */
export type ModuleParams = Record<string, string | undefined>;

export interface KvmFacts {
  /** CPU flags of /proc/cpuinfo; `undefined` when it could not be read. */
  flags: ReadonlySet<string> | undefined;
  /** Loaded KVM modules (`kvm` and `kvm_*`) with their parameters. */
  modules: Record<string, ModuleParams>;
  devKvm: { present: boolean; rw: boolean };
  devSev: { present: boolean; rw: boolean };
}

function isStandard(name: string): name is keyof typeof STANDARD_KVM_PROVIDERS {
  return Object.hasOwn(STANDARD_KVM_PROVIDERS, name);
}

/**
 * The vendor module behind /dev/kvm: a `kvm_*` module. When a standard and
 * a non-standard one are both loaded, the non-standard one is named, since a
 * guest cannot be trusted to run until it is unloaded.
 */
export function kvmProvider(modules: Record<string, ModuleParams>): string | null {
  const vendors = Object.keys(modules)
    .filter((m) => m.startsWith('kvm_'))
    .sort();
  return vendors.find((m) => !isStandard(m)) ?? vendors[0] ?? null;
}

const PVM_REASON = '/dev/kvm is provided by kvm_pvm, which runs only PVM-aware guests; a normal guest hangs under it';

export function assessKvm(facts: KvmFacts, warnings: string[]): KvmReport {
  const modules = Object.keys(facts.modules).sort();
  const provider = kvmProvider(facts.modules);
  const evidence: string[] = [];
  const failures: string[] = [];

  if (facts.devKvm.present) evidence.push('/dev/kvm exists');
  else failures.push('/dev/kvm does not exist');

  evidence.push(modules.length > 0 ? `loaded modules: ${modules.join(', ')}` : 'no kvm module loaded');
  if (provider === null) failures.push('neither kvm_intel nor kvm_amd is loaded');
  else if (provider === 'kvm_pvm') failures.push(PVM_REASON);
  else if (!isStandard(provider)) failures.push(`/dev/kvm is provided by ${provider}, not kvm_intel or kvm_amd; a normal guest may not run under it`);
  const others = modules.filter((m) => m.startsWith('kvm_') && m !== provider);
  if (provider !== null && others.length > 0) evidence.push(`${provider} is loaded alongside ${others.join(', ')}`);

  if (facts.devKvm.present) {
    if (facts.devKvm.rw) evidence.push('/dev/kvm is read-write for this user');
    else failures.push('/dev/kvm is not read-write for this user (join the group that owns it, usually kvm)');
  }

  if (facts.flags === undefined) {
    failures.push('the CPU flags could not be read from /proc/cpuinfo');
  } else {
    const present = (['vmx', 'svm'] as const).filter((f) => facts.flags?.has(f));
    evidence.push(present.length > 0 ? `${present.join(' and ')} flag in /proc/cpuinfo` : 'no vmx or svm flag in /proc/cpuinfo');
    const wanted = provider !== null && isStandard(provider) ? STANDARD_KVM_PROVIDERS[provider] : undefined;
    if (wanted !== undefined) {
      if (!facts.flags.has(wanted)) failures.push(`${provider} is loaded but the CPU has no ${wanted} flag in /proc/cpuinfo`);
    } else if (present.length === 0) {
      failures.push('no vmx or svm flag in /proc/cpuinfo');
    }
  }

  let nested: boolean | null = null;
  if (provider !== null) {
    const text = facts.modules[provider]?.['nested'];
    if (text === undefined) evidence.push(`${provider} has no nested parameter`);
    else {
      const parsed = parseKernelBool(text);
      if (parsed === undefined) warnings.push(`/sys/module/${provider}/parameters/nested: expected Y, N, 1 or 0, got ${JSON.stringify(text.trim())}`);
      else evidence.push(`${provider} nested=${text.trim()}`);
      nested = parsed ?? null;
    }
  }

  const usable = failures.length === 0;
  const reason = usable
    ? `/dev/kvm is read-write, ${provider} is loaded and the CPU has ${STANDARD_KVM_PROVIDERS[provider as keyof typeof STANDARD_KVM_PROVIDERS]}`
    : failures.join('; ');
  return {
    device: { path: '/dev/kvm', present: facts.devKvm.present, accessible: facts.devKvm.present && facts.devKvm.rw },
    modules,
    provider,
    nested,
    usable,
    reason,
    evidence,
  };
}

/** One condition of a capability: met or not, and the sentence for each case. */
interface Check {
  ok: boolean;
  text: string;
}

function fact(checks: Check[]): CapabilityFact {
  return { available: checks.every((c) => c.ok), evidence: checks.map((c) => c.text) };
}

function flagCheck(flags: ReadonlySet<string> | undefined, names: readonly string[]): Check {
  if (flags === undefined) return { ok: false, text: '/proc/cpuinfo flags could not be read' };
  const seen = names.find((n) => flags.has(n));
  return seen !== undefined
    ? { ok: true, text: `${seen} flag in /proc/cpuinfo` }
    : { ok: false, text: `no ${names.join(' or ')} flag in /proc/cpuinfo` };
}

function paramCheck(facts: KvmFacts, module: string, param: string, warnings: string[]): Check {
  const params = facts.modules[module];
  if (params === undefined) return { ok: false, text: `${module} is not loaded` };
  const text = params[param];
  const path = `/sys/module/${module}/parameters/${param}`;
  if (text === undefined) return { ok: false, text: `${path} is missing` };
  const value = parseKernelBool(text);
  if (value === undefined) {
    warnings.push(`${path}: expected Y, N, 1 or 0, got ${JSON.stringify(text.trim())}`);
    return { ok: false, text: `${path} is unparsable: ${JSON.stringify(text.trim())}` };
  }
  return { ok: value, text: `${path} = ${text.trim()}` };
}

function sevDeviceCheck(dev: KvmFacts['devSev']): Check {
  if (!dev.present) return { ok: false, text: '/dev/sev is missing' };
  if (!dev.rw) return { ok: false, text: '/dev/sev exists but is not read-write for this user' };
  return { ok: true, text: '/dev/sev is read-write' };
}

/**
 * SEV, SEV-ES, SEV-SNP (AMD) and TDX (Intel). Each is available when the
 * CPU flag, the KVM module parameter and (for SEV) /dev/sev all say so.
 */
export function assessConfidential(facts: KvmFacts, warnings: string[]): ConfidentialReport {
  const dev = sevDeviceCheck(facts.devSev);
  return {
    sev: fact([flagCheck(facts.flags, ['sev']), paramCheck(facts, 'kvm_amd', 'sev', warnings), dev]),
    sevEs: fact([flagCheck(facts.flags, ['sev_es']), paramCheck(facts, 'kvm_amd', 'sev_es', warnings), dev]),
    sevSnp: fact([flagCheck(facts.flags, ['sev_snp']), paramCheck(facts, 'kvm_amd', 'sev_snp', warnings), dev]),
    tdx: fact([flagCheck(facts.flags, ['tdx_host_platform', 'tdx']), paramCheck(facts, 'kvm_intel', 'tdx', warnings)]),
  };
}
