/**
 * The host side of monitor.sock: an AgentClient connected to the monitor
 * (the monitor speaks the agent protocol, so agent methods work unchanged),
 * plus typed calls of the monitor's own methods.
 */
import type { Writable } from 'node:stream';
import * as v from 'valibot';
import { AgentClient, AgentProtocolError } from '../serial/index.ts';
import {
  ConsoleResultSchema,
  MONITOR_METHODS,
  MonitorStatusSchema,
  PortListResultSchema,
  QmpResultSchema,
  StopResultSchema,
  SuspendResultSchema,
  WaitResultSchema,
  type Forward,
  type MonitorStatus,
  type StopResult,
  type SuspendResult,
} from './protocol.ts';
import type { StopTimeouts } from './keeper.ts';

export class MonitorClient {
  private constructor(
    /** The session: agent methods (`ping`, `exec`, `upload`, …) go through it to the guest. */
    readonly agent: AgentClient,
  ) {}

  /**
   * Connects to a monitor's socket; gives up after `timeoutMs` (the socket is
   * missing or nobody answers), or after `maxAttempts` connections (a
   * forwarded socket answers at once or not at all).
   */
  static async connect(socket: string, timeoutMs = 5000, maxAttempts?: number): Promise<MonitorClient> {
    return new MonitorClient(await AgentClient.connect(socket, { timeoutMs, retryDelayMs: 20, syncIntervalMs: 500, ...(maxAttempts !== undefined ? { maxAttempts } : {}) }));
  }

  #check<S extends v.GenericSchema>(schema: S, raw: unknown, method: string): v.InferOutput<S> {
    const r = v.safeParse(schema, raw);
    if (!r.success) throw new AgentProtocolError(`monitor ${method}: invalid result: ${r.issues.map((i) => i.message).join('; ')}`, { received: raw });
    return r.output;
  }

  async status(): Promise<MonitorStatus> {
    return this.#check(MonitorStatusSchema, await this.agent.call(MONITOR_METHODS.status, {}), MONITOR_METHODS.status);
  }

  /** Waits until the guest agent's session is ready (or the VM ends, or `timeoutMs` passes). */
  async waitAgent(timeoutMs: number): Promise<{ agent: string; hostname: string; bootId: string }> {
    const raw = await this.agent.call(MONITOR_METHODS.wait, { until: 'agent', timeoutMs }, { timeoutMs: timeoutMs + 5000 });
    return this.#check(WaitResultSchema, raw, MONITOR_METHODS.wait).hello;
  }

  /** One QMP command on the monitor's connection; QEMU's `return`. */
  async qmp(execute: string, args?: Record<string, unknown>): Promise<unknown> {
    const raw = await this.agent.call(MONITOR_METHODS.qmp, { execute, ...(args === undefined ? {} : { arguments: args }) }, { timeoutMs: 35_000 });
    return this.#check(QmpResultSchema, raw, MONITOR_METHODS.qmp).return;
  }

  /** The stop escalation, run by the monitor; resolves once the VM's end is recorded. */
  async stop(opts: { force?: boolean; timeouts?: Partial<StopTimeouts> } = {}): Promise<StopResult> {
    const t = opts.timeouts ?? {};
    const total = (opts.force ? 0 : (t.agentMs ?? 30_000) + (t.acpiMs ?? 30_000)) + (t.quitMs ?? 5000) + (t.termMs ?? 5000) + (t.killMs ?? 5000) + 30_000;
    const raw = await this.agent.call(MONITOR_METHODS.stop, { ...(opts.force ? { force: true } : {}), ...(opts.timeouts ? { timeouts: opts.timeouts } : {}) }, { timeoutMs: total });
    return this.#check(StopResultSchema, raw, MONITOR_METHODS.stop);
  }

  /**
   * A suspend run by the monitor (pause, save, record `saved`, end QEMU);
   * resolves once the VM's end is recorded. Closing this client before the
   * state is recorded cancels the save, and the guest runs again.
   */
  async suspend(p: { argvShape: string[]; maxBytes: number }): Promise<SuspendResult> {
    return this.#check(SuspendResultSchema, await this.agent.call(MONITOR_METHODS.suspend, p, { timeoutMs: 300_000 }), MONITOR_METHODS.suspend);
  }

  async portAdd(f: Forward): Promise<Forward[]> {
    return this.#check(PortListResultSchema, await this.agent.call(MONITOR_METHODS.portAdd, f), MONITOR_METHODS.portAdd).forwards;
  }

  async portRemove(f: Pick<Forward, 'proto' | 'host' | 'hostAddr'>): Promise<Forward[]> {
    return this.#check(PortListResultSchema, await this.agent.call(MONITOR_METHODS.portRemove, f), MONITOR_METHODS.portRemove).forwards;
  }

  /** The forwards QEMU has now (`info usernet`). */
  async ports(): Promise<Forward[]> {
    return this.#check(PortListResultSchema, await this.agent.call(MONITOR_METHODS.portList, {}), MONITOR_METHODS.portList).forwards;
  }

  /** Follows the serial console into `out` until `signal` aborts or the VM ends. */
  async console(out: Writable, opts: { from: 'start' | 'now'; signal?: AbortSignal }): Promise<{ bytes: number; dropped: number }> {
    const raw = await this.agent.callStreaming(MONITOR_METHODS.console, { from: opts.from }, { stdout: out, ...(opts.signal ? { signal: opts.signal } : {}) });
    return this.#check(ConsoleResultSchema, raw, MONITOR_METHODS.console);
  }

  close(): Promise<void> {
    return this.agent.close();
  }
}
