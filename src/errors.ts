/**
 * The base of every error GoShip raises on purpose.
 *
 * `code` is stable (scripts match on it, `--json` prints it); the message says
 * "<what failed>: <why>"; `hint`, when present, is the fix, printed by the CLI
 * on its own line. The original error, if any, is kept in `cause`.
 */
export class GoshipError extends Error {
  readonly code: string;
  readonly hint: string | undefined;

  constructor(code: string, message: string, options: { hint?: string; cause?: unknown } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = new.target.name;
    this.code = code;
    this.hint = options.hint;
  }

  /** The stable shape `--json` prints for an error. */
  toJSON(): { code: string; message: string; hint?: string } {
    return this.hint === undefined
      ? { code: this.code, message: this.message }
      : { code: this.code, message: this.message, hint: this.hint };
  }
}

/** One problem found in user input, with the path of the field (`disks[1].path`). */
export interface Issue {
  path: string;
  message: string;
}

/** Bad input: every problem at once, each naming its field and what is allowed. */
export class ValidationError extends GoshipError {
  readonly issues: Issue[];

  constructor(issues: Issue[], options: { hint?: string; subject?: string } = {}) {
    const subject = options.subject ?? 'invalid input';
    const text = issues.map((i) => (i.path ? `${i.path}: ${i.message}` : i.message)).join('; ');
    super('EINVALID', `${subject}: ${text}`, options.hint === undefined ? {} : { hint: options.hint });
    this.issues = issues;
  }
}

/** Something the product does not do (yet): said plainly instead of pretending. */
export class NotSupportedError extends GoshipError {
  constructor(message: string, hint?: string) {
    super('ENOTSUP', message, hint === undefined ? {} : { hint });
  }
}
