import { describe, expect, it } from 'vitest';
import { parseImageChain } from '../../src/qemu/img-info.ts';
import { cmdlineHasMarker, processMarker, statState } from '../../src/qemu/process.ts';
import { signalName, statExit } from '../../src/proc.ts';

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

// /proc/PID/stat of real zombies (Linux 6.x): killed by SIGKILL, exited with code 127, and a live process.
const ZOMBIE_KILLED = '10695 (sh) Z 10694 10691 1138 0 -1 4228108 82 77 0 1 0 0 0 0 20 0 1 0 40427 0 0 18446744073709551615 0 0 0 0 0 0 0 6 65536 1 0 0 17 0 0 0 0 0 0 0 0 0 0 0 0 0 9';
const ZOMBIE_127 = '10704 (sh) Z 10703 10691 1138 0 -1 4227148 28 0 0 0 0 0 0 0 20 0 1 0 40474 0 0 18446744073709551615 0 0 0 0 0 0 0 6 65536 1 0 0 17 0 0 0 0 0 0 0 0 0 0 0 0 0 32512';
const LIVE = '10694 (node) R 10691 10691 1138 0 -1 4194304 2337 0 0 0 5 0 0 0 20 0 7 0 40426 745975808 10416 18446744073709551615 11988992 39846385 140732627387632 0 0 0 0 16781312 17922 0 0 0 17 0 0 0 0 0 0 90418888 90555584 1012047872 140732627389145 140732627389156 140732627389156 140732627390442 0';

describe('statExit', () => {
  it('reads a zombie\'s wait status from field 52: a signal or an exit code', () => {
    expect(statExit(ZOMBIE_KILLED)).toEqual({ code: null, signal: 'SIGKILL' });
    expect(statExit(ZOMBIE_127)).toEqual({ code: 127, signal: null });
    expect(statExit(ZOMBIE_127.replace(/ 32512$/, ' 0'))).toEqual({ code: 0, signal: null });
    expect(statExit(ZOMBIE_127.replace(/ 32512$/, ' 15'))).toEqual({ code: null, signal: 'SIGTERM' });
  });

  it('says nothing of a live process, a command name with parentheses aside, or a line too short', () => {
    expect(statExit(LIVE)).toBeUndefined();
    expect(statExit(ZOMBIE_KILLED.replace('(sh)', '(a) Z (b)'))).toEqual({ code: null, signal: 'SIGKILL' });
    expect(statExit(ZOMBIE_KILLED.replace(/ 9$/, ''))).toBeUndefined();
    expect(statExit('99 (a) Z 1 2')).toBeUndefined();
    expect(statExit('garbage')).toBeUndefined();
  });

  it('names signals', () => {
    expect(signalName(9)).toBe('SIGKILL');
    expect(signalName(6)).toBe('SIGABRT');
    expect(signalName(77)).toBe('SIG77');
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
