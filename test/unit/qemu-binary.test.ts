/** What src/qemu reads from the QEMU binary's own output. */
import { describe, expect, it } from 'vitest';
import { parseMachineAliases, parseQemuVersionText } from '../../src/qemu/index.ts';

const MACHINE_HELP = `Supported machines are:
microvm              microvm (i386)
pc                   Standard PC (i440FX + PIIX, 1996) (alias of pc-i440fx-7.2)
pc-i440fx-7.2        Standard PC (i440FX + PIIX, 1996) (default)
pc-i440fx-7.1        Standard PC (i440FX + PIIX, 1996)
q35                  Standard PC (Q35 + ICH9, 2009) (alias of pc-q35-7.2)
pc-q35-7.2           Standard PC (Q35 + ICH9, 2009)
pc-q35-7.1           Standard PC (Q35 + ICH9, 2009)
isapc                ISA-only PC
none                 empty machine
x-remote             Experimental remote machine
`;

describe('parseMachineAliases', () => {
  it('maps each alias to the versioned type it stands for', () => {
    expect([...parseMachineAliases(MACHINE_HELP)]).toEqual([
      ['pc', 'pc-i440fx-7.2'],
      ['q35', 'pc-q35-7.2'],
    ]);
  });

  it('finds nothing in text without aliases', () => {
    expect(parseMachineAliases('Supported machines are:\nnone                 empty machine\n').size).toBe(0);
  });
});

describe('parseQemuVersionText', () => {
  it('reads the version and the package', () => {
    expect(parseQemuVersionText('QEMU emulator version 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)\nCopyright (c) 2003-2022 Fabrice Bellard')).toEqual({
      version: '7.2.22',
      package: 'Debian 1:7.2+dfsg-7+deb12u18+b3',
    });
    expect(parseQemuVersionText('QEMU emulator version 8.0.0')).toEqual({ version: '8.0.0', package: undefined });
    expect(parseQemuVersionText('something else')).toBeUndefined();
  });
});
