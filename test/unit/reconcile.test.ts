/** Reconcile's decisions, from the facts (QEMU alive, monitor alive, op abandoned) alone. */
import { describe, expect, it } from 'vitest';
import { reconcileDecision } from '../../src/runtime/reconcile.ts';
import type { PendingOp, Vm } from '../../src/store/index.ts';

const op = (kind: PendingOp['kind']): PendingOp => ({ kind, pid: 4242, startedAt: '2026-12-01T00:00:00.000Z' });
const vm = (state: Vm['state'], extra: Partial<Vm> = {}) => ({ state, ...extra });

describe('reconcileDecision', () => {
  it('a live op of another goshipctl: hands off', () => {
    expect(reconcileDecision(vm('starting', { op: op('start') }), { qemuPid: undefined, monitorAlive: false, opAbandoned: false })).toEqual({ action: 'busy' });
  });

  it('QEMU and its monitor alive: nothing, or the PID fixed', () => {
    expect(reconcileDecision(vm('ready', { pid: 10 }), { qemuPid: 10, monitorAlive: true, opAbandoned: false })).toEqual({ action: 'none' });
    expect(reconcileDecision(vm('running', { pid: 9 }), { qemuPid: 10, monitorAlive: true, opAbandoned: false })).toEqual({ action: 'fix-pid', pid: 10, clearOp: false });
  });

  it('QEMU alive without its monitor: adopt, whatever the record says', () => {
    expect(reconcileDecision(vm('ready', { pid: 10 }), { qemuPid: 10, monitorAlive: false, opAbandoned: false })).toEqual({ action: 'adopt', pid: 10, clearOp: false });
    expect(reconcileDecision(vm('starting', { op: op('start') }), { qemuPid: 10, monitorAlive: false, opAbandoned: true })).toEqual({ action: 'adopt', pid: 10, clearOp: true });
    expect(reconcileDecision(vm('stopped'), { qemuPid: 10, monitorAlive: false, opAbandoned: false })).toEqual({ action: 'adopt', pid: 10, clearOp: false });
  });

  it('no QEMU but a live monitor: the monitor is recording the end, or waiting to restart', () => {
    expect(reconcileDecision(vm('running', { pid: 10 }), { qemuPid: undefined, monitorAlive: true, opAbandoned: false })).toEqual({ action: 'none' });
    expect(reconcileDecision(vm('stopping', { op: op('stop') }), { qemuPid: undefined, monitorAlive: true, opAbandoned: true })).toEqual({ action: 'clear-op', op: op('stop') });
  });

  it('nothing runs although the record says live: ended unseen', () => {
    expect(reconcileDecision(vm('ready', { pid: 10 }), { qemuPid: undefined, monitorAlive: false, opAbandoned: false })).toEqual({
      action: 'ended',
      state: 'crashed',
      end: { kind: 'lost', summary: 'QEMU and its monitor are gone: nothing saw how the VM ended' },
      clearOp: false,
    });
    expect(reconcileDecision(vm('stopping', { op: op('stop') }), { qemuPid: undefined, monitorAlive: false, opAbandoned: true })).toMatchObject({
      action: 'ended',
      state: 'stopped',
      end: { kind: 'stopped' },
      clearOp: true,
    });
  });

  it('a stopped VM with the op of a dead goshipctl: the op is cleared', () => {
    expect(reconcileDecision(vm('defined', { op: op('create') }), { qemuPid: undefined, monitorAlive: false, opAbandoned: true })).toEqual({ action: 'clear-op', op: op('create') });
    expect(reconcileDecision(vm('stopped'), { qemuPid: undefined, monitorAlive: false, opAbandoned: false })).toEqual({ action: 'none' });
  });

  it('a suspend whose goshipctl died: its QEMU stopped when the state was recorded, the guest run on when not; the op waits for a monitor', () => {
    const saved = { file: '/h/vms/a/saved.state', bytes: 4096, at: '2026-12-01T00:00:00.000Z', argvShape: [] };
    const facts = { qemuPid: 10, monitorAlive: true, opAbandoned: true };
    expect(reconcileDecision(vm('ready', { pid: 10, op: op('suspend'), saved }), facts)).toEqual({ action: 'finish-suspend', then: 'stop' });
    expect(reconcileDecision(vm('ready', { pid: 10, op: op('suspend') }), facts)).toEqual({ action: 'finish-suspend', then: 'run' });
    expect(reconcileDecision(vm('ready', { pid: 10, op: op('suspend') }), { ...facts, monitorAlive: false })).toEqual({ action: 'adopt', pid: 10, clearOp: false });
    // Its QEMU gone unseen after a whole save: suspended, the state kept.
    expect(reconcileDecision(vm('ready', { op: op('suspend'), saved }), { qemuPid: undefined, monitorAlive: false, opAbandoned: true })).toMatchObject({ action: 'ended', state: 'suspended', clearOp: true });
    expect(reconcileDecision(vm('suspended', { op: op('suspend'), saved }), { qemuPid: undefined, monitorAlive: false, opAbandoned: true })).toEqual({ action: 'clear-op', op: op('suspend') });
  });
});
