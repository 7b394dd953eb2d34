/**
 * valibot schemas of every message and of every method's params and result.
 *
 * Both sides validate everything they receive: the host treats the guest as
 * untrusted, the agent treats stale or garbled bytes as possible. Objects are
 * parsed with `v.object`, which drops unknown keys, so nothing unexpected from
 * the other side survives validation.
 */
import * as v from 'valibot';
import { MAX_CHUNK, MAX_NONCE, MIN_CHUNK, STREAM_NAMES, STREAM_WINDOW } from './constants.ts';

const MAX_PATH = 4096;
const MAX_ARG = 128 * 1024;

/** A request id: positive safe integer chosen by the host. */
export const IdSchema = v.pipe(v.number(), v.integer(), v.minValue(1), v.maxValue(Number.MAX_SAFE_INTEGER));
export const StreamSchema = v.picklist(STREAM_NAMES);
const ByteCount = v.pipe(v.number(), v.integer(), v.minValue(0), v.maxValue(Number.MAX_SAFE_INTEGER));
const NoNul = v.check<string, string>((s) => !s.includes('\0'), 'must not contain NUL');
const AbsolutePath = v.pipe(
  v.string(),
  v.minLength(1),
  v.maxLength(MAX_PATH),
  v.startsWith('/', 'must be an absolute path'),
  NoNul,
);

// ---------------------------------------------------------------- messages

/**
 * The limits a side announces as a receiver: its largest data frame and its
 * window per stream. The other side sends within them (and within its own
 * MAX_CHUNK and STREAM_WINDOW: `sendLimits`). A peer that announces none is
 * sent to within UNANNOUNCED_LIMITS.
 */
export const LimitsSchema = v.object({
  chunk: v.pipe(v.number(), v.integer(), v.minValue(MIN_CHUNK), v.maxValue(2 ** 30)),
  window: v.pipe(v.number(), v.integer(), v.minValue(MIN_CHUNK), v.maxValue(2 ** 40)),
});

export const SyncSchema = v.object({
  t: v.literal('sync'),
  nonce: v.pipe(v.string(), v.minLength(1), v.maxLength(MAX_NONCE)),
  /** The host's limits as a receiver (absent from hosts before they were announced). */
  lim: v.optional(LimitsSchema),
});

export const HelloSchema = v.object({
  t: v.literal('hello'),
  /** The nonce of the sync this answers; empty in the announcement an agent sends when it starts. */
  nonce: v.pipe(v.string(), v.maxLength(MAX_NONCE)),
  agent: v.pipe(v.string(), v.maxLength(64)),
  protocol: v.pipe(v.number(), v.integer()),
  hostname: v.pipe(v.string(), v.maxLength(255)),
  bootId: v.pipe(v.string(), v.maxLength(64)),
  /** Set by a VM's monitor, which answers for the agent: `monitor`. */
  via: v.optional(v.literal('monitor')),
  /** From a monitor: whether the agent's session is up now (requests wait for it otherwise). */
  ready: v.optional(v.boolean()),
  /** The agent's limits as a receiver (a monitor's: the agent's as the monitor relays them); absent from older agents. */
  lim: v.optional(LimitsSchema),
});

export const ReqSchema = v.object({
  t: v.literal('req'),
  id: IdSchema,
  m: v.pipe(v.string(), v.minLength(1), v.maxLength(64)),
  p: v.optional(v.unknown()),
});

export const RemoteErrorSchema = v.object({
  code: v.pipe(v.string(), v.minLength(1), v.maxLength(64)),
  message: v.pipe(v.string(), v.maxLength(4096)),
});

export const ResSchema = v.object({
  t: v.literal('res'),
  id: IdSchema,
  r: v.optional(v.unknown()),
  e: v.optional(RemoteErrorSchema),
});

export const DataHeaderSchema = v.object({
  t: v.literal('data'),
  id: IdSchema,
  s: StreamSchema,
  n: v.pipe(v.number(), v.integer(), v.minValue(0), v.maxValue(MAX_CHUNK)),
});

export const EofSchema = v.object({ t: v.literal('eof'), id: IdSchema, s: StreamSchema });

export const AckSchema = v.object({
  t: v.literal('ack'),
  id: IdSchema,
  s: StreamSchema,
  n: v.pipe(v.number(), v.integer(), v.minValue(1), v.maxValue(STREAM_WINDOW)),
});

export const CancelSchema = v.object({ t: v.literal('cancel'), id: IdSchema });

/** The agent's complaint about a line that had no request id (malformed JSON, an over-long line, lost framing). */
export const ErrSchema = v.object({
  t: v.literal('err'),
  code: v.pipe(v.string(), v.minLength(1), v.maxLength(64)),
  message: v.pipe(v.string(), v.maxLength(4096)),
});

/**
 * Sent in place of a hello when the guest cannot run the agent at all (no
 * Node.js, or one too old): the agent unit's start script writes it on the
 * port, so the host fails at once with the reason instead of waiting for a
 * hello that will never come. Untrusted text: bounded, printed sanitised.
 */
export const NoAgentSchema = v.object({
  t: v.literal('no-agent'),
  code: v.pipe(v.string(), v.regex(/^E[A-Z_]{1,31}$/)),
  message: v.pipe(v.string(), v.maxLength(1024)),
});

/** Control messages the host sends (data headers are decoded by the codec). */
export const HostMessageSchema = v.variant('t', [SyncSchema, ReqSchema, EofSchema, AckSchema, CancelSchema]);
/** Control messages the agent sends (data headers are decoded by the codec). */
export const AgentMessageSchema = v.variant('t', [HelloSchema, ResSchema, EofSchema, AckSchema, ErrSchema, NoAgentSchema]);

export type ReqMsg = v.InferOutput<typeof ReqSchema>;
export type DataHeader = v.InferOutput<typeof DataHeaderSchema>;
export type HostMessage = v.InferOutput<typeof HostMessageSchema>;

// ---------------------------------------------------------------- methods

export const PingParamsSchema = v.object({ data: v.optional(v.pipe(v.string(), v.maxLength(1024))) });
export const PingResultSchema = v.object({
  data: v.optional(v.pipe(v.string(), v.maxLength(1024))),
  /** The agent's clock, ms since the epoch. */
  time: v.number(),
});

const NonNegative = v.pipe(v.number(), v.minValue(0));
export const InfoResultSchema = v.object({
  hostname: v.pipe(v.string(), v.maxLength(255)),
  kernel: v.pipe(v.string(), v.maxLength(255)),
  uptimeSec: NonNegative,
  memTotal: NonNegative,
  memFree: NonNegative,
  diskTotal: NonNegative,
  diskFree: NonNegative,
  loadavg: v.tuple([v.number(), v.number(), v.number()]),
  agent: v.pipe(v.string(), v.maxLength(64)),
  bootId: v.pipe(v.string(), v.maxLength(64)),
});

export const ExecParamsSchema = v.object({
  argv: v.pipe(v.array(v.pipe(v.string(), v.maxLength(MAX_ARG), NoNul)), v.minLength(1), v.maxLength(4096)),
  env: v.optional(
    v.record(
      v.pipe(v.string(), v.minLength(1), v.maxLength(256), v.regex(/^[^=\0]+$/, 'must not contain = or NUL')),
      v.pipe(v.string(), v.maxLength(MAX_ARG), NoNul),
    ),
  ),
  cwd: v.optional(AbsolutePath),
  /** When true the host streams `stdin` data frames and ends them with an eof; otherwise stdin is /dev/null. */
  stdin: v.boolean(),
  timeoutMs: v.optional(v.pipe(v.number(), v.integer(), v.minValue(1), v.maxValue(2 ** 31 - 1))),
  tty: v.optional(v.boolean()),
  /** The terminal's window size when tty (the caller's own terminal). */
  rows: v.optional(v.pipe(v.number(), v.integer(), v.minValue(1), v.maxValue(1000))),
  cols: v.optional(v.pipe(v.number(), v.integer(), v.minValue(1), v.maxValue(1000))),
});

export const ExecResultSchema = v.object({
  exitCode: v.nullable(v.pipe(v.number(), v.integer())),
  signal: v.nullable(v.pipe(v.string(), v.maxLength(32))),
  timedOut: v.boolean(),
});

export const UploadParamsSchema = v.object({
  path: AbsolutePath,
  mode: v.optional(v.pipe(v.number(), v.integer(), v.minValue(0), v.maxValue(0o7777))),
  uid: v.optional(v.pipe(v.number(), v.integer(), v.minValue(0), v.maxValue(2 ** 32 - 2))),
  gid: v.optional(v.pipe(v.number(), v.integer(), v.minValue(0), v.maxValue(2 ** 32 - 2))),
  size: ByteCount,
  sha256: v.pipe(v.string(), v.regex(/^[0-9a-f]{64}$/, 'must be 64 lowercase hex digits')),
});

export const UploadResultSchema = v.object({
  bytes: ByteCount,
  sha256: v.pipe(v.string(), v.regex(/^[0-9a-f]{64}$/)),
});

export const DownloadParamsSchema = v.object({
  path: AbsolutePath,
  /** The most bytes the host takes: a larger file is refused (ESIZE) before any byte is sent, one that grows is cut there. */
  maxBytes: v.optional(ByteCount),
});

export const StatParamsSchema = v.object({ path: AbsolutePath });

export const StatResultSchema = v.object({
  /** What `path` is, following symbolic links. */
  type: v.picklist(['file', 'directory', 'other']),
  size: ByteCount,
  mode: v.pipe(v.number(), v.integer(), v.minValue(0), v.maxValue(0o7777)),
  mtimeMs: v.number(),
});

export const DownloadResultSchema = v.object({
  size: ByteCount,
  sha256: v.pipe(v.string(), v.regex(/^[0-9a-f]{64}$/)),
  mode: v.pipe(v.number(), v.integer(), v.minValue(0), v.maxValue(0o7777)),
});

export const ShutdownResultSchema = v.object({
  accepted: v.boolean(),
  /** True when the agent runs in `--listen` test mode and did not power anything off. */
  dryRun: v.boolean(),
});

/**
 * `tunnel`: a stream to a socket inside the guest, relayed both ways: the
 * host's `stdin` frames are written to it, what it sends comes back as
 * `stdout`; an eof either way is a half close. The result comes when the
 * socket has closed. A TCP port is the guest's loopback only.
 */
export const TunnelParamsSchema = v.variant('to', [
  v.object({ to: v.literal('tcp'), port: v.pipe(v.number(), v.integer(), v.minValue(1), v.maxValue(65535)) }),
  v.object({ to: v.literal('unix'), path: AbsolutePath }),
]);
export const TunnelResultSchema = v.object({ sent: NonNegative, received: NonNegative });

export type PingResult = v.InferOutput<typeof PingResultSchema>;
export type InfoResult = v.InferOutput<typeof InfoResultSchema>;
export type ExecResult = v.InferOutput<typeof ExecResultSchema>;
export type UploadResult = v.InferOutput<typeof UploadResultSchema>;
export type DownloadResult = v.InferOutput<typeof DownloadResultSchema>;
export type StatResult = v.InferOutput<typeof StatResultSchema>;
export type ShutdownResult = v.InferOutput<typeof ShutdownResultSchema>;
export type TunnelParams = v.InferOutput<typeof TunnelParamsSchema>;
export type TunnelResult = v.InferOutput<typeof TunnelResultSchema>;

/** "path.to.field: message; …" from a failed valibot parse, for error replies and logs. */
export function describeIssues(issues: readonly v.BaseIssue<unknown>[]): string {
  return issues
    .slice(0, 5)
    .map((i) => {
      const path = v.getDotPath(i);
      return path ? `${path}: ${i.message}` : i.message;
    })
    .join('; ');
}
