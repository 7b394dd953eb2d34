import { describe, expect, test } from 'vitest';
import { GoshipError } from '../../src/errors.ts';
import { qemuOpts } from '../../src/qemu/opts.ts';
import { formatSize, GiB, MiB, parseSize } from '../../src/qemu/sizes.ts';

describe('qemuOpts', () => {
  test('driver first, keys in the given order, booleans as on/off', () => {
    expect(qemuOpts('virtio-blk-pci', { drive: 'disk0-format', id: 'disk0', 'write-cache': true, 'read-only': false })).toBe(
      'virtio-blk-pci,drive=disk0-format,id=disk0,write-cache=on,read-only=off',
    );
  });

  test('without a first part', () => {
    expect(qemuOpts(undefined, { chardev: 'qmp0', mode: 'control' })).toBe('chardev=qmp0,mode=control');
  });

  test('numbers as written, undefined skipped, empty string kept', () => {
    expect(qemuOpts('x', { a: 1, b: undefined, c: 0, romfile: '' })).toBe('x,a=1,c=0,romfile=');
  });

  test('a comma is doubled in values and in the first part; spaces and "=" in values pass', () => {
    expect(qemuOpts(undefined, { filename: '/tmp/my disk,1.qcow2' })).toBe('filename=/tmp/my disk,,1.qcow2');
    expect(qemuOpts('a,b', { path: '/x=y,,z' })).toBe('a,,b,path=/x=y,,,,z');
  });

  test('an array repeats its key in order', () => {
    expect(qemuOpts('user', { id: 'net0', hostfwd: ['tcp:127.0.0.1:2222-:22', 'udp::53-:53'] })).toBe(
      'user,id=net0,hostfwd=tcp:127.0.0.1:2222-:22,hostfwd=udp::53-:53',
    );
  });

  test('refuses "=" in the first part', () => {
    expect(() => qemuOpts('a=b', {})).toThrow(GoshipError);
    expect(() => qemuOpts('a=b', {})).toThrow('cannot encode a QEMU option: the first part "a=b" contains "=" and would be read as a key');
  });

  test('refuses a newline in a value or the first part', () => {
    expect(() => qemuOpts(undefined, { path: '/a\nb' })).toThrow('cannot encode a QEMU option: the value of path contains a newline: "/a\\nb"');
    expect(() => qemuOpts('a\rb', {})).toThrow('cannot encode a QEMU option: the first part contains a newline: "a\\rb"');
  });

  test('refuses bad keys and non-finite numbers', () => {
    expect(() => qemuOpts(undefined, { 'a,b': 'x' })).toThrow('cannot encode a QEMU option: bad key "a,b"');
    expect(() => qemuOpts(undefined, { '': 'x' })).toThrow('bad key ""');
    expect(() => qemuOpts(undefined, { size: Number.NaN })).toThrow('size is not a finite number: NaN');
  });

  test('the error has a stable code', () => {
    try {
      qemuOpts('a=b', {});
    } catch (e) {
      expect((e as GoshipError).code).toBe('EQEMU_OPTS');
    }
  });
});

describe('parseSize', () => {
  test.each([
    ['1024', 1024],
    ['2G', 2 * GiB],
    ['512M', 512 * MiB],
    ['512m', 512 * MiB],
    ['1.5G', 1536 * MiB],
    ['64K', 64 * 1024],
    ['2GiB', 2 * GiB],
    ['1T', 1024 * GiB],
    ['100B', 100],
    [' 8M ', 8 * MiB],
    [4096, 4096],
    [0, 0],
  ])('%j → %d bytes', (input, bytes) => {
    expect(parseSize(input)).toEqual({ ok: true, bytes });
  });

  test.each([['abc'], ['2GB'], ['-1'], [''], ['1.5'], ['G']])('%j is refused', (input) => {
    const r = parseSize(input);
    expect(r.ok).toBe(false);
  });

  test('messages say what is allowed and what was given', () => {
    expect(parseSize('abc')).toEqual({ ok: false, message: 'expected a size such as "512M", "2G", "1.5G" or a whole number of bytes, got "abc"' });
    expect(parseSize(-1)).toEqual({ ok: false, message: 'expected a size such as "512M", "2G", "1.5G" or a whole number of bytes, got -1' });
    expect(parseSize(1.5)).toEqual({ ok: false, message: 'expected a size such as "512M", "2G", "1.5G" or a whole number of bytes, got 1.5' });
    expect(parseSize(true)).toEqual({ ok: false, message: 'expected a size such as "512M", "2G", "1.5G" or a whole number of bytes, got boolean' });
    expect(parseSize('1.5')).toEqual({ ok: false, message: 'expected a whole number of bytes, got "1.5" (1.5 bytes)' });
  });
});

describe('formatSize', () => {
  test.each([
    [GiB, '1G'],
    [1536 * MiB, '1536M'],
    [8 * GiB, '8G'],
    [1000, '1000'],
    [0, '0'],
    [8_342_000_000, '7.8G'],
  ])('%d → %s', (bytes, text) => {
    expect(formatSize(bytes)).toBe(text);
  });
});
