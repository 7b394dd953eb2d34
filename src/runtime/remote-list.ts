/**
 * `project list` of a node without starting its goshipctl: its state file and
 * a few /proc files, read over ssh, and the node's own reconcile rules applied
 * here. Pure: the state and the files' contents come in, the views (or the
 * reason the node's goshipctl must answer instead) come out; src/runtime/nodes.ts
 * runs the reads: one `grep` of the state file and the /proc files of the last
 * listing, and a second one only when the state names other files.
 *
 * Only a node with nothing to reconcile is answered this way: any VM whose
 * facts call for an action (a QEMU without its monitor, a live VM whose
 * processes are gone, the operation of a goshipctl that died, a pidfile that
 * disagrees with the record) sends the listing to the node's goshipctl, which
 * repairs its records as it lists them. So the rows are the ones the node
 * would print, and the fast path never leaves a repair undone.
 */
import { isMonitorCmdline } from '../monitor/index.ts';
import { cmdlineHasMarker, processMarker } from '../qemu/index.ts';
import type { PendingOp, State, Vm } from '../store/index.ts';
import { projectViews, type ProjectView } from './projects.ts';
import { reconcileDecision } from './reconcile.ts';

const cmdlineOf = (pid: number): string => `/proc/${pid}/cmdline`;
/** Never empty while the process exists (a zombie's cmdline is). */
const statOf = (pid: number): string => `/proc/${pid}/stat`;

/** The files whose contents decide whether the node's records need a repair: QEMU's and the monitor's command lines, QEMU's pidfile, each operation's goshipctl. */
export function listProbeFiles(s: State): string[] {
  const files = new Set<string>();
  for (const vm of Object.values(s.vms)) {
    if (vm.pid !== undefined) files.add(cmdlineOf(vm.pid));
    if (vm.monitor?.pid !== undefined) files.add(cmdlineOf(vm.monitor.pid));
    if (vm.op) files.add(statOf(vm.op.pid));
    files.add(vm.paths.pidfile);
  }
  for (const p of Object.values(s.projects)) if (p.op) files.add(statOf(p.op.pid));
  return [...files].sort();
}

/**
 * The probe files remembered from a node's last listing (a cache file's
 * text, JSON): absolute paths without NUL or newline, or none when the text
 * is not that. A guess only: a wrong one costs a second read, never a row.
 */
export function parseProbeGuess(text: string): string[] {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    return [];
  }
  if (!Array.isArray(parsed) || parsed.length > 4096) return [];
  return parsed.every((f): f is string => typeof f === 'string' && /^\/[^\0\n]{0,4095}$/.test(f)) ? parsed : [];
}

/** Whether a guess of the probe files was right: the same files, in any order. */
export function sameFiles(a: readonly string[], b: readonly string[]): boolean {
  const set = new Set(a);
  return set.size === new Set(b).size && b.every((f) => set.has(f));
}

/**
 * `grep -asHz '' -- FILE…` output → each file's contents (its NUL-separated
 * records joined by NUL again). A file that is missing, unreadable or empty
 * is absent. `files` are the names asked for: a record belongs to the longest
 * of them that it starts with, followed by ':'.
 */
export function parseGrepRecords(out: string, files: readonly string[]): Map<string, string> {
  const byLength = [...files].sort((a, b) => b.length - a.length);
  const parts = new Map<string, string[]>();
  const records = out.split('\0');
  if (records.at(-1) === '') records.pop();
  for (const r of records) {
    const f = byLength.find((name) => r.startsWith(`${name}:`));
    if (f === undefined) continue;
    const list = parts.get(f) ?? [];
    list.push(r.slice(f.length + 1));
    parts.set(f, list);
  }
  return new Map([...parts].map(([f, list]) => [f, list.join('\0')]));
}

/** Whether the node's reconcile would act on this VM, from the files read (or cannot be known here: the pidfile names another PID). */
function needsRepair(vm: Vm, home: string, files: ReadonlyMap<string, string>): boolean {
  const marker = processMarker(vm.id);
  let qemuPid: number | undefined;
  if (vm.pid !== undefined && cmdlineHasMarker(files.get(cmdlineOf(vm.pid)) ?? '', marker)) qemuPid = vm.pid;
  else {
    const n = Number((files.get(vm.paths.pidfile) ?? '').trim());
    // A QEMU the record does not name may run: whether it is ours, only the node can tell.
    if (Number.isInteger(n) && n > 0 && n !== vm.pid) return true;
  }
  const monitorPid = vm.monitor?.pid;
  const monitorAlive = monitorPid !== undefined && isMonitorCmdline(files.get(cmdlineOf(monitorPid)) ?? '', vm.id, home);
  const d = reconcileDecision(vm, { qemuPid, monitorAlive, opAbandoned: abandoned(vm.op, files) });
  return d.action !== 'none' && d.action !== 'busy';
}

const abandoned = (op: PendingOp | undefined, files: ReadonlyMap<string, string>): boolean => op !== undefined && !files.has(statOf(op.pid));

/**
 * The views of `names` on the node (those it has, by name), or why the
 * node's goshipctl must list them itself: a record it would repair, a
 * project whose operation's goshipctl is gone.
 */
export function remoteListViews(s: State, home: string, names: readonly string[], files: ReadonlyMap<string, string>): { views: ProjectView[] } | { repair: string } {
  for (const vm of Object.values(s.vms)) if (needsRepair(vm, home, files)) return { repair: `vm ${vm.id}` };
  for (const p of Object.values(s.projects)) if (abandoned(p.op, files)) return { repair: `project ${p.name}` };
  return { views: projectViews(s).filter((v) => names.includes(v.project.name)) };
}
