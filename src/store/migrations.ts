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

export const MIGRATIONS: Readonly<Record<number, Migration>> = {
  0: v0ToV1,
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
