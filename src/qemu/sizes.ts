/**
 * Sizes as people write them: '2G', '512M', '1.5G', '64K', '1024' (bytes), or a
 * number of bytes. Units are binary (K = 1024), as in QEMU; 'KiB', 'MiB'… are
 * accepted too. Decimal units ('GB') are refused rather than guessed.
 */

export const KiB = 1024;
export const MiB = 1024 * KiB;
export const GiB = 1024 * MiB;
export const TiB = 1024 * GiB;

const UNITS: Record<string, number> = { '': 1, B: 1, K: KiB, M: MiB, G: GiB, T: TiB };

const SIZE = /^(\d+(?:\.\d+)?)\s*(?:([KMGT])(?:iB)?|(B))?$/i;

export type SizeResult = { ok: true; bytes: number } | { ok: false; message: string };

/** What the parser accepts, for messages. */
export const SIZE_RULE = 'a size such as "512M", "2G", "1.5G" or a whole number of bytes';

function describe(value: unknown): string {
  if (typeof value === 'string') return JSON.stringify(value);
  if (typeof value === 'number') return String(value);
  return value === null ? 'null' : typeof value;
}

/** Parses a size; the failure message says what is allowed and what was given. */
export function parseSize(value: unknown): SizeResult {
  const bad: SizeResult = { ok: false, message: `expected ${SIZE_RULE}, got ${describe(value)}` };
  if (typeof value === 'number') {
    return Number.isSafeInteger(value) && value >= 0 ? { ok: true, bytes: value } : bad;
  }
  if (typeof value !== 'string') return bad;
  const m = SIZE.exec(value.trim());
  if (!m) return bad;
  const unit = (m[2] ?? m[3] ?? '').toUpperCase();
  const bytes = Number(m[1]) * (UNITS[unit] ?? 1);
  if (!Number.isSafeInteger(bytes)) {
    return { ok: false, message: `expected a whole number of bytes, got ${describe(value)} (${bytes} bytes)` };
  }
  return { ok: true, bytes };
}

/** The shortest exact form with a binary unit ('1G', '1536M', '4097K', '1000'), else one decimal ('7.8G'). */
export function formatSize(bytes: number): string {
  for (const [unit, size] of [['T', TiB], ['G', GiB], ['M', MiB], ['K', KiB]] as const) {
    if (bytes >= size && bytes % size === 0) return `${bytes / size}${unit}`;
  }
  if (bytes < KiB) return String(bytes);
  for (const [unit, size] of [['T', TiB], ['G', GiB], ['M', MiB], ['K', KiB]] as const) {
    if (bytes >= size) return `${(bytes / size).toFixed(1)}${unit}`;
  }
  return String(bytes);
}
