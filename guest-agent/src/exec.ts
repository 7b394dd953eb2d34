/**
 * `exec`: run an argv (never a shell string) with streamed stdin, stdout and
 * stderr under flow control, a timeout, and an optional TTY.
 *
 * The child leads its own process group: a timeout, a cancel from the host or
 * the end of the host session kills the whole group (SIGTERM, then SIGKILL
 * after KILL_GRACE_MS), so nothing keeps running for a host that is gone.
 *
 * TTY: util-linux `script` (Essential in Debian) allocates the pseudo-terminal,
 * so no native addon is needed. It takes one command line for `sh -c`: the argv
 * is quoted word by word, never interpreted. stdout and stderr are merged on
 * the terminal and arrive as stdout.
 */
import { spawn } from 'node:child_process';
import { ExecParamsSchema, REMOTE_CODES, type ExecResult } from '../../src/protocol/index.ts';
import { RemoteError, parseParams, type Call } from './session.ts';

export const KILL_GRACE_MS = 2000;

/**
 * The agent's own tuning, which commands do not inherit (a caller may still
 * pass them in `env`): OpenSSL's CPU mask from its unit
 * (src/image/agent-unit.ts) and the thread-pool size it sets in main.ts.
 */
export const AGENT_ONLY_ENV = ['OPENSSL_ia32cap', 'UV_THREADPOOL_SIZE'] as const;

/** The environment of a command: the agent's, minus its own tuning, plus the caller's. */
export function commandEnv(agentEnv: NodeJS.ProcessEnv, callerEnv: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...agentEnv };
  for (const name of AGENT_ONLY_ENV) delete env[name];
  return { ...env, ...callerEnv };
}

/** `'a b'` → `'a b'` quoted for sh: every byte literal. */
export function shellQuote(word: string): string {
  return `'${word.replace(/'/g, `'\\''`)}'`;
}

export async function execMethod(call: Call, rawParams: unknown): Promise<ExecResult> {
  const p = parseParams(ExecParamsSchema, rawParams, 'exec');
  return runCommand(call, {
    argv: p.argv,
    env: commandEnv(process.env, p.env),
    cwd: p.cwd ?? '/',
    stdin: p.stdin,
    ...(p.timeoutMs !== undefined ? { timeoutMs: p.timeoutMs } : {}),
    ...(p.tty !== undefined ? { tty: p.tty } : {}),
    ...(p.rows !== undefined && p.cols !== undefined ? { rows: p.rows, cols: p.cols } : {}),
  });
}

/** What runCommand runs: an argv, never a shell string. */
export interface CommandSpec {
  argv: readonly string[];
  env: NodeJS.ProcessEnv;
  cwd: string;
  /** The host streams `stdin`; otherwise stdin is /dev/null. */
  stdin: boolean;
  timeoutMs?: number;
  tty?: boolean;
  /** The terminal's size (with `tty`). */
  rows?: number;
  cols?: number;
  /** Run as this user and group instead of the agent's. */
  uid?: number;
  gid?: number;
}

/** The argv that runs `spec` in a terminal: util-linux script, with the size set first. Pure. */
export function ttyArgv(argv: readonly string[], rows?: number, cols?: number): string[] {
  const size = rows && cols ? `stty rows ${rows} cols ${cols} 2>/dev/null; ` : '';
  return ['script', '--quiet', '--return', '--command', `${size}exec ${argv.map(shellQuote).join(' ')}`, '/dev/null'];
}

/** Runs a command for a call: streams stdin, stdout and stderr; a timeout, a cancel or the session's end kills its group. */
export async function runCommand(call: Call, p: CommandSpec): Promise<ExecResult> {
  const env = { ...p.env };
  let file = p.argv[0] as string;
  let args = p.argv.slice(1);
  if (p.tty) {
    env.SHELL = '/bin/sh';
    env.TERM ??= 'xterm-256color';
    [file, ...args] = ttyArgv(p.argv, p.rows, p.cols) as [string, ...string[]];
  }

  const child = spawn(file, args, {
    cwd: p.cwd,
    env,
    stdio: [p.stdin ? 'pipe' : 'ignore', 'pipe', 'pipe'],
    detached: true,
    ...(p.uid !== undefined ? { uid: p.uid } : {}),
    ...(p.gid !== undefined ? { gid: p.gid } : {}),
  });

  const spawned = new Promise<void>((resolve, reject) => {
    child.once('spawn', resolve);
    child.once('error', (err: NodeJS.ErrnoException) => {
      if (p.tty && err.code === 'ENOENT') {
        reject(new RemoteError(REMOTE_CODES.notSupported, 'exec with tty: util-linux `script` is not installed in the guest'));
      } else reject(new RemoteError(err.code ?? REMOTE_CODES.internal, `exec ${JSON.stringify(p.argv[0])}: ${err.message}`));
    });
  });
  const closed = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.once('close', (code, signal) => resolve({ code, signal }));
  });
  try {
    await spawned;
  } catch (err) {
    // Drain the streams of the failed child so nothing keeps the event loop busy.
    child.stdout?.destroy();
    child.stderr?.destroy();
    child.stdin?.destroy();
    throw err;
  }

  let timedOut = false;
  let killTimer: NodeJS.Timeout | undefined;
  const killGroup = (): void => {
    if (killTimer !== undefined || child.exitCode !== null || child.signalCode !== null) return;
    signalGroup(child.pid, 'SIGTERM');
    killTimer = setTimeout(() => signalGroup(child.pid, 'SIGKILL'), KILL_GRACE_MS);
    killTimer.unref();
  };
  const timeout =
    p.timeoutMs === undefined
      ? undefined
      : setTimeout(() => {
          timedOut = true;
          killGroup();
        }, p.timeoutMs);
  const onAbort = (): void => {
    // Once the child is reaped its pid (and group id) may be reused: never signal it then.
    if (child.exitCode === null && child.signalCode === null) signalGroup(child.pid, 'SIGKILL');
  };
  call.signal.addEventListener('abort', onAbort, { once: true });

  const stdinDone = p.stdin ? feedStdin(call, child.stdin) : Promise.resolve();
  const out = call.sendStream('stdout', child.stdout as AsyncIterable<Buffer>);
  const err = call.sendStream('stderr', child.stderr as AsyncIterable<Buffer>);
  try {
    const [{ code, signal }] = await Promise.all([closed, out, err]);
    return { exitCode: code, signal, timedOut };
  } catch (e) {
    onAbort();
    throw e;
  } finally {
    stdinDone.catch(() => undefined);
    if (timeout !== undefined) clearTimeout(timeout);
    if (killTimer !== undefined) clearTimeout(killTimer);
    call.signal.removeEventListener('abort', onAbort);
  }
}

function signalGroup(pid: number | undefined, signal: NodeJS.Signals): void {
  if (pid === undefined) return;
  try {
    process.kill(-pid, signal);
  } catch {
    // Already gone.
  }
}

/** Copy the host's stdin stream into the child; if the child closes its stdin early, keep consuming (acknowledging) and drop. */
async function feedStdin(call: Call, stdin: NodeJS.WritableStream | null): Promise<void> {
  let open = stdin !== null;
  const w = stdin as import('node:stream').Writable | null;
  w?.on('error', () => {
    open = false;
  });
  try {
    for await (const chunk of call.inbound('stdin')) {
      if (!open || !w || w.destroyed) continue;
      if (!w.write(chunk)) {
        await new Promise<void>((resolve) => {
          const done = (): void => {
            w.off('drain', done);
            w.off('close', done);
            w.off('error', done);
            resolve();
          };
          w.on('drain', done);
          w.on('close', done);
          w.on('error', done);
        });
      }
    }
  } finally {
    if (w && !w.destroyed) w.end();
  }
}
