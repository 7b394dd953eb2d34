/** One error registry: every code declared once, each with an exit status, each documented. */
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { ERROR_CODES, GoshipError, type ErrorCode } from '../../src/errors.ts';
import { CODE_EXIT, EXIT, exitCodeFor } from '../../src/cli/output.ts';

const codes = Object.keys(ERROR_CODES) as ErrorCode[];

describe('the error registry', () => {
  it('gives every declared code an exit status, and nothing else', () => {
    expect(Object.keys(CODE_EXIT).sort()).toEqual([...codes].sort());
    for (const code of codes) expect(Object.values(EXIT)).toContain(CODE_EXIT[code]);
  });

  it('maps the classes scripts rely on', () => {
    const exit = (code: ErrorCode) => exitCodeFor(new GoshipError(code, 'x'));
    expect(['EINVALID', 'EPARSE', 'EUSAGE'].map((c) => exit(c as ErrorCode))).toEqual([2, 2, 2]);
    expect(['ENOTFOUND', 'EIMAGE_MISSING'].map((c) => exit(c as ErrorCode))).toEqual([3, 3]);
    expect(['EEXIST', 'ESTATE', 'EPORT_TAKEN'].map((c) => exit(c as ErrorCode))).toEqual([4, 4, 4]);
    expect(exit('EQEMU_EXIT')).toBe(1);
    expect(exitCodeFor(new Error('plain'))).toBe(1);
  });

  it('is listed in docs/cli.md, code by code', () => {
    const doc = readFileSync(new URL('../../docs/cli.md', import.meta.url), 'utf8');
    const table = doc.slice(doc.indexOf('## Error codes'));
    const missing = codes.filter((c) => !table.includes(`| \`${c}\` |`));
    expect(missing).toEqual([]);
  });

  it('describes each code in one line', () => {
    for (const code of codes) {
      expect(code).toMatch(/^E[A-Z_]+$/);
      expect(ERROR_CODES[code]).toMatch(/^[^\n]{10,200}$/);
    }
  });
});
