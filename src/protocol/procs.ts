/**
 * The agent's process-app methods: plain programs supervised by the guest's
 * systemd, one unit per app (`goship-app-NAME.service`), written by the agent.
 * Params and results are valibot schemas checked at both ends.
 *
 *   proc.stage    {app, generation}             → {dir}: the generation's directory (created, empty), for the program's upload
 *   proc.apply    {app, generation, argv, …}    writes the unit, (re)starts it, watches it settleMs; a program that
 *                                               does not stay up is rolled back to the unit before (EAPP_START)
 *   proc.list     {}                            every process app's state, from systemd
 *   proc.control  {app, verb}                   start (clears a failed state first), stop, restart
 *   proc.remove   {app}                         stops and removes the unit, its files and its user
 *   proc.logs     {app, follow, tail?, since?, timestamps}   `stdout`: the unit's journal, both runs of a restarted program in order
 *   proc.exec     {app, argv, tty, stdin, rows?, cols?}      a command as the app's user, in its directory, with its environment
 */
import * as v from 'valibot';

const NoNul = v.check<string, string>((s) => !s.includes('\0'), 'must not contain NUL');
/** An app name, as the host checks it (it becomes a unit, a user and a directory name in the guest). */
export const ProcAppName = v.pipe(v.string(), v.regex(/^[a-z0-9][a-z0-9-]{0,62}$/, 'expected 1-63 lowercase letters, digits or "-"'));
const Generation = v.pipe(v.number(), v.integer(), v.minValue(1), v.maxValue(2 ** 31 - 1));
const Arg = v.pipe(v.string(), v.maxLength(128 * 1024), NoNul);
const AbsPath = v.pipe(v.string(), v.startsWith('/'), v.maxLength(4096), NoNul, v.check((s) => !s.split('/').includes('..'), 'must not contain ..'));

export const PROC_RESTARTS = ['no', 'on-failure', 'always'] as const;

export const ProcStageParamsSchema = v.object({
  app: ProcAppName,
  generation: Generation,
  /** The app will run as a user of its own: the agent creates it now, while the program uploads (useradd costs ~0.4 s under TCG); proc.apply waits for it. */
  ownUser: v.optional(v.boolean()),
});
export const ProcStageResultSchema = v.object({ dir: AbsPath });

export const ProcSpecSchema = v.object({
  app: ProcAppName,
  generation: Generation,
  /** The program (absolute, or a name looked up in the guest's PATH) and its arguments. */
  argv: v.pipe(v.array(Arg), v.minLength(1), v.maxLength(4096)),
  env: v.optional(v.array(v.pipe(v.string(), v.maxLength(128 * 1024), v.regex(/^[A-Za-z_][A-Za-z0-9_]*=/, 'expected KEY=VALUE'), NoNul)), []),
  /** The working directory (default: the app's data directory). */
  workdir: v.optional(AbsPath),
  /** An existing guest user; by default the app runs as an unprivileged user of its own. */
  user: v.optional(v.pipe(v.string(), v.regex(/^[a-z_][a-z0-9_-]{0,31}$/, 'expected a user name'))),
  restart: v.object({ name: v.picklist(PROC_RESTARTS), maxRetries: v.optional(v.pipe(v.number(), v.integer(), v.minValue(0), v.maxValue(1_000_000))) }),
  memoryBytes: v.optional(v.pipe(v.number(), v.integer(), v.minValue(4 * 1024 * 1024))),
  cpus: v.optional(v.pipe(v.number(), v.minValue(0.01), v.maxValue(1024))),
  /** How long the new program must stay up to count as started. */
  settleMs: v.pipe(v.number(), v.integer(), v.minValue(0), v.maxValue(60_000)),
  /** TCP ports it listens on: once all accept on 127.0.0.1 (and it still runs), it counts as started before settleMs. */
  readyPorts: v.optional(v.pipe(v.array(v.pipe(v.number(), v.integer(), v.minValue(1), v.maxValue(65535))), v.maxLength(64)), []),
});
export type ProcSpec = v.InferOutput<typeof ProcSpecSchema>;

export const ProcInfoSchema = v.object({
  app: ProcAppName,
  generation: v.nullable(v.number()),
  unit: v.string(),
  /** running, restarting, failed, stopped, starting, stopping. */
  state: v.string(),
  /** systemd's ActiveState/SubState, as it said them. */
  activeState: v.string(),
  subState: v.string(),
  pid: v.nullable(v.number()),
  /** ISO time the running program started. */
  startedAt: v.nullable(v.string()),
  /** systemd's automatic restarts of this unit since it was last started by hand. */
  restarts: v.number(),
  /** The last run's end: an exit code or a signal name. */
  exitCode: v.nullable(v.number()),
  signal: v.nullable(v.string()),
  /** systemd's Result (success, exit-code, signal, start-limit-hit, …). */
  result: v.string(),
  user: v.string(),
  argv: v.array(v.string()),
});
export type ProcInfo = v.InferOutput<typeof ProcInfoSchema>;

/** proc.apply's answer: the program runs, or it did not start and what the rollback did. */
export const ProcApplyResultSchema = v.variant('ok', [
  v.object({ ok: v.literal(true), info: ProcInfoSchema }),
  v.object({ ok: v.literal(false), why: v.pipe(v.string(), v.maxLength(4096)), back: v.pipe(v.string(), v.maxLength(4096)) }),
]);
export type ProcApplyResult = v.InferOutput<typeof ProcApplyResultSchema>;

export const ProcListSchema = v.object({ procs: v.array(ProcInfoSchema) });
export const ProcControlParamsSchema = v.object({ app: ProcAppName, verb: v.picklist(['start', 'stop', 'restart']) });
export const ProcAppParamsSchema = v.object({ app: ProcAppName });

export const ProcLogsParamsSchema = v.object({
  app: ProcAppName,
  follow: v.boolean(),
  tail: v.optional(v.pipe(v.number(), v.integer(), v.minValue(0))),
  /** Unix seconds. */
  since: v.optional(v.pipe(v.number(), v.minValue(0))),
  timestamps: v.boolean(),
});

export const ProcExecParamsSchema = v.object({
  app: ProcAppName,
  argv: v.pipe(v.array(Arg), v.minLength(1), v.maxLength(4096)),
  tty: v.boolean(),
  stdin: v.boolean(),
  rows: v.optional(v.pipe(v.number(), v.integer(), v.minValue(1), v.maxValue(1000))),
  cols: v.optional(v.pipe(v.number(), v.integer(), v.minValue(1), v.maxValue(1000))),
});

export const PROC_METHODS = {
  stage: 'proc.stage',
  apply: 'proc.apply',
  list: 'proc.list',
  control: 'proc.control',
  remove: 'proc.remove',
  logs: 'proc.logs',
  exec: 'proc.exec',
} as const;
