import { describe, expect, it } from 'vitest';
import { STATE_MAGIC, stateFileIssue, stateHeaderIssue } from '../../src/vmstate/index.ts';

const head = (magic: number, version: number): Buffer => {
  const b = Buffer.alloc(8);
  b.writeUInt32BE(magic, 0);
  b.writeUInt32BE(version, 4);
  return b;
};

describe('a saved state header', () => {
  it.each([
    [head(STATE_MAGIC, 3), undefined],
    [Buffer.alloc(0), "it is empty, shorter than a state's header"],
    [Buffer.from('QEVM'), "it is 4 bytes long, shorter than a state's header"],
    [head(0x7f454c46, 3), "it does not start with QEMU's migration magic QEVM (found 0x7f454c46)"],
    [head(STATE_MAGIC, 2), 'its stream version is 2, not 3'],
  ])('%#: %s', (bytes, issue) => {
    expect(stateHeaderIssue(bytes)).toBe(issue);
  });

  it('checks the size recorded at the save before the header', () => {
    expect(stateFileIssue(head(STATE_MAGIC, 3), 100, 100)).toBeUndefined();
    expect(stateFileIssue(head(STATE_MAGIC, 3), 90, 100)).toBe('it is 90 bytes long, not the 100 bytes that were saved (truncated)');
    expect(stateFileIssue(head(STATE_MAGIC, 3), 110, 100)).toBe('it is 110 bytes long, not the 100 bytes that were saved (changed)');
    expect(stateFileIssue(Buffer.from('nope'), 4, undefined)).toBe("it is 4 bytes long, shorter than a state's header");
  });
});
