/**
 * cac (through mri) turns option values that look like numbers into numbers:
 * `--memory=0x10` would arrive as 16. GoShip validates what the user typed, so
 * value options are read back from the raw argv here.
 */
import { GoshipError } from '../errors.ts';

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
