/**
 * Bytes of a state file → a v1 State, or the reason it cannot be one. Pure:
 * no file system, no clock. The caller (file.ts) turns the result into errors
 * and backups.
 */
import { MigrationError, migrate, versionOf } from './migrations.ts';
import { checkState, formatIssues } from './schema.ts';
import { SCHEMA_VERSION } from './types.ts';
import type { State } from './types.ts';

export type Decoded =
  | { kind: 'ok'; state: State; /** The version the file was at, before migration. */ version: number }
  | { kind: 'corrupt'; reason: string; cause?: unknown }
  | { kind: 'newer'; version: number };

const utf8 = new TextDecoder('utf-8', { fatal: true });

export function decodeState(bytes: Uint8Array): Decoded {
  if (bytes.length === 0) return { kind: 'corrupt', reason: 'the file is empty' };
  let text: string;
  try {
    text = utf8.decode(bytes);
  } catch (cause) {
    return { kind: 'corrupt', reason: 'the file is not valid UTF-8', cause };
  }
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (cause) {
    const truncated = !text.trimEnd().endsWith('}');
    const why = cause instanceof Error ? cause.message : String(cause);
    return { kind: 'corrupt', reason: `invalid JSON${truncated ? ' (the file looks truncated)' : ''}: ${why}`, cause };
  }
  let version: number;
  let migrated: unknown;
  try {
    version = versionOf(doc);
    if (version > SCHEMA_VERSION) return { kind: 'newer', version };
    migrated = migrate(doc as Record<string, unknown>, version);
  } catch (cause) {
    if (cause instanceof MigrationError) {
      return { kind: 'corrupt', reason: `wrong shape: ${cause.message}`, cause };
    }
    throw cause;
  }
  const issues = checkState(migrated);
  if (issues.length > 0) return { kind: 'corrupt', reason: `wrong shape: ${formatIssues(issues)}` };
  return { kind: 'ok', state: migrated as State, version };
}

/** The file's text: indented for people who repair it by hand, with a final newline. */
export function encodeState(state: State): string {
  return `${JSON.stringify(state, null, 2)}\n`;
}
