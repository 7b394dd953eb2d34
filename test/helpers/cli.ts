/** Runs the bundled goshipctl (dist/, built by the global setup) as a real process. */
import { execa } from 'execa';
import { join } from 'node:path';

export const CLI = join(import.meta.dirname, '..', '..', 'bin', 'goshipctl.cjs');

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

export async function goshipctl(args: string[], env: NodeJS.ProcessEnv, opts: { input?: string; timeoutMs?: number; cwd?: string } = {}): Promise<CliResult> {
  const r = await execa(process.execPath, [CLI, ...args], {
    env,
    ...(opts.cwd !== undefined ? { cwd: opts.cwd } : {}),
    extendEnv: false,
    reject: false,
    timeout: opts.timeoutMs ?? 120_000,
    ...(opts.input !== undefined ? { input: opts.input } : { stdin: 'ignore' }),
  });
  return { code: r.exitCode ?? -1, stdout: r.stdout, stderr: r.stderr };
}

/**
 * The three ways an end-to-end test runs goshipctl, bound to an environment
 * made later (in beforeAll): `g` returns the result, `ok` its stdout or throws
 * with stderr, `json` parses `--json` output.
 */
export function cliOf(envOf: () => NodeJS.ProcessEnv, defaultTimeoutMs: number) {
  const g = (args: string[], timeoutMs = defaultTimeoutMs): Promise<CliResult> => goshipctl(args, envOf(), { timeoutMs });
  const ok = async (args: string[], timeoutMs?: number): Promise<string> => {
    const r = await g(args, timeoutMs);
    if (r.code !== 0) throw new Error(`goshipctl ${args.join(' ')} failed (${r.code}): ${r.stderr}`);
    return r.stdout;
  };
  const json = async <T>(args: string[]): Promise<T> => JSON.parse(await ok([...args, '--json'])) as T;
  return { g, ok, json };
}
