/**
 * The agent's app methods: containers through dockerd inside the VM. Params
 * and results are valibot schemas, checked by the agent (what the host asks)
 * and by the host (what the guest answers). Runs on the guest's Node 18 too.
 *
 *   app.image.build  {tag, labels}       + `stdin` stream: a tar of the build context; `stdout`: the build's output
 *   app.image.load   {}                  + `stdin` stream: a `docker save` tar;          `stdout`: its progress
 *   app.image.pull   {ref}                                                                `stdout`: its progress
 *   app.create       {name, image, …}    a container, not started
 *   app.start|stop|restart|remove|rename|inspect {container, …}
 *   app.list         {}                  every container with the label org.goship.app
 *   app.logs         {container, follow, tail?, since?, timestamps}   `stdout`, `stderr` streams
 *   app.exec         {container, argv, tty, stdin, env?, rows?, cols?} streams; `ctl` (host → agent) carries resizes
 */
import * as v from 'valibot';

/** The label every container GoShip makes carries: its app's name. */
export const APP_LABEL = 'org.goship.app';
export const PROJECT_LABEL = 'org.goship.project';
export const GENERATION_LABEL = 'org.goship.generation';

const NoNul = v.check<string, string>((s) => !s.includes('\0'), 'must not contain NUL');
/** A container name or id as dockerd takes it. */
const Container = v.pipe(v.string(), v.minLength(1), v.maxLength(128), v.regex(/^[A-Za-z0-9][A-Za-z0-9_.-]*$/, 'expected a container name or id'));
/** An image reference (`localhost:5000/web:1`, `goship/web@sha256:…`, an image id). */
const ImageRef = v.pipe(v.string(), v.minLength(1), v.maxLength(512), v.regex(/^[A-Za-z0-9][A-Za-z0-9_.:/@+-]*$/, 'expected an image reference'));
const Port = v.pipe(v.number(), v.integer(), v.minValue(1), v.maxValue(65535));
const Labels = v.record(v.pipe(v.string(), v.minLength(1), v.maxLength(256)), v.pipe(v.string(), v.maxLength(1024)));

export const ImageBuildParamsSchema = v.object({ tag: ImageRef, labels: v.optional(Labels, {}) });
export const ImagePullParamsSchema = v.object({ ref: ImageRef });
export const ImageResultSchema = v.object({
  /** `sha256:…`. */
  imageId: v.pipe(v.string(), v.regex(/^sha256:[0-9a-f]{64}$/)),
  /** The references the image has now (a loaded archive's tags). */
  tags: v.array(v.string()),
});

export const RESTART_NAMES = ['no', 'on-failure', 'always', 'unless-stopped'] as const;

export const ContainerSpecSchema = v.object({
  /** The container's name. */
  name: Container,
  image: ImageRef,
  /** Replaces the image's CMD. */
  cmd: v.optional(v.array(v.pipe(v.string(), v.maxLength(128 * 1024), NoNul))),
  env: v.optional(v.array(v.pipe(v.string(), v.maxLength(128 * 1024), v.regex(/^[^=\0]+=/, 'expected KEY=VALUE'))), []),
  /** Published ports: the guest's `guest` port → the container's `container` port. */
  ports: v.optional(v.array(v.object({ proto: v.picklist(['tcp', 'udp']), guest: Port, container: Port })), []),
  /** Named volumes mounted at absolute paths. */
  volumes: v.optional(
    v.array(
      v.object({
        name: v.pipe(v.string(), v.regex(/^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/, 'expected a volume name')),
        path: v.pipe(v.string(), v.startsWith('/'), v.maxLength(4096), NoNul),
      }),
    ),
    [],
  ),
  restart: v.object({ name: v.picklist(RESTART_NAMES), maxRetries: v.optional(v.pipe(v.number(), v.integer(), v.minValue(0))) }),
  /** Bytes. */
  memory: v.optional(v.pipe(v.number(), v.integer(), v.minValue(4 * 1024 * 1024))),
  /** CPUs, fractional (NanoCpus = cpus × 10⁹). */
  cpus: v.optional(v.pipe(v.number(), v.minValue(0.01), v.maxValue(1024))),
  labels: v.optional(Labels, {}),
});
export type ContainerSpec = v.InferOutput<typeof ContainerSpecSchema>;

export const ContainerParamsSchema = v.object({
  container: Container,
  /** stop/restart: seconds dockerd waits before SIGKILL. */
  timeoutSec: v.optional(v.pipe(v.number(), v.integer(), v.minValue(0), v.maxValue(3600))),
  /** rename: the new name. */
  name: v.optional(Container),
});

export const ContainerInfoSchema = v.object({
  id: v.string(),
  name: v.string(),
  image: v.string(),
  imageId: v.string(),
  /** created, running, restarting, exited, paused, dead, removing. */
  state: v.string(),
  exitCode: v.nullable(v.number()),
  restartCount: v.pipe(v.number(), v.integer(), v.minValue(0)),
  startedAt: v.nullable(v.string()),
  finishedAt: v.nullable(v.string()),
  /** The daemon's message when it could not run the container. */
  error: v.string(),
  labels: Labels,
  ports: v.array(v.object({ proto: v.picklist(['tcp', 'udp']), guest: v.nullable(Port), container: Port })),
});
export type ContainerInfo = v.InferOutput<typeof ContainerInfoSchema>;

export const ContainerListSchema = v.object({ containers: v.array(ContainerInfoSchema) });

export const LogsParamsSchema = v.object({
  container: Container,
  follow: v.boolean(),
  /** The last N lines (all by default). */
  tail: v.optional(v.pipe(v.number(), v.integer(), v.minValue(0))),
  /** Unix seconds: only lines since then. */
  since: v.optional(v.pipe(v.number(), v.minValue(0))),
  timestamps: v.boolean(),
});

export const AppExecParamsSchema = v.object({
  container: Container,
  argv: v.pipe(v.array(v.pipe(v.string(), v.maxLength(128 * 1024), NoNul)), v.minLength(1), v.maxLength(4096)),
  tty: v.boolean(),
  stdin: v.boolean(),
  env: v.optional(v.array(v.pipe(v.string(), v.regex(/^[^=\0]+=/, 'expected KEY=VALUE'))), []),
  rows: v.optional(v.pipe(v.number(), v.integer(), v.minValue(1), v.maxValue(1000))),
  cols: v.optional(v.pipe(v.number(), v.integer(), v.minValue(1), v.maxValue(1000))),
});
export const AppExecResultSchema = v.object({ exitCode: v.nullable(v.number()) });

/** A message on an exec's `ctl` stream (one JSON object per data frame). */
export const ExecCtlSchema = v.object({ resize: v.object({ rows: v.pipe(v.number(), v.integer(), v.minValue(1), v.maxValue(1000)), cols: v.pipe(v.number(), v.integer(), v.minValue(1), v.maxValue(1000)) }) });

export const APP_METHODS = {
  version: 'docker.version',
  build: 'app.image.build',
  load: 'app.image.load',
  pull: 'app.image.pull',
  create: 'app.create',
  start: 'app.start',
  stop: 'app.stop',
  restart: 'app.restart',
  remove: 'app.remove',
  rename: 'app.rename',
  inspect: 'app.inspect',
  list: 'app.list',
  logs: 'app.logs',
  exec: 'app.exec',
} as const;
