/**
 * Writes seed entries into an ISO 9660 volume labelled `cidata`, with Joliet
 * and Rock Ridge names, by running xorriso. The only effectful file here.
 */
import { mkdtemp, rename, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import type { Issue } from '../errors.ts';
import { SEED_VOLUME_ID, XORRISO, XORRISO_TIMEOUT_MS } from './constants.ts';
import { SeedError, throwIfIssues } from './errors.ts';
import { seedEntries } from './seed.ts';
import type { SeedEntry, SeedOptions } from './types.ts';

/** A seed file name: at the root, and never read by xorriso as an option. */
const ENTRY_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

export interface WriteSeedIsoOptions {
  /** The xorriso program. Default `xorriso` from PATH. */
  xorriso?: string;
}

/** The argv that writes `names` (relative to the working directory) into `output`. */
export function xorrisoArgs(output: string, names: readonly string[]): string[] {
  return ['-as', 'mkisofs', '-output', output, '-volid', SEED_VOLUME_ID, '-joliet', '-rock', ...names];
}

function checkEntries(entries: readonly SeedEntry[]): Issue[] {
  const issues: Issue[] = [];
  const seen = new Set<string>();
  entries.forEach((entry, i) => {
    if (typeof entry.path !== 'string' || !ENTRY_NAME.test(entry.path)) {
      issues.push({
        path: `entries[${i}].path`,
        message: `expected a file name at the root of the volume (letters, digits, ".", "_", "-"), got ${JSON.stringify(entry.path)}`,
      });
    } else if (seen.has(entry.path)) {
      issues.push({ path: `entries[${i}].path`, message: `expected each name once, got "${entry.path}" again` });
    } else {
      seen.add(entry.path);
    }
    if (!(entry.bytes instanceof Uint8Array)) {
      issues.push({ path: `entries[${i}].bytes`, message: 'expected a Uint8Array' });
    }
  });
  if (entries.length === 0) issues.push({ path: 'entries', message: 'expected at least one entry, got []' });
  return issues;
}

/** The lines of xorriso's stderr that say what went wrong, or its last lines. */
function problemLines(stderr: string): string {
  const lines = stderr.split('\n').filter((line) => line.trim() !== '');
  const problems = lines.filter((line) => / : (SORRY|FAILURE|FATAL|MISHAP) : /.test(line));
  return (problems.length > 0 ? problems : lines.slice(-5)).join('\n');
}

/** Whether xorriso died of a signal (it catches some, says `UNIX-SIGNAL`, and exits 1) rather than refused its work. */
function crashed(result: { signal?: string | undefined; stderr?: unknown }): boolean {
  return result.signal !== undefined || (typeof result.stderr === 'string' && /^UNIX-SIGNAL: /m.test(result.stderr));
}

/**
 * Writes `entries` into a fresh ISO at `isoPath`: the files go to an
 * owner-only temporary directory, xorriso writes `<isoPath>.tmp`, which is
 * renamed over `isoPath` only once complete. A xorriso that crashed is run
 * again, once; one that refused is not.
 */
export async function writeSeedIso(
  entries: readonly SeedEntry[],
  isoPath: string,
  options: WriteSeedIsoOptions = {},
): Promise<void> {
  throwIfIssues(checkEntries(entries));
  const program = options.xorriso ?? XORRISO;
  const target = resolve(isoPath);
  const partial = `${target}.tmp`;
  const names = entries.map((entry) => entry.path);
  const args = xorrisoArgs(partial, names);
  const argv = [program, ...args];

  const dir = await mkdtemp(join(tmpdir(), 'goship-seed-')); // mode 0700
  try {
    for (const entry of entries) {
      await writeFile(join(dir, entry.path), entry.bytes, { mode: 0o600, flag: 'wx' });
    }
    const { execa } = await import('execa');
    const run = async () => {
      await rm(partial, { force: true });
      return execa(program, args, { cwd: dir, reject: false, stdin: 'ignore', timeout: XORRISO_TIMEOUT_MS, env: { LC_ALL: 'C' } });
    };
    let result = await run();
    // xorriso 1.5.4 rarely dies of a signal while it shuts its library down, after writing: that run is made again, once.
    if (result.failed && crashed(result)) result = await run();
    if (result.failed) {
      const stderr = typeof result.stderr === 'string' ? result.stderr : '';
      const cause = (result as { cause?: unknown }).cause;
      if (result.code === 'ENOENT') {
        throw new SeedError(`writing the cloud-init seed ISO ${target} failed: ${program} was not found`, {
          argv,
          stderr,
          hint: 'install xorriso: apt-get install xorriso (or run `npm run bootstrap` as root)',
          cause: cause ?? result,
        });
      }
      const why = result.timedOut
        ? `${program} did not finish within ${XORRISO_TIMEOUT_MS / 1000} s`
        : result.exitCode !== undefined
          ? `${program} exited with code ${result.exitCode}`
          : `${program} failed (${result.shortMessage})`;
      const detail = problemLines(stderr);
      throw new SeedError(`writing the cloud-init seed ISO ${target} failed: ${why}${detail ? `:\n${detail}` : ''}`, {
        argv,
        exitCode: result.exitCode,
        stderr,
        cause: result,
      });
    }
    await rename(partial, target);
  } finally {
    await rm(partial, { force: true });
    await rm(dir, { recursive: true, force: true });
  }
}

/** Renders the seed and writes it to `isoPath`. Returns the entries written. */
export async function buildSeed(
  opts: SeedOptions,
  isoPath: string,
  options: WriteSeedIsoOptions = {},
): Promise<SeedEntry[]> {
  const entries = seedEntries(opts);
  await writeSeedIso(entries, isoPath, options);
  return entries;
}
