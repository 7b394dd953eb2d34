/**
 * Named snapshots of a project's VM: internal qcow2 snapshots of its overlay
 * (docs/vm-state.md "Snapshots"), the disk alone or with the guest's memory and
 * devices (QEMU's `snapshot-save`, which writes the state into the overlay).
 *
 * Internal rather than external layers: each snapshot is a table of the
 * overlay's clusters, counted by reference, so deleting one in the middle of
 * the list leaves every other whole with nothing to commit or stream; the
 * overlay stays the one file the VM's QEMU writes, and the jail's rule (it
 * names exactly its base) holds. The cost: the snapshots live in that file
 * (a memory snapshot adds the guest's state, ~300 MiB for a settled 1 GiB
 * guest), and a disk-only restore needs the VM's QEMU stopped.
 *
 * While the VM runs, QEMU takes and deletes them (QMP); while it does not,
 * `qemu-img snapshot` does, as the VM's own identity, after the overlay's
 * header was checked (jail.ts checkChain). A restore with memory starts the
 * VM's QEMU on the snapshot (`-loadvm`), with a fresh monitor and agent
 * session; a disk-only restore applies it to the stopped overlay and boots.
 */
import { rm } from 'node:fs/promises';
import { ValidationError } from '../errors.ts';
import { asIdentity } from '../jail/index.ts';
import type { Layout } from '../layout.ts';
import { FIRST_DISK_NODE, imageSnapshot, NAME_PATTERN, NAME_RULE, type ImageSnapshotOp } from '../qemu/index.ts';
import type { QmpClient } from '../qmp/index.ts';
import { findRecord, requireRecord, type Store, type Vm, type VmSnapshot } from '../store/index.ts';
import { VmStateError } from '../vmstate/index.ts';
import { RuntimeError, busyError, stateError } from './errors.ts';
import { checkChain } from './jail.ts';
import { withUserQmp } from './saved-state.ts';
import type { VmService } from './vms.ts';

const SAVE_TIMEOUT_MS = 300_000;

/** Pure: why `tag` cannot name a snapshot, or undefined. */
export function snapshotTagIssue(tag: unknown): string | undefined {
  return typeof tag === 'string' && NAME_PATTERN.test(tag) ? undefined : `expected ${NAME_RULE}, got ${JSON.stringify(tag)}`;
}

/** Pure: a VM's snapshots, oldest first. */
export function snapshotList(vm: Pick<Vm, 'snapshots'>): VmSnapshot[] {
  return Object.values(vm.snapshots ?? {}).sort((a, b) => a.createdAt.localeCompare(b.createdAt) || a.tag.localeCompare(b.tag));
}

const running = (vm: Vm): boolean => vm.state === 'running' || vm.state === 'ready';

export interface SnapshotContext {
  store: Store;
  layout: Layout;
  vms: VmService;
  now: () => string;
}

export class VmSnapshots {
  constructor(private readonly ctx: SnapshotContext) {}

  /** Takes snapshot `tag`: while the VM runs, by QEMU (with `memory`, its state too); while it is stopped or suspended, the disk alone. */
  async create(name: string, tag: string, o: { memory: boolean }): Promise<VmSnapshot> {
    checkTag(tag);
    const vm = await this.claim(name, (rec) => {
      if (rec.snapshots?.[tag]) throw new RuntimeError('EEXIST', `VM ${name} has a snapshot ${tag} already`, { hint: `pick another tag, or delete it first: goshipctl project snapshot delete ${rec.project ?? name} ${tag}` });
      if (o.memory && !running(rec)) throw stateError(`VM ${name} is ${rec.state}: a snapshot with its memory needs it running`, `start it first, or take the disk alone (without --memory)`);
    });
    const began = Date.now();
    try {
      if (running(vm)) await withUserQmp(vm, (qmp) => (o.memory ? saveWithMemory(qmp, tag) : qmp.blockdevSnapshotInternal(FIRST_DISK_NODE, tag, { timeoutMs: SAVE_TIMEOUT_MS })));
      else await this.offline(vm, 'create', tag);
      const snap: VmSnapshot = { tag, createdAt: this.ctx.now(), memory: o.memory, ms: Date.now() - began };
      await this.release(vm.id, (rec) => (rec.snapshots = { ...rec.snapshots, [tag]: snap }));
      return snap;
    } catch (err) {
      await this.release(vm.id);
      throw err;
    }
  }

  async list(name: string): Promise<VmSnapshot[]> {
    return snapshotList(await this.ctx.vms.get(name));
  }

  /** Deletes snapshot `tag`; the others stay whole (internal snapshots share clusters by reference). */
  async delete(name: string, tag: string): Promise<void> {
    checkTag(tag);
    const vm = await this.claim(name, (rec) => void known(rec, tag));
    try {
      if (running(vm)) await withUserQmp(vm, (qmp) => qmp.blockdevSnapshotDeleteInternal(FIRST_DISK_NODE, tag, { timeoutMs: SAVE_TIMEOUT_MS }));
      else await this.offline(vm, 'delete', tag);
      await this.release(vm.id, (rec) => void delete rec.snapshots?.[tag]);
    } catch (err) {
      await this.release(vm.id);
      throw err;
    }
  }

  /**
   * Readies the VM to start on snapshot `tag`: its QEMU stopped (what ran is
   * dropped), a suspended state removed (it belongs to the disk being
   * replaced). With memory, the caller starts it with `loadvm: tag`; a disk
   * snapshot is applied to the overlay here and the caller boots it.
   */
  async prepareRestore(name: string, tag: string): Promise<VmSnapshot> {
    checkTag(tag);
    const before = await this.ctx.vms.get(name);
    const snap = known(before, tag);
    if (running(before) || before.state === 'starting' || before.state === 'stopping') await this.ctx.vms.stop(name, { force: true });
    const vm = await this.claim(name, (rec) => {
      if (rec.saved) {
        delete rec.saved;
        rec.state = 'stopped';
      }
    });
    try {
      await rm(this.ctx.layout.vmFile(vm.id, 'savedState'), { force: true });
      if (!snap.memory) await this.offline(vm, 'apply', tag);
    } finally {
      await this.release(vm.id);
    }
    return snap;
  }

  /** Records the op `snapshot` on a VM that runs or stands still (not starting, stopping or busy), after `check`. */
  private async claim(name: string, check: (rec: Vm) => void): Promise<Vm> {
    await this.ctx.vms.reconcile();
    return this.ctx.store.update((draft) => {
      const rec = requireRecord(draft, 'vm', name);
      if (rec.op) throw busyError(`VM ${name}`, rec.op);
      if (rec.state === 'starting' || rec.state === 'stopping') throw stateError(`VM ${name} is ${rec.state}`, 'wait for it, then try again');
      if (!rec.paths.overlay) throw new RuntimeError('ENOTSUP', `VM ${name} has no overlay on an image: GoShip snapshots a project's disk only`);
      check(rec);
      rec.op = { kind: 'snapshot', pid: process.pid, startedAt: this.ctx.now() };
      return structuredClone(rec);
    });
  }

  private async release(id: string, change?: (rec: Vm) => void): Promise<void> {
    await this.ctx.store.update((draft) => {
      const rec = findRecord(draft, 'vm', id);
      if (!rec) return;
      if (rec.op?.kind === 'snapshot' && rec.op.pid === process.pid) delete rec.op;
      change?.(rec);
    });
  }

  /** `qemu-img snapshot` on the overlay of a VM no QEMU runs, as the VM's identity, its header checked first. */
  private async offline(vm: Vm, op: ImageSnapshotOp, tag: string): Promise<void> {
    await checkChain(this.ctx.layout, vm);
    const identity = vm.jail?.uid !== undefined && vm.jail.gid !== undefined && process.getuid?.() === 0 ? { uid: vm.jail.uid, gid: vm.jail.gid } : undefined;
    await imageSnapshot(op, tag, vm.paths.overlay!, asIdentity(identity));
  }
}

function checkTag(tag: string): void {
  const issue = snapshotTagIssue(tag);
  if (issue) throw new ValidationError([{ path: 'tag', message: issue }], { subject: 'invalid snapshot tag' });
}

function known(vm: Vm, tag: string): VmSnapshot {
  const snap = vm.snapshots?.[tag];
  if (!snap) throw new RuntimeError('ENOTFOUND', `VM ${vm.name} has no snapshot ${tag}`, { hint: `goshipctl project snapshot list ${vm.project ?? vm.name}` });
  return snap;
}

/** `snapshot-save` as a job, waited for: the guest pauses while its memory and devices go into the overlay. */
async function saveWithMemory(qmp: QmpClient, tag: string): Promise<void> {
  const jobId = `goship-snapshot-${tag}`;
  await qmp.snapshotSave({ jobId, tag, vmstate: FIRST_DISK_NODE, devices: [FIRST_DISK_NODE] });
  const deadline = Date.now() + SAVE_TIMEOUT_MS;
  for (;;) {
    const job = (await qmp.queryJobs()).find((j) => j.id === jobId);
    if (!job) throw new VmStateError(`snapshot ${tag}: QEMU's job ${jobId} is gone`);
    if (job.status === 'concluded') {
      await qmp.jobDismiss(jobId);
      if (job.error) throw new VmStateError(`snapshot ${tag} with memory: QEMU says: ${job.error}`);
      return;
    }
    if (Date.now() > deadline) throw new VmStateError(`snapshot ${tag} with memory: not done in ${SAVE_TIMEOUT_MS / 1000} s (job ${job.status})`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
