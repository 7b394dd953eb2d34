/**
 * QEMU as the monitor's child: the one the launcher forked before the monitor
 * became Node (a fresh start, launcher.ts), or one the monitor spawns itself
 * (after a reboot or a crash). Either way the monitor is its parent and learns
 * its exit status. Node built-ins only: the monitor's entry loads this first.
 */
import { Buffer } from 'node:buffer';
import { spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, closeSync, openSync, readFileSync, renameSync, rmSync } from 'node:fs';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { join } from 'node:path';
import { FILES, type Layout } from '../layout.ts';
import { statExit, type ExitStatus } from '../proc.ts';

/** How long QEMU may take to serve its QMP socket after it was started. */
export const QMP_SOCKET_TIMEOUT_MS = 10_000;

export interface EarlyQemu {
  pid: number;
  /** Signals this QEMU (nothing once it has exited: its PID stays ours, unreaped or reaped by Node). */
  kill(signal: NodeJS.Signals): void;
  /** Resolves when QEMU exits. */
  exited: Promise<ExitStatus>;
  /** Rejects when QEMU could not be started at all (ENOENT, EACCES). */
  spawned: Promise<void>;
  startedAt: number;
  /** Milliseconds since this process started, at the spawn (for the log). */
  spawnedAtMs: number;
  /** Set when the entry has already resumed this QEMU and reported it running (resumeEarly). */
  handover?: Handover;
}

/**
 * Before each QEMU: stale sockets of an earlier run would make QEMU fail to
 * bind, and a stale pidfile would name another process; the last run's
 * qemu.log moves to qemu.log.1 and a new one is made owner-only. Returns the
 * log's path.
 */
export function prepareQemuRun(layout: Layout, id: string): string {
  const runDir = layout.vmRunDir(id);
  for (const s of ['qmpSocket', 'qmpUserSocket', 'agentSocket', 'consoleSocket', 'pidfile'] as const) rmSync(join(runDir, FILES[s]), { force: true });
  const log = join(layout.vmDir(id), FILES.qemuLog);
  try {
    renameSync(log, `${log}.1`);
  } catch {
    // no earlier run
  }
  closeSync(openSync(log, 'a', 0o600));
  return log;
}

/** Spawns QEMU by the VM's jailed command (launch.json's `exec`), output to qemu.log. */
export function spawnQemu(layout: Layout, id: string, exec: readonly string[]): EarlyQemu {
  const log = prepareQemuRun(layout, id);
  const [binary, ...args] = exec;
  const fd = openSync(log, 'a', 0o600);
  let child: ChildProcess;
  try {
    // QEMU's output goes to its log file, never to a pipe the monitor holds: a killed monitor must not block QEMU.
    // Not detached: the jailed command's setsid makes QEMU's session, and would fork (a new PID) in a group leader.
    child = spawn(binary!, args, { stdio: ['ignore', fd, fd] });
  } finally {
    closeSync(fd);
  }
  const exited = new Promise<ExitStatus>((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  const spawned = new Promise<void>((resolve, reject) => {
    child.once('spawn', resolve);
    child.once('error', reject);
  });
  spawned.catch(() => undefined);
  return { pid: child.pid ?? 0, kill: (signal) => void child.kill(signal), exited, spawned, startedAt: Date.now(), spawnedAtMs: Math.round(process.uptime() * 1000) };
}

/**
 * QEMU that the launcher forked before it exec'd this process: our child,
 * unknown to Node's child_process. Its exit comes as SIGCHLD and its status
 * is read from its zombie's /proc/PID/stat, which stays until this process
 * exits (Node reaps only the children it spawned), so the PID cannot be
 * reused meanwhile. Checked once at once too: QEMU may have ended before Node
 * was listening.
 */
export function forkedQemu(pid: number): EarlyQemu {
  const exited = new Promise<ExitStatus>((resolve) => {
    const check = (): void => {
      let exit: ExitStatus | undefined;
      try {
        exit = statExit(readFileSync(`/proc/${pid}/stat`, 'latin1'));
      } catch {
        // Gone without a zombie: not our child (the PID was wrong), nothing to read.
        exit = { code: null, signal: null };
      }
      if (!exit) return;
      process.off('SIGCHLD', check);
      resolve(exit);
    };
    process.on('SIGCHLD', check);
    check();
  });
  const kill = (signal: NodeJS.Signals): void => {
    try {
      process.kill(pid, signal);
    } catch {
      // already gone
    }
  };
  // The launcher forked QEMU a moment before Node started: this process's own start time is as close as it gets.
  return { pid, kill, exited, spawned: Promise.resolve(), startedAt: Date.now() - Math.round(process.uptime() * 1000), spawnedAtMs: 0 };
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** The most a console socket read returns: the size of the buffer it is read into. */
export const CONSOLE_READ_BYTES = 64 * 1024;

/**
 * A socket read into one buffer, the same for every read (net's `onread`),
 * instead of a new Buffer per read. A guest printing to its UART makes
 * thousands of reads of a few bytes a second; each as a Buffer of its own,
 * with its `data` event and write, was garbage that a 16 MiB young generation
 * let pile up (a 4 MiB flood grew the monitor by 41.6 MiB). `sink` gets the
 * buffer and the byte count, must copy what it keeps, and returns false to
 * pause the socket. Bytes read before a sink is set are kept and handed to it
 * first (the socket is made paused, so there should be none).
 */
export class ReusedReads {
  readonly buffer = Buffer.allocUnsafe(CONSOLE_READ_BYTES);
  #sink: ((buf: Buffer, n: number) => boolean) | undefined;
  #early: Buffer[] = [];
  readonly onread = {
    buffer: this.buffer,
    callback: (n: number): boolean => {
      if (this.#sink) return this.#sink(this.buffer, n);
      this.#early.push(Buffer.from(this.buffer.subarray(0, n)));
      return false;
    },
  };

  /** Where reads go from now on; returns whether the socket may read on. */
  sinkTo(sink: (buf: Buffer, n: number) => boolean): boolean {
    this.#sink = sink;
    let more = true;
    for (const b of this.#early.splice(0)) more = sink(b, b.length) && more;
    return more;
  }
}

/**
 * Connects to a unix socket QEMU serves, retrying while QEMU lives (it binds
 * a moment before it listens: a connect in between is refused). The socket
 * is paused: nothing is read from it until its owner resumes it. With
 * `reads`, it is read into their buffer (no `data` events).
 */
export async function connectRetrying(path: string, alive: () => boolean, deadline: number, reads?: ReusedReads): Promise<Socket | undefined> {
  for (;;) {
    const s = await new Promise<Socket | undefined>((resolve) => {
      const socket = connect(reads ? { path, onread: reads.onread } : { path });
      socket.pause();
      socket.once('connect', () => {
        socket.removeAllListeners('error');
        // Until its owner listens: an error then must not be an uncaught one.
        socket.on('error', () => undefined);
        resolve(socket);
      });
      socket.once('error', () => resolve(undefined));
    });
    if (s) return s;
    if (!alive() || Date.now() >= deadline) return undefined;
    await sleep(5);
  }
}

/**
 * What the monitor's entry did before the body loaded, on a fresh start:
 * GoShip's QMP connection negotiated and QEMU resumed (`cont`), the serial
 * console connected before that (paused: nothing of it is read, so nothing
 * is lost). The body adopts both.
 */
export interface Handover {
  qmp: Socket;
  /** QEMU's greeting line. */
  greeting: string;
  /** Bytes QEMU sent that are not the greeting nor a reply to the entry's commands (its events), in order. */
  pending: Buffer;
  console: Socket;
  /** How the console socket is read (it was connected with them). */
  consoleReads: ReusedReads;
  /** monitor.sock, listening already: clients that come before the body has loaded wait, paused, in `queued`. */
  listener: Listener;
  /** Milliseconds since the process started, for the monitor's log. */
  marks: string[];
}

export interface Listener {
  server: Server;
  queued: Socket[];
}

/** Whether something accepts connections on the unix socket `path`. */
export function answering(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect({ path });
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

/**
 * Listens on the unix socket `path`, owner-only. A stale socket file (nobody
 * answering) is replaced; a live one is refused (undefined). Connections
 * come paused, and wait in `queued` until the server's owner takes them.
 */
export async function listenUnix(path: string): Promise<Listener | undefined> {
  if (await answering(path)) return undefined;
  rmSync(path, { force: true });
  const queued: Socket[] = [];
  const server = createServer({ pauseOnConnect: true }, (socket) => {
    socket.on('error', () => undefined);
    queued.push(socket);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(path, () => {
      server.off('error', reject);
      resolve();
    });
  });
  chmodSync(path, 0o600);
  return { server, queued };
}

/** Longest line the entry reads from QEMU (the greeting, a reply, an event). */
const ENTRY_MAX_LINE = 1 << 20;

/**
 * Lines from a socket, for the few exchanges of the entry; `release()`
 * pauses the socket and returns every byte not consumed.
 */
function lineReader(socket: Socket): { line(): Promise<string | undefined>; keep(line: string): void; release(): Buffer } {
  let rest: Buffer = Buffer.alloc(0);
  const lines: string[] = [];
  const kept: string[] = [];
  let ended = false;
  let wake: (() => void) | undefined;
  const onData = (chunk: Buffer): void => {
    rest = rest.length === 0 ? chunk : Buffer.concat([rest, chunk]);
    for (let nl = rest.indexOf(10); nl !== -1; nl = rest.indexOf(10)) {
      lines.push(rest.subarray(0, nl).toString('utf8'));
      rest = rest.subarray(nl + 1);
    }
    if (rest.length > ENTRY_MAX_LINE) socket.destroy();
    wake?.();
  };
  const onClose = (): void => {
    ended = true;
    wake?.();
  };
  socket.on('data', onData);
  socket.once('close', onClose);
  socket.resume();
  return {
    async line() {
      while (lines.length === 0) {
        if (ended) return undefined;
        await new Promise<void>((r) => (wake = r));
        wake = undefined;
      }
      return lines.shift();
    },
    keep: (line) => kept.push(line),
    release() {
      socket.pause();
      socket.off('data', onData);
      socket.off('close', onClose);
      return Buffer.concat([...[...kept, ...lines].map((l) => Buffer.from(`${l}\n`)), rest]);
    },
  };
}

/**
 * On a fresh start, before the monitor's body has loaded: negotiates QMP,
 * connects the console and resumes QEMU, so the VM runs ~30 ms sooner (the
 * body's load no longer comes first). Node built-ins only. Anything
 * unexpected (QEMU gone, an error reply, `timeoutMs` passed) closes what was
 * opened and returns why: the body then starts QEMU's run its usual way.
 */
export async function resumeEarly(paths: { qmp: string; console: string; monitor: string }, alive: () => boolean, timeoutMs: number): Promise<Handover | string> {
  const ms = (): string => (process.uptime() * 1000).toFixed(0);
  const deadline = Date.now() + timeoutMs;
  const listening = listenUnix(paths.monitor).catch((err: Error) => err);
  const qmp = await connectRetrying(paths.qmp, alive, deadline);
  const consoleReads = new ReusedReads();
  const consoleConnecting = qmp ? connectRetrying(paths.console, alive, deadline, consoleReads) : Promise.resolve(undefined);
  const giveUp = async (why: string): Promise<string> => {
    qmp?.destroy();
    (await consoleConnecting)?.destroy();
    // Closing a listening unix socket unlinks its path: the body listens again.
    const l = await listening;
    if (l && !(l instanceof Error)) l.server.close();
    return why;
  };
  if (!qmp) return giveUp('no QMP connection');
  const timer = setTimeout(() => qmp.destroy(), Math.max(1, deadline - Date.now()));
  const reader = lineReader(qmp);
  /** Sends a command; undefined once it returned, else why not. Events met meanwhile are kept for the body. */
  const execute = async (command: string, id: string): Promise<string | undefined> => {
    qmp.write(`${JSON.stringify({ execute: command, id })}\n`);
    for (;;) {
      const line = await reader.line();
      if (line === undefined) return `the QMP connection closed before the reply to ${command}`;
      const m = jsonObject(line);
      if (m?.id === id) return 'return' in m ? undefined : `${command}: ${JSON.stringify(m.error ?? m)}`;
      if (typeof m?.event === 'string') reader.keep(line);
    }
  };
  const marks: string[] = [`connected ${ms()}`];
  let greeting: string | undefined;
  let consoleConn: Socket | undefined;
  let listener: Listener | undefined;
  const why = await (async (): Promise<string | undefined> => {
    greeting = await reader.line();
    if (greeting === undefined || jsonObject(greeting)?.QMP === undefined) return 'no QMP greeting';
    const refused = await execute('qmp_capabilities', 'entry-1');
    if (refused) return refused;
    marks.push(`QMP ${ms()}`);
    // The console before the guest runs: its first bytes must reach console.log.
    consoleConn = await consoleConnecting;
    if (!consoleConn) return 'no console connection';
    const l = await listening;
    if (l instanceof Error) return `cannot listen on ${paths.monitor}: ${l.message}`;
    if (!l) return `another monitor answers on ${paths.monitor}`;
    listener = l;
    return await execute('cont', 'entry-2');
  })();
  clearTimeout(timer);
  if (why !== undefined || !consoleConn || !listener || greeting === undefined) return giveUp(why ?? 'not ready');
  marks.push(`cont ${ms()}`);
  return { qmp, greeting, pending: reader.release(), console: consoleConn, consoleReads, listener, marks };
}

function jsonObject(line: string): Record<string, unknown> | undefined {
  try {
    const m: unknown = JSON.parse(line);
    return typeof m === 'object' && m !== null && !Array.isArray(m) ? (m as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}
