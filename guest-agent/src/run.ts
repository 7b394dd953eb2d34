/** Runs a guest program the agent itself needs (systemctl, journalctl, useradd): an argv, never a shell; output bounded. */
import { spawn } from 'node:child_process';

export interface RunResult {
  /** The exit code; null when it was killed or could not start. */
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Output kept of each stream: more is dropped (these programs say little). */
const MAX_OUTPUT = 4 * 1024 * 1024;

export function run(argv: readonly string[], o: { env?: NodeJS.ProcessEnv } = {}): Promise<RunResult> {
  return new Promise((resolve) => {
    const child = spawn(argv[0]!, argv.slice(1), { stdio: ['ignore', 'pipe', 'pipe'], ...(o.env ? { env: o.env } : {}) });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    let outBytes = 0;
    let errBytes = 0;
    child.stdout.on('data', (d: Buffer) => {
      if ((outBytes += d.length) <= MAX_OUTPUT) out.push(d);
    });
    child.stderr.on('data', (d: Buffer) => {
      if ((errBytes += d.length) <= MAX_OUTPUT) err.push(d);
    });
    child.once('error', (e) => resolve({ code: null, stdout: '', stderr: `${argv[0]}: ${e.message}` }));
    child.once('close', (code) => resolve({ code, stdout: Buffer.concat(out).toString('utf8'), stderr: Buffer.concat(err).toString('utf8') }));
  });
}

/** `systemctl ARGS`; true when it succeeded. */
export async function systemctl(args: readonly string[]): Promise<boolean> {
  return (await run(['systemctl', ...args])).code === 0;
}
