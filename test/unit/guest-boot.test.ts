/** When a project is ready: cloud-init's result.json read as hostile input, the steps as text. */
import { describe, expect, it } from 'vitest';
import { bootStepsText, parseCloudInitResult } from '../../src/runtime/guest-boot.ts';

describe('parseCloudInitResult', () => {
  it('reads what cloud-init 22.4 writes', () => {
    const text = '{\n "v1": {\n  "datasource": "DataSourceNoCloud [seed=/dev/sr0][dsmode=net]",\n  "errors": []\n }\n}';
    expect(parseCloudInitResult(text)).toEqual({ errors: [] });
  });

  it('keeps the errors, bounded: ten at most, each cut at 500 characters', () => {
    expect(parseCloudInitResult(JSON.stringify({ v1: { datasource: null, errors: ['(\'runcmd\', RuntimeError(...))'] } }))).toEqual({ errors: ["('runcmd', RuntimeError(...))"] });
    const many = parseCloudInitResult(JSON.stringify({ v1: { errors: Array.from({ length: 12 }, (_, i) => (i === 0 ? 'x'.repeat(600) : { n: i })) } }));
    expect('errors' in many && many.errors.length).toBe(11);
    expect('errors' in many && many.errors[0]).toBe(`${'x'.repeat(500)}…`);
    expect('errors' in many && many.errors[1]).toBe('{"n":1}');
    expect('errors' in many && many.errors[10]).toBe('… and 2 more');
  });

  it('says what is wrong with anything else', () => {
    expect(parseCloudInitResult('{"v1": {"errors": [')).toEqual({ invalid: 'not JSON' });
    expect(parseCloudInitResult('{"v1": {}}')).toEqual({ invalid: 'no v1.errors list' });
    expect(parseCloudInitResult('[]')).toEqual({ invalid: 'no v1.errors list' });
    expect(parseCloudInitResult('')).toEqual({ invalid: 'not JSON' });
  });
});

describe('bootStepsText', () => {
  it('one step after another, in seconds; a skipped step says why', () => {
    expect(
      bootStepsText([
        { step: 'qemu', atMs: 412 },
        { step: 'agent', atMs: 18_230 },
        { step: 'network', atMs: 57_000 },
        { step: 'cloud-init', atMs: 57_100, skipped: 'not installed in the guest' },
      ]),
    ).toBe('qemu 0.4 s, agent 18.2 s, network 57.0 s, cloud-init skipped (not installed in the guest)');
  });
});
