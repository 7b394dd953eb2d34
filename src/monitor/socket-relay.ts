/**
 * A unix socket on the host whose every connection becomes one `tunnel` over
 * the monitor's agent session to a socket in the guest: `RUN/ID/docker.sock`
 * → the guest's `/run/docker.sock`, so the host's Docker CLI, compose and
 * SDKs drive the VM's dockerd with no network and no TCP port. Bytes pass
 * both ways under the agent's flow control; a half close passes too (Docker's
 * hijacked `attach`/`exec` streams need it). The socket is owner-only, in the
 * owner-only run directory.
 */
import { chmod, rm } from 'node:fs/promises';
import { createServer, type Server, type Socket } from 'node:net';
import type { AgentClient } from '../serial/index.ts';

export interface SocketRelayOptions {
  /** The host's socket, made here (an old one is replaced). */
  path: string;
  /** The guest's socket. */
  target: { to: 'unix'; path: string } | { to: 'tcp'; port: number };
  /** A ready agent session (waits for one; rejects on `signal`). */
  session: (signal: AbortSignal) => Promise<AgentClient>;
  /** How long a connection waits for an agent that is not ready. */
  agentWaitMs: number;
  log: (line: string) => void;
}

export class SocketRelay {
  readonly #o: SocketRelayOptions;
  #server: Server | undefined;
  readonly #open = new Set<Socket>();
  #served = 0;

  constructor(o: SocketRelayOptions) {
    this.#o = o;
  }

  /** Connections relayed so far, and open now. */
  get stats(): { served: number; open: number } {
    return { served: this.#served, open: this.#open.size };
  }

  async listen(): Promise<void> {
    await rm(this.#o.path, { force: true });
    const server = createServer({ allowHalfOpen: true }, (sock) => void this.#relay(sock));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.#o.path, () => {
        server.off('error', reject);
        resolve();
      });
    });
    await chmod(this.#o.path, 0o600);
    server.on('error', (err) => this.#o.log(`relay ${this.#o.path}: ${err.message}`));
    this.#server = server;
  }

  async #relay(sock: Socket): Promise<void> {
    this.#served++;
    this.#open.add(sock);
    const gone = new AbortController();
    sock.once('close', () => gone.abort(new Error('the host side closed')));
    sock.on('error', () => undefined); // a reset ends it through 'close'
    try {
      // No agent in time: the connection is closed, which ends the wait too.
      const timer = setTimeout(() => sock.destroy(), this.#o.agentWaitMs);
      let agent: AgentClient;
      try {
        agent = await this.#o.session(gone.signal);
      } finally {
        clearTimeout(timer);
      }
      // Not the socket itself as the source: its iterator destroys it at the end of what the host sends.
      await agent.tunnel(this.#o.target, { input: sock.iterator({ destroyOnReturn: false }) as AsyncIterable<Buffer>, output: sock, signal: gone.signal });
    } catch (err) {
      if (!gone.signal.aborted) this.#o.log(`relay ${this.#o.path}: ${(err as Error).message}`);
    } finally {
      this.#open.delete(sock);
      sock.destroy();
    }
  }

  /** Stops listening and cuts every open connection. */
  async close(): Promise<void> {
    const server = this.#server;
    this.#server = undefined;
    for (const s of this.#open) s.destroy();
    if (server) await new Promise<void>((r) => server.close(() => r()));
    await rm(this.#o.path, { force: true });
  }
}
