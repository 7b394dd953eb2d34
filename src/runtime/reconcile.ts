/**
 * Reconcile: what a recorded VM needs, given what really runs. Pure: the
 * facts (is its QEMU alive, is its monitor alive, is the operation recorded
 * on it still carried out by a live goshipctl) come in, a decision comes out;
 * src/runtime/vms.ts gathers the facts and applies the decision.
 *
 * The monitor records every ending it sees, so reconcile only acts where no
 * monitor could: a QEMU without its monitor is adopted (a new monitor takes
 * it over); a VM recorded as live whose QEMU and monitor are both gone ended
 * unseen (`lost`); operations of goshipctl processes that died are cleared.
 */
import type { PendingOp, Vm, VmEnd } from '../store/index.ts';

/** States in which the VM's QEMU process should exist. */
export const LIVE_STATES: ReadonlySet<Vm['state']> = new Set(['starting', 'running', 'ready', 'stopping']);

export interface ReconcileFacts {
  /** The PID of the VM's QEMU, alive and carrying the VM's marker, if there is one. */
  qemuPid: number | undefined;
  /** The VM's monitor process is alive. */
  monitorAlive: boolean;
  /** The recorded `op` belongs to a goshipctl process that is gone. */
  opAbandoned: boolean;
}

export type ReconcileDecision =
  /** Nothing to do. */
  | { action: 'none' }
  /** Another goshipctl is working on it right now: leave it alone. */
  | { action: 'busy' }
  /** A QEMU runs without its monitor: start a monitor that adopts it. */
  | { action: 'adopt'; pid: number; clearOp: boolean }
  /** Nothing runs although the record says live: record how that looks (no monitor saw the end). */
  | { action: 'ended'; state: 'stopped' | 'suspended' | 'crashed'; end: Omit<VmEnd, 'at' | 'logTail'>; clearOp: boolean }
  /** The record's PID is not QEMU's (the pidfile knows better). */
  | { action: 'fix-pid'; pid: number; clearOp: boolean }
  /** Only an abandoned operation to clear. */
  | { action: 'clear-op'; op: PendingOp }
  /**
   * A suspend whose goshipctl died while its QEMU runs: with the state saved
   * and recorded, QEMU (paused since the save) is stopped, and the VM is
   * suspended; without, the guest, paused for a save nobody kept, runs again.
   * The op is cleared after.
   */
  | { action: 'finish-suspend'; then: 'stop' | 'run' };

/** Pure: the decision for one VM. */
export function reconcileDecision(vm: Pick<Vm, 'state' | 'pid' | 'op' | 'saved'>, facts: ReconcileFacts): ReconcileDecision {
  if (vm.op && !facts.opAbandoned) return { action: 'busy' };
  const suspending = vm.op?.kind === 'suspend';
  const clearOp = vm.op !== undefined;
  const live = LIVE_STATES.has(vm.state);
  if (facts.qemuPid !== undefined) {
    // A suspend's op stays until a monitor is there to finish it.
    if (!facts.monitorAlive) return { action: 'adopt', pid: facts.qemuPid, clearOp: clearOp && !suspending };
    if (suspending) return { action: 'finish-suspend', then: vm.saved ? 'stop' : 'run' };
    if (vm.pid !== facts.qemuPid && live) return { action: 'fix-pid', pid: facts.qemuPid, clearOp };
    return clearOp ? { action: 'clear-op', op: vm.op! } : { action: 'none' };
  }
  // No QEMU. A live monitor is recording the end, or waiting to restart: it decides.
  if (facts.monitorAlive) return clearOp ? { action: 'clear-op', op: vm.op! } : { action: 'none' };
  if (live) {
    if (vm.saved) return { action: 'ended', state: 'suspended', end: { kind: 'stopped', summary: 'suspended (its state was saved; no monitor saw its QEMU end)' }, clearOp };
    if (vm.state === 'stopping') {
      return { action: 'ended', state: 'stopped', end: { kind: 'stopped', summary: 'stopped (the goshipctl that stopped it was interrupted; no monitor saw the end)' }, clearOp };
    }
    return { action: 'ended', state: 'crashed', end: { kind: 'lost', summary: 'QEMU and its monitor are gone: nothing saw how the VM ended' }, clearOp };
  }
  return clearOp ? { action: 'clear-op', op: vm.op! } : { action: 'none' };
}
