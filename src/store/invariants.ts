/**
 * Invariant checks the runtime makes inside `store.update()`, so that the
 * check and the change happen under the same lock. Pure.
 */
import { NameTakenError, NotFoundError } from './errors.ts';
import { COLLECTIONS, LOCAL_NODE } from './types.ts';
import type { Node, RecordKind, RecordOf, State, Timestamp } from './types.ts';

/**
 * Throws NameTakenError (EEXIST) if a `kind` record is stored under `name`.
 * For VMs the name is checked against both ids and names. For apps pass
 * `appKey(project, name)`.
 */
export function assertNameFree(state: State, kind: RecordKind, name: string): void {
  const collection: Record<string, unknown> = state[COLLECTIONS[kind]];
  const taken = Object.hasOwn(collection, name) || (kind === 'vm' && Object.values(state.vms).some((vm) => vm.name === name));
  if (taken) {
    throw new NameTakenError(kind, name, `Choose another name, or see \`goshipctl ${kind} list\`.`);
  }
}

/** The `kind` record stored under `key`, or NotFoundError (ENOTFOUND). */
export function requireRecord<K extends RecordKind>(state: State, kind: K, key: string): RecordOf[K] {
  const collection = state[COLLECTIONS[kind]] as Record<string, RecordOf[K]>;
  if (!Object.hasOwn(collection, key)) {
    throw new NotFoundError(kind, key, `See \`goshipctl ${kind} list\`.`);
  }
  return collection[key] as RecordOf[K];
}

/** The `kind` record stored under `key`, or undefined. */
export function findRecord<K extends RecordKind>(state: State, kind: K, key: string): RecordOf[K] | undefined {
  const collection = state[COLLECTIONS[kind]] as Record<string, RecordOf[K]>;
  return Object.hasOwn(collection, key) ? collection[key] : undefined;
}

/** Adds the `local` node if it is missing; returns it. */
export function ensureLocalNode(state: State, now: Timestamp): Node {
  const existing = state.nodes[LOCAL_NODE];
  if (existing !== undefined) return existing;
  const node: Node = { name: LOCAL_NODE, createdAt: now };
  state.nodes[LOCAL_NODE] = node;
  return node;
}
