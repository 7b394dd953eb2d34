import { describe, expect, it } from 'vitest';
import { parseImageChain } from '../../src/qemu/img-info.ts';
import { cmdlineHasMarker, processMarker, statState } from '../../src/qemu/process.ts';

const cmd = (...args: string[]) => `${args.join('\0')}\0`;

describe('cmdlineHasMarker', () => {
  it('finds the process= part of -name', () => {
    const c = cmd('qemu-system-x86_64', '-name', 'guest=web,process=goship-web,debug-threads=on', '-S');
    expect(cmdlineHasMarker(c, processMarker('web'))).toBe(true);
  });

  it('does not match a prefix of another VM id', () => {
    const c = cmd('qemu-system-x86_64', '-name', 'guest=web2,process=goship-web2');
    expect(cmdlineHasMarker(c, 'goship-web')).toBe(false);
  });

  it('ignores the marker outside -name (an unrelated process mentioning it)', () => {
    expect(cmdlineHasMarker(cmd('grep', 'process=goship-web'), 'goship-web')).toBe(false);
    expect(cmdlineHasMarker(cmd('sleep', '100'), 'goship-web')).toBe(false);
    expect(cmdlineHasMarker('', 'goship-web')).toBe(false);
  });
});

describe('statState', () => {
  it('reads the state after a command name holding spaces and parentheses', () => {
    expect(statState('1234 (qemu (x) y) S 1 1234 1234 0 -1')).toBe('S');
    expect(statState('99 (a) Z 1 2')).toBe('Z');
    expect(statState('garbage')).toBeUndefined();
  });
});


describe('parseImageChain', () => {
  it('parses a backing chain, top layer first', () => {
    const json = JSON.stringify([
      {
        filename: '/v/disk.qcow2',
        format: 'qcow2',
        'virtual-size': 21474836480,
        'actual-size': 200704,
        'backing-filename': '/i/base.qcow2',
        'backing-filename-format': 'qcow2',
      },
      { filename: '/i/base.qcow2', format: 'qcow2', 'virtual-size': 2147483648, 'actual-size': 399507456 },
    ]);
    expect(parseImageChain(json)).toEqual([
      {
        filename: '/v/disk.qcow2',
        format: 'qcow2',
        virtualSize: 21474836480,
        actualSize: 200704,
        backingFilename: '/i/base.qcow2',
        backingFormat: 'qcow2',
      },
      {
        filename: '/i/base.qcow2',
        format: 'qcow2',
        virtualSize: 2147483648,
        actualSize: 399507456,
        backingFilename: undefined,
        backingFormat: undefined,
      },
    ]);
  });

  it('refuses output that is not qemu-img JSON', () => {
    expect(() => parseImageChain('nope', 'x.img')).toThrow('qemu-img info: output for x.img is not JSON');
    expect(() => parseImageChain('{"filename":"a"}', 'x.img')).toThrow(
      'qemu-img info: unexpected output for x.img: missing filename, format or virtual-size',
    );
  });
});
