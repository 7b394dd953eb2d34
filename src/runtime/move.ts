/**
 * `project move NAME --to NODE`: a project of this host carried to a node
 * (docs/vm-state.md "Moving a project"). Here: the project suspended (a
 * running one), its disk copied onto its image's base alone (`qemu-img
 * convert -B`, so that a clone's template layer goes with it and nothing of
 * this host's paths does), the image pushed when the node lacks it, and one
 * tar stream (move.json with the sha256 of each file, the disk, the saved
 * state) into the node's `project receive`. There: every file checked, the
 * project made again from its spec and creation time (the same argv shape,
 * the same cloud-init instance), the disk rebased onto the node's copy of the
 * image, the state recorded, and the project resumed; any failure there
 * removes all of it. Only once the node says it holds the project is it
 * removed here; a failure before that resumes it here. So it runs in one
 * place, never two, never none.
 */
import { chmod, link, mkdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import type { Readable } from 'node:stream';
import * as v from 'valibot';
import { extractOnly, sha256File } from '../image/index.ts';
import type { Layout } from '../layout.ts';
import { NAME_PATTERN, NAME_RULE, flattenOnto, renameBacking } from '../qemu/index.ts';
import { type App, type Store, appKey, findRecord, requireRecord } from '../store/index.ts';
import { RuntimeError, stateError } from './errors.ts';
import type { ImageService } from './images.ts';
import { setProjectForwards } from './apps.ts';
import { checkChain } from './jail.ts';
import type { NodeService } from './nodes.ts';
import type { ProjectService, ProjectView } from './projects.ts';
import { trace } from './trace.ts';
import { staleWorkDirs, workDirName } from '../proc.ts';
import type { VmService } from './vms.ts';

/** Bump when what move.json says, or the files beside it, change. */
export const MOVE_FORMAT = 1;
const FILE_DISK = 'disk.qcow2';
const FILE_STATE = 'saved.state';
const FILE_RECORD = 'move.json';

const sha = v.pipe(v.string(), v.regex(/^[0-9a-f]{64}$/));
const size = v.pipe(v.number(), v.integer(), v.minValue(1));
export const MoveRecordSchema = v.object({
  format: v.literal(MOVE_FORMAT),
  name: v.string(),
  createdAt: v.pipe(v.string(), v.isoTimestamp()),
  spec: v.object({
    cpus: v.pipe(v.number(), v.integer(), v.minValue(1)),
    memoryBytes: size,
    diskBytes: size,
    image: v.string(),
    ports: v.array(v.object({ proto: v.picklist(['tcp', 'udp']), host: v.number(), guest: v.number() })),
    sshKeys: v.array(v.string()),
    restart: v.optional(v.picklist(['no', 'on-crash'])),
  }),
  /** The image's base disk it stands on, by content: the node's copy must be the same. */
  imageSha256: sha,
  /** Where the sender keeps that image (its kernel and initrd are in the VM's argv): the receiver's own directory takes its place in the saved argv shape. */
  imageDir: v.string(),
  disk: v.object({ sha256: sha, bytes: size }),
  /** The project's apps as recorded: they run in its guest, which moves with them. */
  apps: v.array(v.looseObject({ project: v.string(), name: v.pipe(v.string(), v.regex(NAME_PATTERN)), kind: v.picklist(['container', 'process']), createdAt: v.string(), state: v.string() })),
  /** The saved state of a suspended project, with the argv shape it was saved from. */
  saved: v.optional(v.object({ sha256: sha, bytes: size, argvShape: v.array(v.string()) })),
});
export type MoveRecord = v.InferOutput<typeof MoveRecordSchema>;

export interface MoveContext {
  store: Store;
  layout: Layout;
  projects: ProjectService;
  vms: VmService;
  nodes: NodeService;
  images: ImageService;
  now: () => string;
}

export interface MoveReport {
  name: string;
  node: string;
  /** Whether it runs there (it ran here), or stays stopped or suspended. */
  state: string;
  bytes: number;
  ms: number;
}

/** Sends project `name` to node `to`; see the file's comment for the order of things and what a failure leaves. */
export async function moveProject(ctx: MoveContext, name: string, to: string, onStep: (what: string) => void = () => undefined): Promise<MoveReport> {
  const began = Date.now();
  const node = await ctx.nodes.node(to);
  const view = await ctx.projects.info(name);
  const { project: p, vm } = view;
  if (!vm) throw stateError(`project ${name} has no VM here`, 'goshipctl project list');
  if (!['ready', 'stopped', 'suspended'].includes(p.state)) throw stateError(`project ${name} is ${p.state}: only a ready, stopped or suspended project moves`, `goshipctl project info ${name}`);
  const image = await ctx.images.info(p.spec.image);
  if (!image.sha256) throw new RuntimeError('ENOTSUP', `image ${p.spec.image} has no recorded checksum: the node's copy could not be checked`);
  if ((p.spec.mounts ?? []).length > 0) {
    throw new RuntimeError('ENOTSUP', `project ${name} has shared folders, which are this host's directories: it cannot move to another node`, { hint: `create it on the node instead: goshipctl project create ${name} --node ${to}` });
  }
  const wasReady = p.state === 'ready';
  if (wasReady) {
    onStep('suspending');
    await ctx.projects.suspend(name);
  }
  // While it moves, no other goshipctl starts, stops or deletes it here.
  const setOp = (on: boolean) =>
    ctx.store.update((draft) => {
      const rec = findRecord(draft, 'project', name);
      if (!rec) return;
      if (on) rec.op = { kind: 'move', pid: process.pid, startedAt: ctx.now() };
      else if (rec.op?.kind === 'move' && rec.op.pid === process.pid) delete rec.op;
    });
  await setOp(true);
  await sweep(ctx.layout.vmsDir, 'move');
  const work = join(ctx.layout.vmsDir, workDirName('move'));
  await mkdir(work, { mode: 0o700 });
  let sent = false;
  let unknown = false;
  try {
    const rec = requireRecord(await ctx.store.read(), 'vm', vm.id);
    onStep('copying the disk');
    await checkChain(ctx.layout, rec);
    const disk = join(work, FILE_DISK);
    // One layer on the image's base: what the VM wrote, and a clone's template layer, nothing of this host's paths but the base's.
    await flattenOnto(rec.paths.overlay!, image.base, disk);
    onStep('checking the node');
    const has = await ctx.nodes.run(node, ['image', 'info', p.spec.image, '--json'], { timeoutMs: 60_000 });
    if (has.code === 3) {
      onStep(`pushing image ${p.spec.image}`);
      const pushed = await ctx.nodes.pushImage(node.name, image.dir, p.spec.image);
      if (pushed.code !== 0) throw new RuntimeError('ESTATE', `node ${node.name}: image push of ${p.spec.image} failed: ${pushed.stderr.trim().slice(0, 400)}`);
    } else if (has.code !== 0) {
      throw new RuntimeError('ESTATE', `node ${node.name}: image info ${p.spec.image} failed: ${has.stderr.trim().slice(0, 400)}`);
    } else if ((JSON.parse(has.stdout) as { sha256?: string }).sha256 !== image.sha256) {
      throw stateError(`node ${node.name} has another image ${p.spec.image} (another build): the project's disk stands on this host's`, `remove it there, or push this one under another name`);
    }
    const record: MoveRecord = {
      format: MOVE_FORMAT,
      name,
      createdAt: p.createdAt,
      spec: { cpus: p.spec.cpus, memoryBytes: p.spec.memoryBytes, diskBytes: p.spec.diskBytes, image: p.spec.image, ports: p.spec.ports, sshKeys: p.spec.sshKeys, ...(p.spec.restart ? { restart: p.spec.restart } : {}) },
      imageSha256: image.sha256,
      imageDir: dirname(image.base),
      apps: view.apps.map(({ op: _op, ...a }) => a),
      disk: { sha256: await sha256File(disk), bytes: (await stat(disk)).size },
      ...(rec.saved ? { saved: { sha256: await sha256File(rec.saved.file), bytes: rec.saved.bytes, argvShape: rec.saved.argvShape } } : {}),
    };
    await writeFile(join(work, FILE_RECORD), JSON.stringify(record));
    // The state file is root's in the VM's directory, on the same file system: linked beside the disk, not copied.
    if (rec.saved) await link(rec.saved.file, join(work, FILE_STATE));
    onStep(`sending ${Math.round((record.disk.bytes + (record.saved?.bytes ?? 0)) / 1048576)} MiB to ${node.name}`);
    const tar = await import('tar');
    const input = tar.c({ cwd: work, portable: true }, [FILE_RECORD, FILE_DISK, ...(rec.saved ? [FILE_STATE] : [])]) as unknown as Readable;
    let r;
    try {
      r = await ctx.nodes.run(node, ['project', 'receive', name, ...(wasReady ? ['--start'] : []), '--json'], { input, timeoutMs: 3_600_000 });
    } catch (err) {
      // ssh itself failed: whether the node took it is asked, not guessed.
      const there = await ctx.nodes.run(node, ['project', 'info', name, '--json'], { timeoutMs: 60_000 }).catch(() => undefined);
      const held = there?.code === 0 ? receivedAs(there.stdout) : undefined;
      if (held === 'whole') r = { code: 0, stdout: there!.stdout, stderr: '' };
      else if (there?.code === 3) throw err;
      else if (held === 'broken') {
        throw new RuntimeError('ENODE_UNREACHABLE', `project ${name}: the connection to node ${node.name} broke during the move, and the node's receive was cut: it stays on this host`, {
          cause: err,
          hint: `remove the node's broken copy: goshipctl project delete ${name} --node ${node.name}`,
        });
      } else {
        unknown = true;
        throw new RuntimeError('ENODE_UNREACHABLE', `project ${name}: the connection to node ${node.name} broke during the move, and whether the node took it cannot be asked: it stays suspended here`, {
          cause: err,
          hint: `when the node answers: goshipctl node info ${node.name}; if it holds ${name}, delete it here (goshipctl project delete ${name}), otherwise resume it here (goshipctl project resume ${name})`,
        });
      }
    }
    if (r.code !== 0) {
      throw new RuntimeError('ESTATE', `node ${node.name} did not take project ${name}: ${r.stderr.trim().split('\n').slice(0, 2).join(' ')}`, { hint: `it stays on this host${wasReady ? ', running again' : ''}` });
    }
    sent = true;
    const there = JSON.parse(r.stdout) as { state?: string };
    // Placed there first: while it is recorded here too, commands still find this host's copy; a goshipctl killed in between leaves the node's findable.
    await ctx.nodes.place(node.name, name, true);
    onStep('removing it here');
    await ctx.projects.delete(name, { force: true });
    return { name, node: node.name, state: there.state ?? 'unknown', bytes: record.disk.bytes + (record.saved?.bytes ?? 0), ms: Date.now() - began };
  } catch (err) {
    await setOp(false);
    if (!sent && !unknown && wasReady) {
      onStep('resuming it here');
      await ctx.projects.start(name).catch((e: unknown) => trace(`move of ${name}: resuming here after a failure: ${(e as Error).message}`));
    }
    throw err;
  } finally {
    await setOp(false);
    await rm(work, { recursive: true, force: true });
  }
}

/**
 * Pure: what `project info NAME --json` on the node says of a project a cut
 * connection was sending: `whole` (received, no command at work on it),
 * `broken` (its receive was killed: the node's reconcile marked it), or
 * undefined (a receive may still be under way: nobody can tell yet).
 */
export function receivedAs(infoJson: string): 'whole' | 'broken' | undefined {
  let info: { state?: unknown; op?: unknown };
  try {
    info = JSON.parse(infoJson) as { state?: unknown; op?: unknown };
  } catch {
    return undefined;
  }
  if (info.state === 'broken') return 'broken';
  return info.op === undefined && ['ready', 'stopped', 'suspended'].includes(String(info.state)) ? 'whole' : undefined;
}

/** Pure: a saved argv shape with the sender's image directory (its kernel, initrd) as the receiver's. */
export function rebaseShape(shape: readonly string[], from: string, to: string): string[] {
  const pairs = [[`${from}/`, `${to}/`], [`${from.replaceAll(',', ',,')}/`, `${to.replaceAll(',', ',,')}/`]] as const;
  return shape.map((w) => pairs.reduce((acc, [a, b]) => (a === b ? acc : acc.replaceAll(a, b)), w));
}

/** Removes what killed moves or receives left in `dir` (a disk's worth each). */
async function sweep(dir: string, kind: 'move' | 'receive'): Promise<void> {
  for (const stale of await staleWorkDirs(dir, kind)) await rm(stale, { recursive: true, force: true });
}

const RECEIVED = new Set([FILE_RECORD, FILE_DISK, FILE_STATE]);

/**
 * The node's side of a move (`project receive NAME`): a tar stream of
 * move.json, the disk and the saved state. Every file is checked against
 * move.json before anything is made; then the project is made again from its
 * spec and creation time, its fresh disk replaced by the one received (rebased
 * onto this host's copy of the image, the same content by sha256), its saved
 * state recorded, and (`start`) it is resumed. A failure at any step removes
 * what was made: the sender keeps the project.
 */
export async function receiveProject(ctx: MoveContext, name: string, stream: NodeJS.ReadableStream, o: { start: boolean }): Promise<ProjectView> {
  const issue = NAME_PATTERN.test(name) ? undefined : `expected ${NAME_RULE}, got ${JSON.stringify(name)}`;
  if (issue) throw new RuntimeError('EINVALID', `project receive: ${issue}`);
  await mkdir(ctx.layout.vmsDir, { recursive: true, mode: 0o700 });
  await sweep(ctx.layout.vmsDir, 'receive');
  const work = join(ctx.layout.vmsDir, workDirName('receive'));
  await mkdir(work, { mode: 0o700 });
  let created = false;
  try {
    const refused = await extractOnly(stream, work, RECEIVED);
    if (refused.length > 0) throw new RuntimeError('EINVALID', `project receive ${name}: the stream holds files a move has not: ${refused.slice(0, 5).join(', ')}`);
    const parsed = v.safeParse(MoveRecordSchema, JSON.parse(await readFile(join(work, FILE_RECORD), 'utf8').catch(() => 'null')));
    if (!parsed.success) throw new RuntimeError('EINVALID', `project receive ${name}: move.json is missing or not a move of this GoShip (format ${MOVE_FORMAT})`);
    const r = parsed.output;
    if (r.name !== name || r.apps.some((a) => a.project !== name)) throw new RuntimeError('EINVALID', `project receive ${name}: the stream is another project's (${r.name})`);
    const check = async (file: string, want: { sha256: string; bytes: number }): Promise<void> => {
      const got = await stat(file).catch(() => undefined);
      const sum = got ? await sha256File(file) : undefined;
      if (!got || got.size !== want.bytes || sum !== want.sha256) {
        throw new RuntimeError('EINVALID', `project receive ${name}: ${file.split('/').pop()} is ${got ? `${got.size} bytes, sha256 ${sum!.slice(0, 12)}…` : 'missing'}, not the ${want.bytes} bytes, sha256 ${want.sha256.slice(0, 12)}… that were sent`, { hint: 'the transfer was cut or changed on the way: move it again' });
      }
    };
    await check(join(work, FILE_DISK), r.disk);
    if (r.saved) await check(join(work, FILE_STATE), r.saved);
    const image = await ctx.images.info(r.spec.image);
    if (image.sha256 !== r.imageSha256) throw stateError(`image ${r.spec.image} here is another build than the one project ${name} stands on`, 'push the sender\'s image under another name');
    await ctx.projects.create({
      name,
      cpus: r.spec.cpus,
      memory: r.spec.memoryBytes,
      disk: r.spec.diskBytes,
      image: r.spec.image,
      sshKeys: r.spec.sshKeys,
      ports: r.spec.ports,
      ...(r.spec.restart ? { restart: r.spec.restart } : {}),
      noStart: true,
      cold: true,
      createdAt: r.createdAt,
      holdOp: true,
    });
    created = true;
    const vm = await ctx.vms.get(name);
    const disk = join(work, FILE_DISK);
    await renameBacking(disk, vm.base!.path);
    await rename(disk, vm.paths.overlay!);
    if (r.saved) {
      const file = ctx.layout.vmFile(vm.id, 'savedState');
      await rename(join(work, FILE_STATE), file);
      await chmod(file, 0o600);
      await ctx.store.update((draft) => {
        const rec = requireRecord(draft, 'vm', vm.id);
        rec.saved = { file, bytes: r.saved!.bytes, at: ctx.now(), argvShape: rebaseShape(r.saved!.argvShape, r.imageDir, dirname(image.base)) };
        rec.state = 'suspended';
        const p = findRecord(draft, 'project', name);
        if (p) p.state = 'suspended';
      });
    }
    await ctx.store.update((draft) => {
      for (const a of r.apps) draft.apps[appKey(name, a.name)] = a as App;
      setProjectForwards(draft, name, vm.id);
      // Whole from here: the create's op, held until now, goes.
      const p = findRecord(draft, 'project', name);
      if (p?.op?.kind === 'create' && p.op.pid === process.pid) delete p.op;
    });
    if (o.start) await ctx.projects.start(name);
    return await ctx.projects.info(name);
  } catch (err) {
    if (created) await ctx.projects.delete(name, { force: true }).catch((e: unknown) => trace(`receive of ${name}: removing it after a failure: ${(e as Error).message}`));
    throw err;
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}
