/**
 * The unix sockets of a VM's monitor: connecting to the ones QEMU serves
 * (QMP, the serial console), reading the console into one reused buffer, and
 * listening on monitor.sock, owner-only. Node built-ins only.
 */
import { Buffer } from 'node:buffer';
import { chmodSync, rmSync } from 'node:fs';
import { connect, createServer, type Server, type Socket } from 'node:net';

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
