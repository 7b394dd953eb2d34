/**
 * Pure parsers for the text of /proc and /sys files. Each takes text and
 * returns typed values; `undefined` means "not parsable", and the caller
 * records why. None of them throws on bad input.
 */

/** One `processor` block of /proc/cpuinfo (x86 field names; others are kept raw in `fields`). */
export interface CpuinfoProcessor {
  /** `processor`. */
  processor: number | undefined;
  /** `vendor_id`. */
  vendorId: string | undefined;
  /** `model name`. */
  modelName: string | undefined;
  /** `flags` (x86) or `Features` (arm64), split on whitespace. */
  flags: string[];
  /** `physical id`. */
  physicalId: number | undefined;
  /** `core id`. */
  coreId: number | undefined;
  /** Every `key: value` line of the block, as written. */
  fields: Record<string, string>;
}

/**
 * /proc/cpuinfo: blocks separated by blank lines, lines `key<tabs>: value`
 * (arch/x86/kernel/cpu/proc.c). Blocks without a `processor` line (the
 * trailing `Hardware`/`Revision` block on some ARM kernels) are skipped.
 */
export function parseCpuinfo(text: string): CpuinfoProcessor[] {
  const out: CpuinfoProcessor[] = [];
  for (const block of text.split(/\n\s*\n/)) {
    const fields: Record<string, string> = {};
    for (const line of block.split('\n')) {
      const colon = line.indexOf(':');
      if (colon < 0) continue;
      const key = line.slice(0, colon).trim();
      if (key === '') continue;
      fields[key] = line.slice(colon + 1).trim();
    }
    if (fields['processor'] === undefined) continue;
    const flags = fields['flags'] ?? fields['Features'] ?? '';
    out.push({
      processor: parseInteger(fields['processor']),
      vendorId: nonEmpty(fields['vendor_id']),
      modelName: nonEmpty(fields['model name']),
      flags: flags.split(/\s+/).filter((f) => f !== ''),
      physicalId: parseInteger(fields['physical id']),
      coreId: parseInteger(fields['core id']),
      fields,
    });
  }
  return out;
}

/**
 * A kernel CPU or node list (`0-3,8-11`, `5`, or empty for none), as written
 * by the kernel's `%*pbl` format. Returns the sorted, unique numbers, or
 * `undefined` if any part is not `N` or `N-M` with N <= M.
 */
export function parseCpuList(text: string): number[] | undefined {
  const trimmed = text.trim();
  if (trimmed === '') return [];
  const set = new Set<number>();
  for (const part of trimmed.split(',')) {
    const m = /^(\d+)(?:-(\d+))?$/.exec(part.trim());
    if (!m) return undefined;
    const lo = Number(m[1]);
    const hi = m[2] === undefined ? lo : Number(m[2]);
    if (hi < lo || hi - lo > 65_535) return undefined;
    for (let i = lo; i <= hi; i++) set.add(i);
  }
  return [...set].sort((a, b) => a - b);
}

/** A decimal integer, optionally negative (`physical_package_id` can be -1), surrounded by whitespace. */
export function parseInteger(text: string | undefined): number | undefined {
  if (text === undefined) return undefined;
  const t = text.trim();
  if (!/^-?\d+$/.test(t)) return undefined;
  const n = Number(t);
  return Number.isSafeInteger(n) ? n : undefined;
}

/** A non-negative decimal integer (page counts). */
export function parseCount(text: string | undefined): number | undefined {
  const n = parseInteger(text);
  return n !== undefined && n >= 0 ? n : undefined;
}

/**
 * A module parameter as sysfs prints it: bool params print `Y`/`N`, int
 * params (`kvm_amd nested` on older kernels) print `1`/`0`.
 */
export function parseKernelBool(text: string | undefined): boolean | undefined {
  if (text === undefined) return undefined;
  switch (text.trim()) {
    case 'Y':
    case 'y':
    case '1':
      return true;
    case 'N':
    case 'n':
    case '0':
      return false;
    default:
      return undefined;
  }
}

/** One line of a meminfo file: a number and its unit (`kB`, or none for page counts). */
export interface MeminfoValue {
  value: number;
  unit: 'kB' | null;
}

/**
 * /proc/meminfo (`MemTotal:   24683652 kB`) or a node's meminfo (`Node 0
 * MemTotal:  5203740 kB`, drivers/base/node.c). The `Node N` prefix is
 * dropped. Lines that do not match are returned in `unparsed`.
 */
export function parseMeminfo(text: string): { values: Map<string, MeminfoValue>; unparsed: string[] } {
  const values = new Map<string, MeminfoValue>();
  const unparsed: string[] = [];
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line === '') continue;
    const m = /^(?:Node\s+\d+\s+)?([^:\s][^:]*):\s*(\d+)(?:\s+(kB))?$/.exec(line);
    if (!m || !Number.isSafeInteger(Number(m[2]))) {
      unparsed.push(line);
      continue;
    }
    values.set(m[1] as string, { value: Number(m[2]), unit: m[3] === 'kB' ? 'kB' : null });
  }
  return { values, unparsed };
}

/** A meminfo value in bytes: `kB` lines times 1024 (the kernel's "kB" is KiB). */
export function meminfoBytes(values: Map<string, MeminfoValue>, key: string): number | undefined {
  const v = values.get(key);
  if (v === undefined || v.unit !== 'kB') return undefined;
  return v.value * 1024;
}

/** `hugepages-2048kB` → 2097152 (bytes); `undefined` for any other name. */
export function parseHugepageDirName(name: string): number | undefined {
  const m = /^hugepages-(\d+)kB$/.exec(name);
  if (!m) return undefined;
  const kib = Number(m[1]);
  return Number.isSafeInteger(kib) && kib > 0 ? kib * 1024 : undefined;
}

/** `node12` → 12; `undefined` for other names (`online`, `has_cpu`, …). */
export function parseNodeDirName(name: string): number | undefined {
  const m = /^node(\d+)$/.exec(name);
  return m ? Number(m[1]) : undefined;
}

/** `cpu7` → 7; `undefined` for other names (`cpufreq`, `online`, …). */
export function parseCpuDirName(name: string): number | undefined {
  const m = /^cpu(\d+)$/.exec(name);
  return m ? Number(m[1]) : undefined;
}

function nonEmpty(s: string | undefined): string | undefined {
  return s === undefined || s === '' ? undefined : s;
}
