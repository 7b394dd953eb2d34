import { GoshipError } from '../errors.ts';
import type { Issue } from '../errors.ts';
import { formatIssues } from './schema.ts';
import type { RecordKind } from './types.ts';

/**
 * The state file cannot be read as GoShip state: invalid JSON, a truncated
 * file, or JSON of the wrong shape. The store never resets such a file: it
 * copies it to `backup` first and leaves the original untouched.
 */
export class StoreCorruptError extends GoshipError {
  readonly file: string;
  /** Where the copy of the corrupt file was kept; undefined if the copy itself failed. */
  readonly backup: string | undefined;
  readonly reason: string;

  constructor(facts: { file: string; reason: string; backup: string | undefined; backupError?: unknown; cause?: unknown }) {
    const kept =
      facts.backup !== undefined
        ? `a copy was kept at ${facts.backup}`
        : `no copy could be kept: ${facts.backupError instanceof Error ? facts.backupError.message : String(facts.backupError)}`;
    super('ESTORE_CORRUPT', `state file ${facts.file} is corrupt: ${facts.reason} (${kept})`, {
      hint: `Repair ${facts.file} by hand, or move it away to start from an empty state; GoShip will not overwrite it.`,
      cause: facts.cause,
    });
    this.file = facts.file;
    this.backup = facts.backup;
    this.reason = facts.reason;
  }
}

/** The state file was written by a newer GoShip: this one does not know its format. */
export class StoreVersionError extends GoshipError {
  readonly file: string;
  readonly fileVersion: number;
  readonly supportedVersion: number;

  constructor(facts: { file: string; fileVersion: number; supportedVersion: number }) {
    super(
      'ESTORE_VERSION',
      `state file ${facts.file} has schema version ${facts.fileVersion}: this GoShip reads versions up to ${facts.supportedVersion}`,
      { hint: 'Upgrade GoShip to the version that wrote this file.' },
    );
    this.file = facts.file;
    this.fileVersion = facts.fileVersion;
    this.supportedVersion = facts.supportedVersion;
  }
}

/** The state lock could not be taken in time, or was lost while held. */
export class StoreLockError extends GoshipError {
  readonly file: string;

  constructor(message: string, facts: { file: string; hint?: string; cause?: unknown }) {
    const options: { hint?: string; cause?: unknown } = { cause: facts.cause };
    if (facts.hint !== undefined) options.hint = facts.hint;
    super('ESTORE_LOCK', message, options);
    this.file = facts.file;
  }
}

/** An update left the state in a shape the store would not read back: nothing was written. */
export class StoreInvalidError extends GoshipError {
  readonly file: string;
  readonly issues: Issue[];

  constructor(facts: { file: string; issues: Issue[] }) {
    super('ESTORE_INVALID', `refusing to write ${facts.file}: ${formatIssues(facts.issues)}`, {
      hint: 'This is a bug in GoShip: please report it with the command that failed.',
    });
    this.file = facts.file;
    this.issues = facts.issues;
  }
}

/** A record with this name already exists. */
export class NameTakenError extends GoshipError {
  readonly kind: RecordKind;
  readonly recordName: string;

  constructor(kind: RecordKind, name: string, hint?: string) {
    super('EEXIST', `${kind} ${name} already exists`, hint === undefined ? {} : { hint });
    this.kind = kind;
    this.recordName = name;
  }
}

/** No record with this name. */
export class NotFoundError extends GoshipError {
  readonly kind: RecordKind;
  readonly recordName: string;

  constructor(kind: RecordKind, name: string, hint?: string) {
    super('ENOTFOUND', `${kind} ${name} does not exist`, hint === undefined ? {} : { hint });
    this.kind = kind;
    this.recordName = name;
  }
}
