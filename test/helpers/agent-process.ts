/**
 * The real bundled guest agent (dist/goship-agent.mjs, built by the global
 * setup) run on the host in `--listen` test mode, as a child process.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';

export const AGENT_BUNDLE = resolve('dist/goship-agent.mjs');

export interface RunningAgent {
  readonly child: ChildProcess;
  readonly pid: number;
  /** Everything the agent logged. */
  stderr(): string;
  /** SIGKILL and wait for the exit. */
  kill(): Promise<void>;
}

/** Start `node dist/goship-agent.mjs ARGS`; with `--listen`, resolve once it listens. */
export async function spawnAgent(args: string[], options: { waitFor?: RegExp; env?: NodeJS.ProcessEnv } = {}): Promise<RunningAgent> {
  const child = spawn(process.execPath, [AGENT_BUNDLE, ...args], { stdio: ['ignore', 'ignore', 'pipe'], env: options.env ?? process.env });
  let log = '';
  child.stderr?.setEncoding('utf8');
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  const ready = new Promise<void>((resolveReady, reject) => {
    if (!options.waitFor) resolveReady();
    child.stderr?.on('data', (s: string) => {
      log += s;
      if (options.waitFor?.test(log)) resolveReady();
    });
    child.once('exit', (code) => reject(new Error(`agent exited with ${code} before it was ready: ${log}`)));
  });
  await ready;
  return {
    child,
    pid: child.pid as number,
    stderr: () => log,
    kill: async () => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      await exited;
    },
  };
}

export function listenAgent(socketPath: string, env?: NodeJS.ProcessEnv): Promise<RunningAgent> {
  return spawnAgent(['--listen', socketPath], { waitFor: /listening on/, ...(env ? { env } : {}) });
}

export async function tempDir(prefix = 'gsa-'): Promise<{ dir: string; cleanup: () => Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  return { dir, cleanup: () => rm(dir, { recursive: true, force: true }) };
}

/** A temporary directory holding a FIFO named `port`: the agent's test stand-in for its virtio-serial port. */
export async function tempFifo(prefix: string): Promise<{ dir: string; fifo: string; cleanup: () => Promise<void> }> {
  const t = await tempDir(prefix);
  const fifo = join(t.dir, 'port');
  execFileSync('mkfifo', [fifo]);
  return { ...t, fifo };
}

/** CPU time (user + system, in clock ticks) a process has used, from /proc/PID/stat. */
export async function cpuTicks(pid: number): Promise<number> {
  const { readFile } = await import('node:fs/promises');
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return Number(fields[11]) + Number(fields[12]);
}
