/**
 * The shape of the state file at the current schema version, as valibot
 * schemas. Pure: `checkState(doc)` returns every problem with its path.
 *
 * Records are `looseObject`s: a field this code does not know (written by a
 * newer GoShip at the same schema version) is kept, not dropped.
 */
import * as v from 'valibot';
import type { Issue } from '../errors.ts';
import { APP_KINDS, END_KINDS, IMAGE_KINDS, OP_KINDS, PROJECT_STATES, SCHEMA_VERSION, STOP_STEPS, VM_STATES, appKey } from './types.ts';
import type { State } from './types.ts';

const timestamp = v.pipe(v.string(), v.isoTimestamp());
const name = v.pipe(v.string(), v.minLength(1));
const count = v.pipe(v.number(), v.integer(), v.minValue(0));
const port = v.pipe(v.number(), v.integer(), v.minValue(1), v.maxValue(65535));

const NodeSchema = v.looseObject({
  name,
  createdAt: timestamp,
  address: v.optional(v.looseObject({ user: name, host: name, port })),
  identity: v.optional(v.string()),
  knownHosts: v.optional(v.string()),
  hostKeys: v.optional(v.array(v.string())),
  cli: v.optional(v.array(v.string())),
  report: v.optional(
    v.looseObject({ checkedAt: timestamp, goship: v.string(), protocol: count, accel: v.string(), accelReason: v.string(), cpus: count, memoryBytes: count, home: v.optional(v.string()) }),
  ),
  projects: v.optional(v.record(v.string(), v.looseObject({ createdAt: timestamp, monitorSocket: v.optional(v.string()) }))),
});

const PendingOpSchema = v.looseObject({
  kind: v.picklist(OP_KINDS),
  pid: v.pipe(v.number(), v.integer(), v.minValue(1)),
  startedAt: timestamp,
});

const ProjectSchema = v.looseObject({
  name,
  createdAt: timestamp,
  node: name,
  vmId: name,
  spec: v.looseObject({
    cpus: v.pipe(v.number(), v.integer(), v.minValue(1)),
    memoryBytes: count,
    diskBytes: count,
    image: name,
    ports: v.array(v.looseObject({ proto: v.picklist(['tcp', 'udp']), host: port, guest: port })),
    sshKeys: v.array(v.string()),
    restart: v.optional(v.picklist(['no', 'on-crash'])),
    mounts: v.optional(v.array(v.looseObject({ host: v.string(), guest: v.string(), readOnly: v.boolean() }))),
  }),
  state: v.picklist(PROJECT_STATES),
  lastError: v.optional(v.string()),
  op: v.optional(PendingOpSchema),
});

const VmSchema = v.looseObject({
  id: name,
  name,
  project: v.optional(name),
  node: name,
  createdAt: timestamp,
  image: v.optional(name),
  state: v.picklist(VM_STATES),
  pid: v.optional(v.pipe(v.number(), v.integer(), v.minValue(1))),
  startedAt: v.optional(timestamp),
  stoppedAt: v.optional(timestamp),
  end: v.optional(
    v.looseObject({
      at: timestamp,
      kind: v.picklist(END_KINDS),
      summary: v.string(),
      shutdownReason: v.optional(v.string()),
      step: v.optional(v.picklist(STOP_STEPS)),
      exitCode: v.optional(v.pipe(v.number(), v.integer())),
      signal: v.optional(v.string()),
      memoryLimit: v.optional(v.pipe(v.number(), v.integer(), v.minValue(1))),
      logTail: v.optional(v.string()),
    }),
  ),
  note: v.optional(v.string()),
  monitor: v.optional(v.looseObject({ pid: v.pipe(v.number(), v.integer(), v.minValue(1)), startedAt: timestamp, adopted: v.optional(v.boolean()) })),
  restarts: v.optional(v.looseObject({ count, lastAt: v.optional(timestamp), lastReason: v.optional(v.string()) })),
  reboots: v.optional(v.looseObject({ count, lastAt: v.optional(timestamp) })),
  argv: v.optional(v.array(v.string())),
  paths: v.looseObject({
    dir: v.string(),
    overlay: v.optional(v.string()),
    seed: v.optional(v.string()),
    qmpSocket: v.string(),
    qmpUserSocket: v.string(),
    agentSocket: v.string(),
    consoleSocket: v.string(),
    monitorSocket: v.string(),
    consoleLog: v.string(),
    qemuLog: v.string(),
    monitorLog: v.string(),
    pidfile: v.string(),
  }),
  op: v.optional(PendingOpSchema),
  agent: v.optional(
    v.looseObject({ version: v.string(), protocol: v.number(), hostname: v.string(), bootId: v.string(), readyAt: timestamp }),
  ),
  config: v.record(v.string(), v.unknown()),
  base: v.optional(v.looseObject({ path: v.string(), format: v.string(), backing: v.optional(v.looseObject({ path: v.string(), format: v.string() })) })),
  jail: v.optional(
    v.looseObject({
      uid: v.optional(v.pipe(v.number(), v.integer(), v.minValue(1))),
      gid: v.optional(v.pipe(v.number(), v.integer(), v.minValue(1))),
      cgroup: v.optional(
        v.looseObject({
          version: v.picklist([1, 2]),
          vmDirs: v.array(v.string()),
          cpuWeight: v.optional(count),
          memoryBytes: count,
          cpuQuotaUs: count,
          cpuPeriodUs: count,
          pids: count,
        }),
      ),
      noLimits: v.optional(v.string()),
    }),
  ),
  saved: v.optional(v.looseObject({ file: v.string(), bytes: v.pipe(v.number(), v.integer(), v.minValue(1)), at: timestamp, argvShape: v.array(v.string()) })),
  snapshots: v.optional(v.record(v.string(), v.looseObject({ tag: name, createdAt: timestamp, memory: v.boolean(), ms: v.number() }))),
});

const ImageSchema = v.looseObject({
  name,
  createdAt: timestamp,
  kind: v.picklist(IMAGE_KINDS),
  dir: v.string(),
  sha256: v.optional(v.pipe(v.string(), v.regex(/^[0-9a-f]{64}$/, 'Invalid sha256: expected 64 lowercase hex digits'))),
  sizeBytes: v.optional(count),
  packages: v.optional(v.array(v.string())),
  kernel: v.optional(v.string()),
  initrd: v.optional(v.string()),
});

const AppSchema = v.looseObject({
  project: name,
  name,
  kind: v.picklist(APP_KINDS),
  image: v.optional(v.string()),
  createdAt: timestamp,
  updatedAt: v.optional(timestamp),
  state: v.string(),
  generation: v.optional(count),
  container: v.optional(v.string()),
  spec: v.optional(
    v.looseObject({
      source: v.variant('kind', [
        v.looseObject({ kind: v.literal('build'), dir: v.string() }),
        v.looseObject({ kind: v.literal('archive'), file: v.string() }),
        v.looseObject({ kind: v.literal('image'), ref: v.string() }),
        v.looseObject({ kind: v.literal('binary'), file: v.string() }),
        v.looseObject({ kind: v.literal('command') }),
      ]),
      ports: v.array(v.looseObject({ proto: v.picklist(['tcp', 'udp']), host: port, container: port })),
      env: v.array(v.string()),
      volumes: v.array(v.looseObject({ name: v.string(), path: v.string() })),
      restart: v.looseObject({ name: v.picklist(['no', 'on-failure', 'always', 'unless-stopped']), maxRetries: v.optional(count) }),
      memoryBytes: v.optional(count),
      cpus: v.optional(v.number()),
      cmd: v.optional(v.array(v.string())),
      workdir: v.optional(v.string()),
      user: v.optional(v.string()),
    }),
  ),
  lastError: v.optional(v.string()),
  op: v.optional(PendingOpSchema),
});

/** The whole file. The root is strict: an unknown top-level key is an error. */
export const StateSchema = v.strictObject({
  schemaVersion: v.literal(SCHEMA_VERSION),
  nodes: v.record(v.string(), NodeSchema),
  projects: v.record(v.string(), ProjectSchema),
  vms: v.record(v.string(), VmSchema),
  images: v.record(v.string(), ImageSchema),
  apps: v.record(v.string(), AppSchema),
});

// The schema and the hand-written types must agree; this line fails to compile if they drift.
const _schemaMatchesTypes: (s: v.InferOutput<typeof StateSchema>) => State = (s) => s;
void _schemaMatchesTypes;

/** How many problems a message lists before "and N more". */
const MAX_LISTED = 5;

/** Every problem with `doc` as a state at the current version, each with its path; empty when it is valid. */
export function checkState(doc: unknown): Issue[] {
  const arrays = arraysForRecords(doc);
  if (arrays.length > 0) return arrays;
  const result = v.safeParse(StateSchema, doc);
  if (!result.success) {
    return result.issues.map((issue) => ({ path: v.getDotPath(issue) ?? '', message: issue.message }));
  }
  return checkKeys(result.output);
}

const ARRAY_MESSAGE = 'Invalid type: Expected Object but received Array';

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** valibot's `record()` accepts an array (as a record keyed "0", "1"…): refuse one where a record belongs. */
function arraysForRecords(doc: unknown): Issue[] {
  if (!isObject(doc)) return [];
  const issues: Issue[] = [];
  for (const collection of ['nodes', 'projects', 'vms', 'images', 'apps']) {
    if (Array.isArray(doc[collection])) issues.push({ path: collection, message: ARRAY_MESSAGE });
  }
  if (isObject(doc.vms)) {
    for (const [id, vm] of Object.entries(doc.vms)) {
      if (isObject(vm) && Array.isArray(vm.config)) issues.push({ path: `vms.${id}.config`, message: ARRAY_MESSAGE });
    }
  }
  return issues;
}

/** Each record sits under its own name (id for VMs, `project/name` for apps). */
function checkKeys(state: State): Issue[] {
  const issues: Issue[] = [];
  const expect = (collection: string, key: string, actual: string, field: string): void => {
    if (key !== actual) {
      issues.push({ path: `${collection}.${key}.${field}`, message: `record stored under "${key}" has ${field} "${actual}"` });
    }
  };
  for (const [key, r] of Object.entries(state.nodes)) expect('nodes', key, r.name, 'name');
  for (const [key, r] of Object.entries(state.projects)) expect('projects', key, r.name, 'name');
  for (const [key, r] of Object.entries(state.vms)) expect('vms', key, r.id, 'id');
  for (const [key, r] of Object.entries(state.images)) expect('images', key, r.name, 'name');
  for (const [key, r] of Object.entries(state.apps)) {
    const want = appKey(r.project, r.name);
    if (key !== want) issues.push({ path: `apps.${key}`, message: `app ${want} is stored under "${key}"` });
  }
  return issues;
}

/** "a.b: msg; c: msg; and 3 more". */
export function formatIssues(issues: readonly Issue[]): string {
  const listed = issues.slice(0, MAX_LISTED).map((i) => (i.path ? `${i.path}: ${i.message}` : i.message));
  if (issues.length > MAX_LISTED) listed.push(`and ${issues.length - MAX_LISTED} more`);
  return listed.join('; ');
}
