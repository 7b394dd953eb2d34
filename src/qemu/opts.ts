/**
 * The one encoder of QEMU's `key=value,…` option syntax (QemuOpts / keyval).
 * Every option string in GoShip's argv comes from here, never from a template
 * literal: a `,` inside a value must be written `,,`, which is easy to forget.
 */
import { QemuError } from './errors.ts';

/**
 * One option value. Booleans become `on`/`off`; `undefined` is skipped; an
 * array repeats the key once per element, in order (`hostfwd=…,hostfwd=…`),
 * which QEMU's `-netdev user` needs.
 */
export type OptValue = string | number | boolean | undefined | readonly (string | number)[];

const KEY = /^[A-Za-z0-9_][A-Za-z0-9_.-]*$/;

function refuse(message: string): QemuError {
  return new QemuError('EQEMU_OPTS', `cannot encode a QEMU option: ${message}`);
}

/** `,` doubled; newlines refused (QEMU reads one option per argument, a newline is never meant). */
function escape(value: string, what: string): string {
  if (/[\n\r]/.test(value)) throw refuse(`${what} contains a newline: ${JSON.stringify(value)}`);
  return value.replaceAll(',', ',,');
}

function scalar(value: string | number | boolean, key: string): string {
  if (typeof value === 'boolean') return value ? 'on' : 'off';
  if (typeof value === 'number') {
    if (!Number.isFinite(value)) throw refuse(`${key} is not a finite number: ${value}`);
    return String(value);
  }
  return escape(value, `the value of ${key}`);
}

/**
 * Encodes `first` (a driver, type or implied value such as `virtio-blk-pci`)
 * followed by `key=value` pairs in the given order.
 *
 * qemuOpts('virtio-blk-pci', { drive: 'disk0', 'write-cache': true }) → 'virtio-blk-pci,drive=disk0,write-cache=on'
 * qemuOpts(undefined, { filename: '/tmp/a,b' })                      → 'filename=/tmp/a,,b'
 *
 * Refuses (QemuError EQEMU_OPTS) a `first` containing `=` (QEMU would read it
 * as a key), a newline anywhere, an empty or malformed key, a non-finite number.
 */
export function qemuOpts(first: string | undefined, opts: Record<string, OptValue>): string {
  const parts: string[] = [];
  if (first !== undefined) {
    if (first.includes('=')) throw refuse(`the first part ${JSON.stringify(first)} contains "=" and would be read as a key`);
    parts.push(escape(first, 'the first part'));
  }
  for (const [key, value] of Object.entries(opts)) {
    if (!KEY.test(key)) throw refuse(`bad key ${JSON.stringify(key)}`);
    if (value === undefined) continue;
    const values: readonly (string | number | boolean)[] = Array.isArray(value) ? value : [value as string | number | boolean];
    for (const one of values) parts.push(`${key}=${scalar(one, key)}`);
  }
  return parts.join(',');
}
