/** What goshipctl prints: guest-supplied text cannot drive the terminal. */
import { PassThrough } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { GoshipError } from '../../src/errors.ts';
import { Output, printable } from '../../src/cli/output.ts';

function capture(json = false) {
  const out = new PassThrough();
  const err = new PassThrough();
  let o = '';
  let e = '';
  out.on('data', (d: Buffer) => (o += d.toString()));
  err.on('data', (d: Buffer) => (e += d.toString()));
  const output = new Output({ json, stdout: out as unknown as NodeJS.WriteStream, stderr: err as unknown as NodeJS.WriteStream, env: {} });
  return { output, stdout: () => o, stderr: () => e };
}

const HOSTILE = 'web\x1b]0;owned\x07\x1b[2J\x9b31m\r\x08\x7f';

describe('printable', () => {
  it('replaces C0 (but tab and newline), DEL and C1 controls, keeping the rest', () => {
    expect(printable(HOSTILE)).toBe('web\ufffd]0;owned\ufffd\ufffd[2J\ufffd31m\ufffd\ufffd\ufffd');
    expect(printable('a\tb\nc é ✓')).toBe('a\tb\nc é ✓');
  });
});

describe('Output', () => {
  it('a human result is printed without the guest’s escape sequences', () => {
    const c = capture();
    c.output.result({ hostname: HOSTILE }, () => `pong from ${HOSTILE}: 1.00 ms`);
    expect(c.stdout()).toBe(`pong from ${printable(HOSTILE)}: 1.00 ms\n`);
    expect(c.stdout()).not.toMatch(/[\x1b\x07\x9b]/);
  });

  it('an error message and its hint are one clean line each', () => {
    const c = capture();
    c.output.error(new GoshipError('EAGENT_REMOTE', `agent exec failed: ENOENT: ${HOSTILE}\nsecond line`, { hint: `try\x1b[1m again` }));
    const lines = c.stderr().split('\n');
    expect(lines).toHaveLength(3);
    expect(lines[0]).toBe(`goshipctl: error: agent exec failed: ENOENT: ${printable(HOSTILE)} second line`);
    expect(lines[1]).toBe('hint: try\ufffd[1m again');
  });

  it('--json keeps the text as data: JSON escapes control characters itself', () => {
    const c = capture(true);
    c.output.result({ hostname: HOSTILE }, () => 'unused');
    expect(JSON.parse(c.stdout())).toEqual({ hostname: HOSTILE });
    expect(c.stdout()).not.toMatch(/[\x1b\x07]/);
  });
});
