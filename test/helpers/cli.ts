/** Runs the bundled goshipctl (dist/, built by the global setup) as a real process. */
import { execa } from 'execa';
import { join } from 'node:path';

export const CLI = join(import.meta.dirname, '..', '..', 'bin', 'goshipctl.mjs');

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
