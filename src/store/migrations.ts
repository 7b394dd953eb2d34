/**
 * Schema migrations: `MIGRATIONS[n]` turns a version-n document into a
 * version n+1 document. Pure: plain JSON in, plain JSON out. `migrate` applies
 * them in order on every read; the first write after a migration saves the
 * file at the current version (and keeps a copy of the old one).
 *
 * To change the file format: bump SCHEMA_VERSION in types.ts, add the step
 * from the previous version here, update schema.ts, and add a test with a
 * file at the previous version.
 */
import { SCHEMA_VERSION } from './types.ts';

export type JsonObject = Record<string, unknown>;

/** One step, from version n to n+1. Throws MigrationError on a document it cannot read. */
export type Migration = (doc: JsonObject) => JsonObject;

/** A document that does not have the shape its version says. */
export class MigrationError extends Error {
  override readonly name = 'MigrationError';
}

function isObject(value: unknown): value is JsonObject {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/**
 * Version 0: the prototype's file, before `schemaVersion` existed. Collections
 * were arrays (`nodes`, `projects`, `vms`, `images`) and there were no apps.
 * Version 1 keys every collection by name (VMs by id) and adds `apps`.
 */
function v0ToV1(doc: JsonObject): JsonObject {
  const keys = { nodes: 'name', projects: 'name', vms: 'id', images: 'name' } as const;
  for (const key of Object.keys(doc)) {
    if (key !== 'schemaVersion' && !(key in keys)) throw new MigrationError(`unknown key "${key}" in a version 0 file`);
  }
  const out: JsonObject = { schemaVersion: 1 };
  for (const [collection, idField] of Object.entries(keys)) {
    const list = doc[collection] ?? [];
    if (!Array.isArray(list)) throw new MigrationError(`${collection}: expected an array in a version 0 file`);
    const byKey: JsonObject = {};
    list.forEach((item: unknown, i) => {
      const id = isObject(item) ? item[idField] : undefined;
      if (typeof id !== 'string' || id === '') {
        throw new MigrationError(`${collection}[${i}].${idField}: expected a non-empty string`);
      }
      if (id in byKey) throw new MigrationError(`${collection}[${i}].${idField}: "${id}" appears twice`);
      byKey[id] = item;
    });
    out[collection] = byKey;
  }
  out.apps = {};
  return out;
}

/**
 * Version 2: each VM has a monitor process. Its paths gain the people's QMP
 * socket, the console and monitor sockets and the monitor's log (beside the
 * files they already had); `crash` and the free-text `stopReason` become one
 * `end` record.
 */
function v1ToV2(doc: JsonObject): JsonObject {
  const vms = isObject(doc.vms) ? doc.vms : {};
  const out: JsonObject = {};
  for (const [id, raw] of Object.entries(vms)) {
    if (!isObject(raw)) throw new MigrationError(`vms.${id}: expected an object in a version 1 file`);
    const vm: JsonObject = { ...raw };
    const paths = isObject(vm.paths) ? { ...vm.paths } : {};
    const runDir = typeof paths.qmpSocket === 'string' ? dirOf(paths.qmpSocket) : undefined;
    const vmDir = typeof paths.consoleLog === 'string' ? dirOf(paths.consoleLog) : undefined;
    if (runDir === undefined || vmDir === undefined) throw new MigrationError(`vms.${id}.paths: qmpSocket and consoleLog are needed in a version 1 file`);
    paths.qmpUserSocket ??= `${runDir}/qmp-user.sock`;
    paths.consoleSocket ??= `${runDir}/console.sock`;
    paths.monitorSocket ??= `${runDir}/monitor.sock`;
    paths.monitorLog ??= `${vmDir}/monitor.log`;
    // QEMU (an unprivileged user since version 2) writes its pidfile in the run directory.
    paths.pidfile = `${runDir}/qemu.pid`;
    vm.paths = paths;
    const at = typeof vm.stoppedAt === 'string' ? vm.stoppedAt : String(vm.createdAt);
    if (isObject(vm.crash)) {
      const c = vm.crash;
      vm.end = {
        at: typeof c.at === 'string' ? c.at : at,
        kind: 'crashed',
        summary: 'QEMU was gone when GoShip looked (recorded by an older version)',
        ...(typeof c.logTail === 'string' ? { logTail: c.logTail } : {}),
        ...(typeof c.exitCode === 'number' ? { exitCode: c.exitCode } : {}),
        ...(typeof c.signal === 'string' ? { signal: c.signal } : {}),
      };
    } else if (typeof vm.stopReason === 'string') {
      vm.end = { at, kind: 'stopped', summary: vm.stopReason };
    }
    delete vm.crash;
    delete vm.stopReason;
    out[id] = vm;
  }
  return { ...doc, vms: out };
}

/**
 * Version 3: a project and its VM can be `suspended` (the VM's state saved,
 * `Vm.saved`), and an operation can be a `suspend` or a `resume`. Nothing of a
 * version 2 file changes; the version says that an older GoShip, which knows
 * none of these, must not read the file.
 */
function v2ToV3(doc: JsonObject): JsonObject {
  return doc;
}

function dirOf(path: string): string {
  return path.slice(0, Math.max(0, path.lastIndexOf('/'))) || '/';
}

export const MIGRATIONS: Readonly<Record<number, Migration>> = {
  0: v0ToV1,
  1: v1ToV2,
  2: v2ToV3,
};

/** The version a parsed document says it has: `schemaVersion`, or 0 when it is absent. */
export function versionOf(doc: unknown): number {
  if (!isObject(doc)) {
    const got = Array.isArray(doc) ? 'an array' : doc === null ? 'null' : `a ${typeof doc}`;
    throw new MigrationError(`expected a JSON object, got ${got}`);
  }
  const version = doc.schemaVersion ?? 0;
  if (typeof version !== 'number' || !Number.isInteger(version) || version < 0) {
    throw new MigrationError(`schemaVersion: expected a non-negative integer, got ${JSON.stringify(version)}`);
  }
  return version;
}

/**
 * Brings `doc` (at `from`, which must be <= SCHEMA_VERSION) to SCHEMA_VERSION.
 * Does not validate the result: schema.ts does.
 */
export function migrate(doc: JsonObject, from: number, migrations: Readonly<Record<number, Migration>> = MIGRATIONS): JsonObject {
  let current = doc;
  for (let version = from; version < SCHEMA_VERSION; version++) {
    const step = migrations[version];
    if (step === undefined) throw new MigrationError(`no migration from schema version ${version} to ${version + 1}`);
    current = { ...step(current), schemaVersion: version + 1 };
  }
  return current;
}
