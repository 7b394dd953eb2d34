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

describe("a monitor's errors are GoshipErrors too", () => {
  it('a start failure keeps a registry code (a system error\'s is EMONITOR) and its hint; a call error keeps its code for the wire', async () => {
    const { StartError } = await import('../../src/monitor/keeper.ts');
    const { MonitorCallError, errorBody } = await import('../../src/monitor/server.ts');
    const spawnFailed = new StartError('EQEMU_SPAWN', 'cannot start qemu', 'install QEMU');
    expect([spawnFailed instanceof GoshipError, spawnFailed.code, spawnFailed.hint, exitCodeFor(spawnFailed)]).toEqual([true, 'EQEMU_SPAWN', 'install QEMU', 1]);
    const fromNode = new StartError('ENOENT', 'no such file', undefined);
    expect([fromNode.code, fromNode.hint]).toEqual(['EMONITOR', undefined]);
    const cancelled = new MonitorCallError('ECANCELLED', 'cancelled by the client');
    expect([cancelled instanceof GoshipError, cancelled.code, cancelled.wireCode, exitCodeFor(cancelled)]).toEqual([true, 'EAGENT_REMOTE', 'ECANCELLED', 1]);
    expect(errorBody(cancelled)).toEqual({ code: 'ECANCELLED', message: 'cancelled by the client' });
    const state = new MonitorCallError('ESTATE', 'VM web is not running');
    expect([state.code, exitCodeFor(state), errorBody(state).code]).toEqual(['ESTATE', 4, 'ESTATE']);
  });
});
