/**
 * The monitor's own methods on `monitor.sock`. The socket speaks the agent
 * protocol (docs/agent-protocol.md): a client syncs, gets a hello, and sends
 * requests. Agent methods (`ping`, `exec`, `upload`…) are relayed to the one
 * agent session; the methods here, all named `monitor.*`, the monitor answers
 * itself. Their params and results are valibot schemas, checked on both ends.
 */
import * as v from 'valibot';
import { END_KINDS, STOP_STEPS } from '../store/index.ts';

export const MONITOR_METHODS = {
  status: 'monitor.status',
  wait: 'monitor.wait',
  qmp: 'monitor.qmp',
  stop: 'monitor.stop',
  suspend: 'monitor.suspend',
  portAdd: 'monitor.port.add',
  portRemove: 'monitor.port.remove',
  portList: 'monitor.port.list',
  console: 'monitor.console',
} as const;

/** Method names the monitor answers itself; every other method goes to the agent. */
export const MONITOR_PREFIX = 'monitor.';

const Count = v.pipe(v.number(), v.integer(), v.minValue(0));
const Port = v.pipe(v.number(), v.integer(), v.minValue(1), v.maxValue(65535));
const Ms = v.pipe(v.number(), v.integer(), v.minValue(0), v.maxValue(2 ** 31 - 1));
const IPV4 = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/;

export const ForwardSchema = v.object({
  proto: v.picklist(['tcp', 'udp']),
  host: Port,
  guest: Port,
  hostAddr: v.pipe(v.string(), v.regex(IPV4, 'expected an IPv4 address')),
});
export type Forward = v.InferOutput<typeof ForwardSchema>;

export const HelloFieldsSchema = v.object({
  agent: v.string(),
  hostname: v.string(),
  bootId: v.string(),
});

export const MonitorStatusSchema = v.object({
  vm: v.string(),
  /** The monitor's view: QEMU `starting`, `running` (agent not yet ready), `ready`, `stopping`, `restarting`, `ended`. */
  state: v.picklist(['starting', 'running', 'ready', 'stopping', 'restarting', 'ended']),
  monitor: v.object({ pid: Count, adopted: v.boolean(), clients: Count, startedAt: v.string() }),
  qemu: v.object({ pid: v.nullable(Count), status: v.nullable(v.string()), startedAt: v.nullable(v.string()) }),
  agent: v.object({ ready: v.boolean(), hello: v.nullable(HelloFieldsSchema), sessions: Count }),
  ports: v.array(ForwardSchema),
  console: v.object({ bytes: Count, rotations: Count }),
  restarts: Count,
  /** Guest reboots this monitor followed (each a fresh QEMU). */
  reboots: Count,
  /** The last QMP events, newest last (`RESET guest-reset`, `BLOCK_IO_ERROR disk0 …`). */
  events: v.array(v.string()),
});
export type MonitorStatus = v.InferOutput<typeof MonitorStatusSchema>;

export const WaitParamsSchema = v.object({
  /** `agent`: until the agent's session is ready. */
  until: v.picklist(['agent']),
  timeoutMs: Ms,
});
export const WaitResultSchema = v.object({ hello: HelloFieldsSchema });

export const QmpParamsSchema = v.object({
  execute: v.pipe(v.string(), v.minLength(1), v.maxLength(128), v.regex(/^[A-Za-z][A-Za-z0-9_-]*$/, 'expected a QMP command name')),
  arguments: v.optional(v.record(v.string(), v.unknown())),
});
export const QmpResultSchema = v.object({ return: v.unknown() });

export const StopParamsSchema = v.object({
  force: v.optional(v.boolean()),
  timeouts: v.optional(
    v.object({
      agentMs: v.optional(Ms),
      acpiMs: v.optional(Ms),
      quitMs: v.optional(Ms),
      termMs: v.optional(Ms),
      killMs: v.optional(Ms),
    }),
  ),
});
export const StopResultSchema = v.object({
  endedBy: v.picklist([...STOP_STEPS, 'already']),
  attempts: v.array(v.object({ step: v.picklist(STOP_STEPS), outcome: v.picklist(['ended', 'timeout', 'unavailable']), detail: v.optional(v.string()) })),
  end: v.object({ kind: v.picklist(END_KINDS), summary: v.string() }),
});
export type StopResult = v.InferOutput<typeof StopResultSchema>;

export const SuspendParamsSchema = v.object({
  /** What the state is recorded as saved from (`Vm.saved.argvShape`): a start with another argv refuses it. */
  argvShape: v.pipe(v.array(v.pipe(v.string(), v.maxLength(65_536))), v.maxLength(4096)),
  /** A longer stream is cut: the VM's memory and devices, at most. */
  maxBytes: v.pipe(v.number(), v.integer(), v.minValue(1)),
});
export const SuspendResultSchema = v.object({
  saved: v.object({ file: v.string(), bytes: Count, at: v.string() }),
  ms: v.number(),
  stop: StopResultSchema,
});
export type SuspendResult = v.InferOutput<typeof SuspendResultSchema>;

export const PortAddParamsSchema = ForwardSchema;
export const PortRemoveParamsSchema = v.object({ proto: v.picklist(['tcp', 'udp']), host: Port, hostAddr: v.pipe(v.string(), v.regex(IPV4)) });
export const PortListResultSchema = v.object({ forwards: v.array(ForwardSchema) });

export const ConsoleParamsSchema = v.object({
  /** `start`: what console.log (and its rotated files) hold, then live; `now`: live only. */
  from: v.picklist(['start', 'now']),
});
export const ConsoleResultSchema = v.object({ bytes: Count, dropped: Count });
