/** Snapshots and moves, their pure parts: tags, the order of the list, qemu-img's words, the VM's identity, a saved argv shape rebased. */
import { describe, expect, it } from 'vitest';
import { asIdentity } from '../../src/jail/index.ts';
import { imageSnapshotArgs } from '../../src/qemu/index.ts';
import { rebaseShape, receivedAs } from '../../src/runtime/move.ts';
import { FIRST_DISK_NODE } from '../../src/qemu/index.ts';
import { snapshotList, snapshotTagIssue } from '../../src/runtime/snapshots.ts';

describe('snapshots', () => {
  it('take tags that are names, nothing a path or an option could make of them', () => {
    for (const ok of ['one', 'before-upgrade', '2026-12-07', 'a'.repeat(63)]) expect(snapshotTagIssue(ok)).toBeUndefined();
    for (const bad of ['', '-x', '../x', 'a,b', 'Upper', 'a b', 'a'.repeat(64), 7]) {
      expect(snapshotTagIssue(bad)).toBe(`expected 1-63 lowercase letters, digits or "-", not starting with "-" (it is used in file names), got ${JSON.stringify(bad)}`);
    }
  });

  it('are listed oldest first, a tie broken by tag', () => {
    const at = (s: number) => `2026-12-07T00:00:0${s}.000Z`;
    const snapshots = { b: { tag: 'b', createdAt: at(2), memory: false, ms: 1 }, c: { tag: 'c', createdAt: at(1), memory: true, ms: 1 }, a: { tag: 'a', createdAt: at(2), memory: false, ms: 1 } };
    expect(snapshotList({ snapshots }).map((s) => s.tag)).toEqual(['c', 'a', 'b']);
    expect(snapshotList({})).toEqual([]);
  });

  it('are the overlay\'s own, named by its format node, and qemu-img gets the format from options, a comma doubled', () => {
    expect(FIRST_DISK_NODE).toBe('disk0-format');
    expect(imageSnapshotArgs('create', 'one', '/h/vms/web/disk.qcow2')).toEqual(['snapshot', '--image-opts', '-c', 'one', 'driver=qcow2,file.filename=/h/vms/web/disk.qcow2']);
    expect(imageSnapshotArgs('apply', 'one', '/h/a,b/disk.qcow2')).toEqual(['snapshot', '--image-opts', '-a', 'one', 'driver=qcow2,file.filename=/h/a,,b/disk.qcow2']);
    expect(imageSnapshotArgs('delete', 'one', '/d.qcow2')[2]).toBe('-d');
  });

  it('run qemu-img as the VM\'s identity with no group kept, or as GoShip\'s user', () => {
    expect(asIdentity({ uid: 1879048194, gid: 1879048194 })).toEqual(['/usr/bin/setpriv', '--reuid=1879048194', '--regid=1879048194', '--clear-groups', '--no-new-privs', '--']);
    expect(asIdentity(undefined)).toEqual([]);
  });
});

describe('a move', () => {
  it("rebases the saved argv shape's image paths (kernel, initrd) onto the receiver's image directory, commas doubled as QEMU has them", () => {
    const shape = ['qemu-system-x86_64', '-kernel', '/tmp/a/h/images/default/vmlinuz', '-initrd', '/tmp/a/h/images/default/initrd.img', '-blockdev', 'driver=file,filename={vm}/disk.qcow2', '-drive', 'file=/x,,y/images/default/z'];
    expect(rebaseShape(shape, '/tmp/a/h/images/default', '/home/n/.local/share/goship/images/default')).toEqual([
      'qemu-system-x86_64',
      '-kernel',
      '/home/n/.local/share/goship/images/default/vmlinuz',
      '-initrd',
      '/home/n/.local/share/goship/images/default/initrd.img',
      '-blockdev',
      'driver=file,filename={vm}/disk.qcow2',
      '-drive',
      'file=/x,,y/images/default/z',
    ]);
    expect(rebaseShape(['file=/x,,y/images/default/z'], '/x,y/images/default', '/n')).toEqual(['file=/n/z']);
    expect(rebaseShape(shape, '/same', '/same')).toEqual(shape);
  });

  it('after a cut connection, takes the node\'s copy as received only when it is whole and no command works on it', () => {
    const info = (o: Record<string, unknown>) => JSON.stringify({ name: 'web', node: 'local', ...o });
    expect(receivedAs(info({ state: 'ready' }))).toBe('whole');
    expect(receivedAs(info({ state: 'suspended' }))).toBe('whole');
    expect(receivedAs(info({ state: 'stopped' }))).toBe('whole');
    // Killed half-way, the node's reconcile made it broken: the sender keeps the project.
    expect(receivedAs(info({ state: 'broken', lastError: 'create was interrupted' }))).toBe('broken');
    // A receive still at work there (its create's op held), or anything else: nobody can tell yet.
    expect(receivedAs(info({ state: 'stopped', op: { kind: 'create', startedAt: '2026-12-07T10:00:00.000Z' } }))).toBeUndefined();
    expect(receivedAs(info({ state: 'creating' }))).toBeUndefined();
    expect(receivedAs('not json')).toBeUndefined();
  });
});
