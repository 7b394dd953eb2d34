/** Guest bytes on a terminal (src/cli/terminal.ts): what passes, what is shown instead of obeyed, across chunk boundaries. */
import { describe, expect, it } from 'vitest';
import { SGR_MAX, TerminalFilter } from '../../src/cli/terminal.ts';

const filter = (...chunks: string[]): string => {
  const f = new TerminalFilter();
  return Buffer.concat([...chunks.map((c) => f.push(Buffer.from(c, 'latin1'))), f.end()]).toString('latin1');
};

describe('TerminalFilter', () => {
  it('text, newline, tab, UTF-8 and colour pass as they are; CRLF is a newline', () => {
    expect(filter('plain text\tok\n')).toBe('plain text\tok\n');
    expect(filter('\x1b[1;31mred\x1b[0m\n')).toBe('\x1b[1;31mred\x1b[0m\n');
    expect(filter('line\r\n')).toBe('line\n');
    expect(Buffer.from(filter(Buffer.from('héllo ✓\n').toString('latin1')), 'latin1').toString()).toBe('héllo ✓\n');
  });

  it('every other control is shown in caret notation, never obeyed', () => {
    // A window title, a cursor move, clearing the screen, a bell, a lone CR that would overwrite the line, DEL.
    expect(filter('\x1b]0;pwned\x07')).toBe('^[]0;pwned^G');
    expect(filter('\x1b[2J\x1b[H')).toBe('^[[2J^[[H');
    expect(filter('safe\rEVIL\n')).toBe('safe^MEVIL\n');
    expect(filter('a\x7fb\x00c\x08')).toBe('a^?b^@c^H');
    // An 8-bit CSI in UTF-8 (U+009B) is a control too.
    expect(filter('\xc2\x9b2J')).toBe('^[[2J');
    expect(filter('\xc2\xa9')).toBe('\xc2\xa9');
  });

  it('a sequence split across chunks is judged whole', () => {
    expect(filter('\x1b', '[3', '2m', 'green')).toBe('\x1b[32mgreen');
    expect(filter('\x1b', '[3', '2J')).toBe('^[[32J');
    expect(filter('x\r', '\ny')).toBe('x\ny');
    expect(filter('x\r', 'y')).toBe('x^My');
    expect(filter('\xc2', '\x9b')).toBe('^[\x5b');
  });

  it('a stream that ends inside a sequence shows what it held; an overlong colour is shown, not obeyed', () => {
    expect(filter('end\x1b[1')).toBe('end^[[1');
    expect(filter('end\r')).toBe('end^M');
    const long = `\x1b[${'1;'.repeat(SGR_MAX)}m`;
    expect(filter(long).startsWith('^[[1;')).toBe(true);
    expect(filter(long)).not.toContain('\x1b');
  });
});
