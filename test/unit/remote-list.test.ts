/** A node's `project list` read from its state and /proc files: which files, how grep's output parses, when the node's goshipctl must answer instead. */
import { describe, expect, it } from 'vitest';
import { listProbeFiles, parseGrepRecords, parseProbeGuess, remoteListViews, sameFiles } from '../../src/runtime/remote-list.ts';
import { emptyState, type Project, type State, type Vm } from '../../src/store/index.ts';
import { T0, projectRecord, vmRecord } from '../helpers/records.ts';

const HOME = '/home/n/.local/share/goship';

const vm = (id: string, extra: Partial<Vm> = {}): Vm => vmRecord(id, { state: 'stopped', config: {}, ...extra });
const project = (name: string, extra: Partial<Project> = {}): Project => projectRecord(name, { vmId: name, state: 'ready', ...extra });

/** A node with `web` running (QEMU 100, monitor 200) and `db` stopped. */
function node(webVm: Partial<Vm> = {}, webProject: Partial<Project> = {}): State {
  const s = emptyState();
  s.projects.web = project('web', webProject);
  s.projects.db = project('db', { state: 'stopped' });
  s.vms.web = vm('web', { state: 'ready', pid: 100, monitor: { pid: 200, startedAt: T0 }, ...webVm });
  s.vms.db = vm('db');
  return s;
}

const qemuCmdline = (id: string) => ['qemu-system-x86_64', '-name', `guest=${id},process=goship-${id},debug-threads=on`, '-S'].join('\0');
const monitorCmdline = (id: string, home = HOME) => ['node', '--max-semi-space-size=1', '/x/dist/goship-monitor.cjs', '--vm', id, '--home', home, '--run', '/r'].join('\0');
/** grep -asHz '' output for files with these contents (one record per NUL-separated part). */
const grepOut = (files: Record<string, string>) =>
  Object.entries(files)
    .flatMap(([f, text]) => text.split('\0').filter((r) => r !== '').map((r) => `${f}:${r}\0`))
    .join('');
const alive = (s: State) => parseGrepRecords(grepOut({ '/proc/100/cmdline': qemuCmdline('web'), '/proc/200/cmdline': monitorCmdline('web') }), listProbeFiles(s));

describe('listProbeFiles', () => {
  it("every VM's QEMU and monitor command line and pidfile, each operation's goshipctl", () => {
    const s = node({ op: { kind: 'stop', pid: 300, startedAt: T0 } }, { op: { kind: 'stop', pid: 301, startedAt: T0 } });
    expect(listProbeFiles(s)).toEqual(['/proc/100/cmdline', '/proc/200/cmdline', '/proc/300/stat', '/proc/301/stat', '/r/db/qemu.pid', '/r/web/qemu.pid']);
  });
});

describe('parseGrepRecords', () => {
  it("joins a file's records again, knows a name that is another's prefix, drops what it did not ask for", () => {
    const files = ['/proc/1/cmdline', '/proc/12/cmdline', '/r/a:b/qemu.pid'];
    const out = grepOut({ '/proc/1/cmdline': 'a\0b:c\0', '/proc/12/cmdline': 'x', '/r/a:b/qemu.pid': '77\n', '/etc/other': 'no' });
    expect(parseGrepRecords(out, files)).toEqual(
      new Map([
        ['/proc/1/cmdline', 'a\0b:c'],
        ['/proc/12/cmdline', 'x'],
        ['/r/a:b/qemu.pid', '77\n'],
      ]),
    );
    expect(parseGrepRecords('', files)).toEqual(new Map());
  });
});

describe('remoteListViews', () => {
  it('nothing to reconcile: the asked projects, by name, with their VMs', () => {
    const s = node();
    expect(remoteListViews(s, HOME, ['web', 'db', 'gone'], alive(s))).toEqual({
      views: [
        { project: s.projects.db, vm: s.vms.db },
        { project: s.projects.web, vm: s.vms.web },
      ],
    });
    expect(remoteListViews(s, HOME, ['web'], alive(s))).toEqual({ views: [{ project: s.projects.web, vm: s.vms.web }] });
  });

  it('a QEMU without its monitor (killed, or a PID reused by something else): the node adopts it', () => {
    const s = node();
    const files = listProbeFiles(s);
    expect(remoteListViews(s, HOME, ['web'], parseGrepRecords(grepOut({ '/proc/100/cmdline': qemuCmdline('web') }), files))).toEqual({ repair: 'vm web' });
    const reused = grepOut({ '/proc/100/cmdline': qemuCmdline('web'), '/proc/200/cmdline': 'bash\0-l' });
    expect(remoteListViews(s, HOME, ['web'], parseGrepRecords(reused, files))).toEqual({ repair: 'vm web' });
    // Another GoShip's monitor of a VM with the same id is not this one's.
    const other = grepOut({ '/proc/100/cmdline': qemuCmdline('web'), '/proc/200/cmdline': monitorCmdline('web', '/var/lib/goship') });
    expect(remoteListViews(s, HOME, ['web'], parseGrepRecords(other, files))).toEqual({ repair: 'vm web' });
  });

  it('a live VM whose QEMU and monitor are gone ended unseen: the node records it', () => {
    const s = node();
    expect(remoteListViews(s, HOME, ['web'], new Map())).toEqual({ repair: 'vm web' });
  });

  it('QEMU gone, its monitor alive (recording the end, or waiting to restart): nothing to repair', () => {
    const s = node();
    expect(remoteListViews(s, HOME, ['web'], parseGrepRecords(grepOut({ '/proc/200/cmdline': monitorCmdline('web') }), listProbeFiles(s)))).toEqual({
      views: [{ project: s.projects.web, vm: s.vms.web }],
    });
  });

  it("a pidfile naming a PID the record does not: only the node can tell whose it is", () => {
    const s = node();
    const out = grepOut({ '/proc/100/cmdline': qemuCmdline('web'), '/proc/200/cmdline': monitorCmdline('web'), '/r/db/qemu.pid': '555\n' });
    expect(remoteListViews(s, HOME, ['web'], parseGrepRecords(out, listProbeFiles(s)))).toEqual({ repair: 'vm db' });
  });

  it("an operation whose goshipctl is gone is cleared by the node; one still running is left to it", () => {
    const op = { kind: 'stop' as const, pid: 300, startedAt: T0 };
    const s = node({ op }, {});
    expect(remoteListViews(s, HOME, ['web'], alive(s))).toEqual({ repair: 'vm web' });
    const running = parseGrepRecords(grepOut({ '/proc/100/cmdline': qemuCmdline('web'), '/proc/200/cmdline': monitorCmdline('web'), '/proc/300/stat': '300 (node) S 1' }), listProbeFiles(s));
    expect(remoteListViews(s, HOME, ['web'], running)).toEqual({ views: [{ project: s.projects.web, vm: s.vms.web }] });
    const p = node({}, { op });
    expect(remoteListViews(p, HOME, ['web'], alive(p))).toEqual({ repair: 'project web' });
  });
});

describe('parseProbeGuess', () => {
  it('takes a JSON list of absolute paths', () => {
    expect(parseProbeGuess('["/proc/100/cmdline","/r/web/qemu.pid"]')).toEqual(['/proc/100/cmdline', '/r/web/qemu.pid']);
    expect(parseProbeGuess('[]')).toEqual([]);
  });

  it('takes nothing from a cache that is not that', () => {
    for (const text of ['', 'not json', '{"a":1}', '["relative/path"]', '["/ok", 3]', '["/a\\nb"]', '["/a\\u0000b"]', JSON.stringify(Array(4097).fill('/x'))]) expect(parseProbeGuess(text)).toEqual([]);
  });
});

describe('sameFiles', () => {
  it('compares as sets', () => {
    expect(sameFiles(['/b', '/a'], ['/a', '/b'])).toBe(true);
    expect(sameFiles([], [])).toBe(true);
    expect(sameFiles(['/a'], ['/a', '/b'])).toBe(false);
    expect(sameFiles(['/a', '/b'], ['/a', '/c'])).toBe(false);
    expect(sameFiles(['/a', '/a'], ['/a', '/b'])).toBe(false);
  });
});

describe('one read when the guess was right', () => {
  it('the state and the /proc files parse out of the same grep', () => {
    const s = node();
    const state = JSON.stringify({ version: 1, state: s }, null, 2);
    const files = ['/h/state.json', ...listProbeFiles(s)];
    const m = parseGrepRecords(grepOut({ '/h/state.json': state, '/proc/100/cmdline': qemuCmdline('web'), '/proc/200/cmdline': monitorCmdline('web') }), files);
    expect(m.get('/h/state.json')).toBe(state);
    expect(remoteListViews(s, HOME, ['web', 'db'], m)).toEqual({ views: [{ project: s.projects.db, vm: s.vms.db }, { project: s.projects.web, vm: s.vms.web }] });
  });
});
