/**
 * The real transport: the virtio-serial character device.
 *
 * The port has no connection semantics: the guest cannot tell a host that
 * went away from one that never came. While the host side is not connected
 * `read()` returns 0 at once (which looks like EOF), `poll` reports POLLHUP,
 * and `write()` blocks. So the agent reads with
 * blocking `read(2)` calls on a thread of its own (port-reader.ts), treats 0
 * as "the host went away" (the session ends), never exits on it, and polls
 * again with a backoff of 100 ms doubling to 1 s: no spinning, and a
 * returning host is noticed within a second (the host repeats its sync until
 * it is answered).
 */
import { Buffer } from 'node:buffer';
import { open, readFile, readdir, stat, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { AGENT_PORT_NAME, encodeLine } from '../../src/protocol/index.ts';
import { FdLink, type Link } from './link.ts';
import { readPort } from './port-reader.ts';
import { AgentSession, type AgentContext, type Handler } from './session.ts';

export const BACKOFF_MIN_MS = 100;
export const BACKOFF_MAX_MS = 1000;

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** `/dev/virtio-ports/<name>` if udev made the link, else the `/dev/vportNpM` whose sysfs name matches. */
export async function findPort(name: string = AGENT_PORT_NAME): Promise<string | undefined> {
  const link = join('/dev/virtio-ports', name);
  // stat, not open: opening the port tells the host the guest side is connected.
  try {
    await stat(link);
    return link;
  } catch {
    return scanSysfs(name);
  }
}

async function scanSysfs(name: string): Promise<string | undefined> {
  let entries: string[];
  try {
    entries = await readdir('/sys/class/virtio-ports');
  } catch {
    return undefined;
  }
  for (const dev of entries.sort()) {
    try {
      const n = (await readFile(join('/sys/class/virtio-ports', dev, 'name'), 'utf8')).trim();
      if (n === name && /^vport\d+p\d+$/.test(dev)) return join('/dev', dev);
    } catch {
      // a port without a name
    }
  }
  return undefined;
}

export interface PortOptions {
  /** Read and write this path; default: found with `findPort()`. */
  path?: string;
  /** Test mode with two FIFOs: read `inPath`, write `outPath` (a FIFO returns 0 without a writer, like the port). */
  inPath?: string;
  outPath?: string;
  ctx: AgentContext;
  handlers: Record<string, Handler>;
  /** Stop after this signal aborts (tests); the agent itself runs forever. */
  signal?: AbortSignal;
}

/** Serve the protocol on the port forever: reopen it if it fails, survive any number of host sessions. */
export async function servePort(opts: PortOptions): Promise<void> {
  const { ctx } = opts;
  warmUp(ctx, opts.handlers);
  let missingLogged = false;
  let retryMs = BACKOFF_MIN_MS;
  while (!opts.signal?.aborted) {
    let input: FileHandle | undefined;
    let output: FileHandle | undefined;
    try {
      if (opts.inPath !== undefined && opts.outPath !== undefined) {
        input = await open(opts.inPath, 'r');
        output = await open(opts.outPath, 'w');
      } else {
        const path = opts.path ?? (await findPort());
        if (path === undefined) {
          if (!missingLogged) ctx.log(`virtio-serial port ${AGENT_PORT_NAME} not found (/dev/virtio-ports, /sys/class/virtio-ports); waiting for it`);
          missingLogged = true;
          await sleep(retryMs);
          retryMs = Math.min(retryMs * 2, 5000);
          continue;
        }
        input = await open(path, 'r+');
        ctx.log(`serving on ${path}`);
      }
    } catch (err) {
      ctx.log(`cannot open the port: ${(err as Error).message}; retrying`);
      await input?.close().catch(() => undefined);
      await sleep(retryMs);
      retryMs = Math.min(retryMs * 2, 5000);
      continue;
    }
    missingLogged = false;
    retryMs = BACKOFF_MIN_MS;
    const link = new FdLink((output ?? input).fd, ctx.log);
    const session = new AgentSession(link, ctx, opts.handlers);
    session.announce();
    try {
      await readLoop(input.fd, session, opts.signal);
    } catch (err) {
      ctx.log(`reading the port failed: ${(err as Error).message}; reopening`);
    } finally {
      session.end('port closed');
      link.kill();
      await input.close().catch(() => undefined);
      await output?.close().catch(() => undefined);
    }
    await sleep(BACKOFF_MAX_MS);
  }
}

/** Read the port until `signal` aborts; 0 means "no host": end the session (the reader backs off). Throws on a read error. */
function readLoop(fd: number, session: AgentSession, signal: AbortSignal | undefined): Promise<void> {
  return readPort(
    fd,
    (chunk) => session.push(chunk),
    () => session.end('host disconnected (read returned 0)'),
    { backoffMinMs: BACKOFF_MIN_MS, backoffMaxMs: BACKOFF_MAX_MS },
    signal,
  );
}

let warmed = false;

/**
 * Runs the sync → hello path once on a scratch session before the agent
 * announces itself. Under TCG, V8 compiling the decoder, the schemas and the
 * hello for the first time takes a noticeable part of a second; paid here, it
 * is not paid again between the host's sync and the agent's answer.
 */
function warmUp(ctx: AgentContext, handlers: Record<string, Handler>): void {
  if (warmed) return;
  warmed = true;
  const sink: Link = { write: () => undefined, whenWritable: () => Promise.resolve(), dropQueued: () => undefined };
  const scratch = new AgentSession(sink, { ...ctx, log: () => undefined }, handlers);
  scratch.push(Buffer.concat([Buffer.from('\n'), encodeLine({ t: 'sync', nonce: 'warm-up' })]));
  scratch.end('warm-up done');
}
