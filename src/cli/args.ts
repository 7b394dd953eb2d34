/**
 * cac (through mri) turns option values that look like numbers into numbers:
 * `--memory=0x10` would arrive as 16. GoShip validates what the user typed, so
 * value options are read back from the raw argv here.
 */
import { GoshipError } from '../errors.ts';
import { parseSize } from '../runtime/index.ts';

/** Every raw value given for `--name` (`--name v` or `--name=v`), in order. */
export function rawValues(argv: readonly string[], name: string): string[] {
  const flag = `--${name}`;
  const values: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--') break;
    if (a === flag) {
      const next = argv[i + 1];
      if (next !== undefined) values.push(next);
      i++;
    } else if (a.startsWith(`${flag}=`)) {
      values.push(a.slice(flag.length + 1));
    }
  }
  return values;
}

/** The single raw value of an option, or undefined; an option given twice is an error. */
export function rawValue(argv: readonly string[], name: string): string | undefined {
  const values = rawValues(argv, name);
  if (values.length > 1) throw new GoshipError('EINVALID', `--${name}: given ${values.length} times; give it once`);
  return values[0];
}

/** A positive integer option (`--cpus 2`): digits only. */
export function intOption(argv: readonly string[], name: string, what: string): number | undefined {
  const raw = rawValue(argv, name);
  if (raw === undefined) return undefined;
  if (!/^\d+$/.test(raw)) throw new GoshipError('EINVALID', `--${name}: expected ${what}, got "${raw}"`);
  return Number(raw);
}

/**
 * The longest timeout a command takes, in seconds: Node's timers hold at most
 * 2^31 - 1 ms (about 24.8 days); a longer one would fire at once.
 */
export const MAX_TIMEOUT_SECONDS = Math.floor((2 ** 31 - 1) / 1000);

/** A `--timeout`-like option in whole seconds, 1 to MAX_TIMEOUT_SECONDS, returned in milliseconds. */
export function secondsOption(argv: readonly string[], name: string): number | undefined {
  const s = intOption(argv, name, 'a whole number of seconds');
  if (s === undefined) return undefined;
  if (s < 1 || s > MAX_TIMEOUT_SECONDS) {
    throw new GoshipError('EINVALID', `--${name}: expected 1 to ${MAX_TIMEOUT_SECONDS} seconds (about 24 days), got ${s}`);
  }
  return s * 1000;
}

/** A size option (`--disk 20G`), in bytes. */
export function sizeOption(argv: readonly string[], name: string): number | undefined {
  const raw = rawValue(argv, name);
  if (raw === undefined) return undefined;
  const r = parseSize(raw);
  if (!r.ok) throw new GoshipError('EINVALID', `--${name}: ${r.message}`);
  return r.bytes;
}

/** `--since 10m`: a duration of s, m, h or d (or plain seconds), in whole seconds. */
export function durationOption(argv: readonly string[], name: string): number | undefined {
  const raw = rawValue(argv, name);
  if (raw === undefined) return undefined;
  const m = /^(\d{1,9})([smhd]?)$/.exec(raw);
  if (!m) throw new GoshipError('EINVALID', `--${name}: expected a duration such as 30s, 10m, 2h or 1d, got "${raw}"`);
  const unit = { '': 1, s: 1, m: 60, h: 3600, d: 86_400 }[m[2] as '' | 's' | 'm' | 'h' | 'd'];
  return Number(m[1]) * unit;
}
