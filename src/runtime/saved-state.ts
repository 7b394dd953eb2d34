/**
 * A running VM's memory and devices saved to a file (src/vmstate) through its
 * QEMU, for a template (templates.ts): what that needs of the VM is its
 * people's QMP socket, its identity (QEMU connects to the save socket as the
 * VM's uid) and its memory size (a stream longer than the memory and its
 * devices is cut). A suspend's save is its VM monitor's (`monitor.suspend`,
 * src/monitor/keeper.ts), bounded the same way (DEVICE_STATE_ALLOWANCE);
 * what is here also runs a guest whose monitor died mid-save, and sets a
 * restored guest's clock.
 */
import { rm } from 'node:fs/promises';
import type { Layout } from '../layout.ts';
import { QmpClient } from '../qmp/index.ts';
import type { AgentClient } from '../serial/index.ts';
import type { Vm } from '../store/index.ts';
import { saveState, type StateTransfer } from '../vmstate/index.ts';
import { failureLine, tailCollector } from './bounded.ts';
import { RuntimeError } from './errors.ts';
import type { BootTrack } from './guest-boot.ts';
import { trace } from './trace.ts';

const MiB = 1024 * 1024;
/** A VM's devices beside its memory, at most: QEMU's stream is cut past memory + this. */
export const DEVICE_STATE_ALLOWANCE = 256 * MiB;

export interface SaveVmOptions {
  /** Where the state goes (written as FILE.partial, then renamed). */
  file: string;
  memoryBytes: number;
  /**
   * Pause the guest before the save (a template, a suspend). A save while the
   * guest runs (QEMU pauses it for the last pages only) is QEMU's live
   * migration; under TCG on QEMU 7.2 it has restored guests with corrupt
   * memory here (docs/decisions.md), so GoShip does not use it.
   */
  pause: boolean;
  /** Leave the RAM mapped shared out (a template's VM, whose RAM is its memory file). */
  ignoreShared?: boolean;
}

/** Runs `fn` with a QMP client on the VM's people's socket (GoShip's own is its monitor's), closed after. */
export async function withUserQmp<T>(vm: Pick<Vm, 'paths'>, fn: (qmp: QmpClient) => Promise<T>): Promise<T> {
  const qmp = await QmpClient.connect(vm.paths.qmpUserSocket, { timeoutMs: 10_000 });
  try {
    return await fn(qmp);
  } finally {
    await qmp.close();
  }
}

/** Saves the VM's state to `o.file`; the VM stays paused after a whole save (QEMU's `postmigrate`). */
export async function saveVm(layout: Layout, vm: Vm, o: SaveVmOptions): Promise<StateTransfer> {
  await rm(`${o.file}.partial`, { force: true });
  return withUserQmp(vm, async (qmp) => {
    if (o.pause) await qmp.stop();
    return saveState(qmp, {
      socketPath: layout.vmSocket(vm.id, 'saveSocket'),
      ...(vm.jail?.uid !== undefined && vm.jail.gid !== undefined ? { owner: { uid: vm.jail.uid, gid: vm.jail.gid } } : {}),
      file: o.file,
      maxBytes: o.memoryBytes + DEVICE_STATE_ALLOWANCE,
      ...(o.ignoreShared ? { ignoreShared: true } : {}),
    });
  });
}

/**
 * Runs the guest again after a save that did not end it: paused for the save
 * (and `postmigrate` once QEMU sent it all) by a monitor that was killed
 * before it recorded the state (reconcile's `finish-suspend`; a live monitor
 * runs the guest again itself). `cont` takes its disks back and runs it.
 * Says what it found.
 */
export async function runOn(vm: Vm): Promise<string> {
  return withUserQmp(vm, async (qmp) => {
    const { status } = await qmp.queryStatus();
    if (status === 'running') return 'running';
    await qmp.cont();
    trace(`vm ${vm.name}: was ${status} after a save it did not keep; running again`);
    return status;
  });
}

/** Sets a restored guest's clock from the host's (it stood still while the VM was saved); the step goes to `track`. */
export async function setGuestClock(agent: Pick<AgentClient, 'exec'>, o: { name: string; track: BootTrack }): Promise<void> {
  o.track.waiting('clock');
  const said = tailCollector(4096);
  const r = await agent.exec(['date', '-u', '-s', `@${Math.floor(Date.now() / 1000)}`], { stdout: said.stream, stderr: said.stream, timeoutMs: 30_000 });
  if (r.exitCode !== 0) throw new RuntimeError('EGUEST_BOOT', `VM ${o.name}: its clock could not be set from the host's: ${failureLine(said.bytes(), r)}`);
  o.track.reach('clock');
}
