/**
 * Reads a VM spec file: `.json` as JSON, anything else as YAML (1.2, which
 * also reads JSON). Returns the raw value for resolveSpec; a syntax error is
 * a QemuError EPARSE naming the file, line and column.
 */
import { readFile } from 'node:fs/promises';
import { parseDocument } from 'yaml';
import { QemuError } from './errors.ts';

export interface SpecPosition {
  line: number;
  column: number;
}

function parseError(file: string, pos: SpecPosition | undefined, why: string, cause: unknown): QemuError {
  const where = pos ? `${file}:${pos.line}:${pos.column}` : file;
  return new QemuError('EPARSE', `cannot parse VM spec ${where}: ${why}`, {
    hint: `fix the syntax at line ${pos?.line ?? '?'}, column ${pos?.column ?? '?'} of ${file}`,
    cause,
  });
}

/** Line and column (1-based) of a character offset. */
export function positionOf(text: string, offset: number): SpecPosition {
  const before = text.slice(0, Math.max(0, Math.min(offset, text.length)));
  const lines = before.split('\n');
  return { line: lines.length, column: (lines.at(-1)?.length ?? 0) + 1 };
}

/** Parses JSON text; `file` is only used in the error. */
export function parseSpecJson(text: string, file: string): unknown {
  try {
    return JSON.parse(text) as unknown;
  } catch (cause) {
    const message = cause instanceof Error ? cause.message : String(cause);
    // Node 20: "… in JSON at position 12"; Node ≥ 21 adds "(line 2 column 3)".
    const lc = /line (\d+) column (\d+)/.exec(message);
    const at = /at position (\d+)/.exec(message);
    const pos = lc ? { line: Number(lc[1]), column: Number(lc[2]) } : at ? positionOf(text, Number(at[1])) : positionOf(text, text.length);
    const why = message.replace(/\s*\(line \d+ column \d+\)/, '').replace(/\s*in JSON at position \d+/, '').replace(/,? ?"[^"]*"\.\.\. is not valid JSON$/, '');
    throw parseError(file, pos, why, cause);
  }
}

/** Parses YAML text (one document); `file` is only used in the error. */
export function parseSpecYaml(text: string, file: string): unknown {
  const doc = parseDocument(text, { prettyErrors: false, uniqueKeys: true });
  const error = doc.errors[0];
  if (error) {
    const lp = error.linePos?.[0] ?? positionOf(text, error.pos[0]);
    const pos = { line: lp.line, column: 'col' in lp ? lp.col : lp.column };
    throw parseError(file, pos, error.message.split('\n')[0]!.replace(/ at line \d+, column \d+:?$/, ''), error);
  }
  return doc.toJS() as unknown;
}

/** Reads and parses a spec file. */
export async function loadSpecFile(path: string): Promise<unknown> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (cause) {
    const code = (cause as NodeJS.ErrnoException).code;
    const why = code === 'ENOENT' ? 'no such file' : code === 'EACCES' ? 'permission denied' : String((cause as Error).message);
    throw new QemuError('EREAD', `cannot read VM spec ${path}: ${why}`, { cause });
  }
  return path.toLowerCase().endsWith('.json') ? parseSpecJson(text, path) : parseSpecYaml(text, path);
}
