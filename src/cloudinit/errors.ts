import { GoshipError, ValidationError } from '../errors.ts';
import type { Issue } from '../errors.ts';

/** The subject of every validation error this module raises. */
export const SEED_SUBJECT = 'invalid cloud-init seed';

/** Throws one ValidationError naming every problem, or returns. */
export function throwIfIssues(issues: Issue[]): void {
  if (issues.length > 0) throw new ValidationError(issues, { subject: SEED_SUBJECT });
}

/** Writing the seed ISO failed: keeps the argv, exit code and xorriso's whole stderr. */
export class SeedError extends GoshipError {
  readonly argv: readonly string[];
  readonly exitCode: number | undefined;
  readonly stderr: string;

  constructor(
    message: string,
    facts: { argv: readonly string[]; exitCode?: number | undefined; stderr?: string; hint?: string; cause?: unknown },
  ) {
    const options: { hint?: string; cause?: unknown } = {};
    if (facts.hint !== undefined) options.hint = facts.hint;
    if (facts.cause !== undefined) options.cause = facts.cause;
    super('ESEED', message, options);
    this.argv = facts.argv;
    this.exitCode = facts.exitCode;
    this.stderr = facts.stderr ?? '';
  }
}
