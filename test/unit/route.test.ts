/** What `--json` prints of each node's output when a routed command runs on several nodes. */
import { describe, expect, it } from 'vitest';
import { gatheredResult } from '../../src/cli/route.ts';

describe('gatheredResult', () => {
  it('parses a node\'s JSON', () => {
    expect(gatheredResult('{"name":"duo","state":"ready"}\n', 31)).toEqual({ result: { name: 'duo', state: 'ready' } });
    expect(gatheredResult('[1,2]', 5)).toEqual({ result: [1, 2] });
  });

  it('keeps text that is not JSON as text, and nothing as null', () => {
    expect(gatheredResult('hello\n', 6)).toEqual({ result: 'hello\n' });
    expect(gatheredResult('', 0)).toEqual({ result: null });
    expect(gatheredResult(' \n', 2)).toEqual({ result: null });
  });

  it('says why past the limit instead of keeping it', () => {
    expect(gatheredResult('{}', 16 * 1024 * 1024 + 1)).toEqual({ result: null, error: 'output of 16777217 bytes, over the 16777216 kept of each node' });
  });
});
