/** The CLI's option readers: values are read back from the raw argv, as typed, and checked. */
import { describe, expect, it } from 'vitest';
import { MAX_TIMEOUT_SECONDS, intOption, rawValue, rawValues, secondsOption, sizeOption } from '../../src/cli/args.ts';

const err = (f: () => unknown) => {
  try {
    f();
  } catch (e) {
    return { code: (e as { code: string }).code, message: (e as Error).message };
  }
  throw new Error('expected an error');
};

describe('rawValues / rawValue', () => {
  it('collects --name v and --name=v in order, and stops at --', () => {
    const argv = ['--port', '80:80', 'x', '--port=udp:53:53', '--', '--port', '1:1'];
    expect(rawValues(argv, 'port')).toEqual(['80:80', 'udp:53:53']);
    expect(rawValues(argv, 'env')).toEqual([]);
  });

  it('keeps what was typed: no number conversion', () => {
    expect(rawValue(['--memory=0x10'], 'memory')).toBe('0x10');
    expect(rawValue(['--cpus', '007'], 'cpus')).toBe('007');
  });

  it('refuses an option given twice', () => {
    expect(err(() => rawValue(['--disk', '1G', '--disk=2G'], 'disk'))).toEqual({ code: 'EINVALID', message: '--disk: given 2 times; give it once' });
  });

  it('does not take a flag prefix for the flag (--port-range is not --port)', () => {
    expect(rawValues(['--port-range', '1'], 'port')).toEqual([]);
  });
});

describe('intOption', () => {
  it('takes digits only', () => {
    expect(intOption(['--cpus', '2'], 'cpus', 'a whole number of vCPUs')).toBe(2);
    expect(intOption([], 'cpus', 'x')).toBeUndefined();
    expect(err(() => intOption(['--cpus', '0x2'], 'cpus', 'a whole number of vCPUs'))).toEqual({
      code: 'EINVALID',
      message: '--cpus: expected a whole number of vCPUs, got "0x2"',
    });
    expect(err(() => intOption(['--cpus=-1'], 'cpus', 'a whole number'))).toEqual({ code: 'EINVALID', message: '--cpus: expected a whole number, got "-1"' });
  });
});

describe('secondsOption', () => {
  it('returns milliseconds', () => {
    expect(secondsOption(['--timeout', '30'], 'timeout')).toBe(30_000);
    expect(secondsOption([`--timeout=${MAX_TIMEOUT_SECONDS}`], 'timeout')).toBe(MAX_TIMEOUT_SECONDS * 1000);
  });

  it('refuses 0 and anything a Node timer cannot hold (it would fire at once)', () => {
    expect(MAX_TIMEOUT_SECONDS).toBe(2147483);
    expect(err(() => secondsOption(['--timeout', '0'], 'timeout'))).toEqual({ code: 'EINVALID', message: '--timeout: expected 1 to 2147483 seconds (about 24 days), got 0' });
    expect(err(() => secondsOption(['--timeout', '2147484'], 'timeout'))).toEqual({
      code: 'EINVALID',
      message: '--timeout: expected 1 to 2147483 seconds (about 24 days), got 2147484',
    });
    expect(err(() => secondsOption(['--timeout', '1e3'], 'timeout'))).toEqual({ code: 'EINVALID', message: '--timeout: expected a whole number of seconds, got "1e3"' });
  });
});

describe('sizeOption', () => {
  it('parses sizes and names the flag in an error', () => {
    expect(sizeOption(['--disk', '2G'], 'disk')).toBe(2 * 1024 ** 3);
    expect(err(() => sizeOption(['--disk', 'lots'], 'disk')).message).toMatch(/^--disk: /);
  });
});
