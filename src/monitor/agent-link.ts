/**
 * The monitor's one session with the guest agent, kept for the VM's whole
 * life: connected (and synced) as soon as QEMU runs, dropped when the guest
 * resets or closes its port, synced again when the agent comes back. Every
 * client of the monitor shares it, so no command pays a handshake.
 */
import { AgentClient, AgentClosedError, AgentUnavailableError, type AgentHello } from '../serial/index.ts';

export interface AgentLinkOptions {
  socket: string;
  log: (line: string) => void;
  /** Called once per session, when the agent's hello arrives. */
  onReady: (hello: AgentHello) => void;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export class AgentLink {
  readonly #opts: AgentLinkOptions;
  #client: AgentClient | undefined;
  #waiters: Array<{ resolve: (c: AgentClient) => void; reject: (e: Error) => void; signal: AbortSignal; onAbort: () => void }> = [];
  #stopped: Error | undefined;
  /** The guest said it cannot run the agent: waiters fail with this until a hello comes after all. */
  #unavailable: AgentUnavailableError | undefined;
  #lastHello: AgentHello | undefined;
  #sessions = 0;
  #loop: Promise<void> | undefined;
  readonly #abort = new AbortController();

  constructor(opts: AgentLinkOptions) {
    this.#opts = opts;
  }

  get ready(): boolean {
    return this.#client !== undefined && !this.#client.closed;
  }

  get lastHello(): AgentHello | undefined {
    return this.#lastHello;
  }

  get sessions(): number {
    return this.#sessions;
  }

  /** The current session, if one is up. */
  get current(): AgentClient | undefined {
    return this.ready ? this.#client : undefined;
  }

  /** Starts connecting (and reconnecting) in the background until `stop()`. */
  start(): void {
    this.#loop ??= this.#run();
  }

  /** A ready session: at once, or when the agent is next ready. Rejects once the link stops, or on `signal`. */
  session(signal: AbortSignal): Promise<AgentClient> {
    if (this.#stopped) return Promise.reject(this.#stopped);
    const c = this.current;
    if (c) return Promise.resolve(c);
    if (this.#unavailable) return Promise.reject(this.#unavailable);
    if (signal.aborted) return Promise.reject(signal.reason);
    return new Promise((resolve, reject) => {
      const w = {
        resolve,
        reject,
        signal,
        onAbort: () => {
          this.#waiters = this.#waiters.filter((x) => x !== w);
          reject(signal.reason);
        },
      };
      signal.addEventListener('abort', w.onAbort, { once: true });
      this.#waiters.push(w);
    });
  }

  /** The guest reset or closed its port: the session is gone; requests on it fail, a new one is made. */
  drop(reason: string): void {
    const c = this.#client;
    if (!c || c.closed) return;
    this.#opts.log(`agent session dropped: ${reason}`);
    void c.close(`the guest agent's session ended (${reason}): what was running in the guest may have been cut off`);
  }

  /** No more sessions: waiters and the current session fail with `reason`. */
  async stop(reason: Error): Promise<void> {
    this.#stopped = reason;
    this.#abort.abort(reason);
    for (const w of this.#waiters.splice(0)) {
      w.signal.removeEventListener('abort', w.onAbort);
      w.reject(reason);
    }
    await this.#client?.close();
    await this.#loop;
  }

  async #run(): Promise<void> {
    while (!this.#stopped) {
      let client: AgentClient;
      try {
        // Long attempts: a booting guest under TCG takes a while. The sync repeats every second.
        client = await AgentClient.connect(this.#opts.socket, { timeoutMs: 60_000, retryDelayMs: 200, requestTimeoutMs: 30_000, signal: this.#abort.signal });
      } catch (err) {
        if (this.#stopped) return;
        if (err instanceof AgentUnavailableError) {
          // Said once, failed at once: every waiter now, and every new one until the guest changes its mind.
          if (!this.#unavailable) this.#opts.log(`agent: ${err.message}`);
          this.#unavailable = err;
          for (const w of this.#waiters.splice(0)) {
            w.signal.removeEventListener('abort', w.onAbort);
            w.reject(err);
          }
          await sleep(2000);
          continue;
        }
        const why = (err as Error).message;
        if (!/no hello within/.test(why)) this.#opts.log(`agent: ${why}`);
        await sleep(500);
        continue;
      }
      if (this.#stopped) {
        await client.close();
        return;
      }
      this.#client = client;
      this.#unavailable = undefined;
      this.#sessions++;
      this.#lastHello = client.hello;
      this.#opts.log(`agent session ${this.#sessions}: agent ${client.hello.agent}, hostname ${JSON.stringify(client.hello.hostname)}, boot ${client.hello.bootId}`);
      this.#opts.onReady(client.hello);
      for (const w of this.#waiters.splice(0)) {
        w.signal.removeEventListener('abort', w.onAbort);
        w.resolve(client);
      }
      await client.closedPromise();
      const why = client.closeReason;
      this.#client = undefined;
      if (!this.#stopped && why && !(why instanceof AgentClosedError && why.byClient)) this.#opts.log(`agent session ended: ${why.message}`);
    }
  }
}
