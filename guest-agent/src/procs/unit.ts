/**
 * Process apps, the pure part: an app's spec → its systemd unit text, its
 * user's name, its directories; `systemctl show` and `journalctl -o json`
 * output → what the host sees. No I/O here (guest-agent/src/procs.ts does it).
 *
 * Supervision is the guest's systemd, not a hand-written supervisor:
 * Restart= from the restart policy, RestartSec= and start limits against
 * tight crash loops, MemoryMax=/CPUQuota= from --memory/--cpus.
 */
import type { ProcInfo, ProcSpec } from '../../../src/protocol/procs.ts';

/** Where process apps live in the guest: APPS_ROOT/APP/{GENERATION/PROGRAM, data/, app.json}. */
export const APPS_ROOT = '/var/lib/goship/apps';
/** Where the agent writes units (the administrator's directory: above the packages'). */
export const UNIT_DIR = '/etc/systemd/system';
/** systemd restarts a crashed program after this delay… */
export const RESTART_SEC = 1;
/** …and gives up (the unit ends `failed`, start-limit-hit) after this many starts within the interval. */
export const START_LIMIT_BURST = 5;
export const START_LIMIT_INTERVAL_SEC = 60;

export const unitName = (app: string): string => `goship-app-${app}.service`;
export const appDir = (app: string): string => `${APPS_ROOT}/${app}`;
export const generationDir = (app: string, generation: number): string => `${appDir(app)}/${generation}`;
export const dataDir = (app: string): string => `${appDir(app)}/data`;
export const metaFile = (app: string): string => `${appDir(app)}/app.json`;
/** The app's environment (root, 0600): systemd reads it as root before it starts the program as the app's user; no other guest user can. */
export const envFile = (app: string, generation: number): string => `${generationDir(app, generation)}/app.env`;

/** The app's name back from its unit's file name, or undefined. */
export function appOfUnit(file: string): string | undefined {
  return /^goship-app-([a-z0-9][a-z0-9-]{0,62})\.service$/.exec(file)?.[1];
}

/**
 * The user an app runs as by default: one of its own. Linux user names are
 * at most 32 bytes: a long app name is cut and keeps a hash of the whole.
 */
export function ownUser(app: string, hash: (text: string) => string): string {
  const name = `goship-${app}`;
  return name.length <= 32 ? name : `goship-${app.slice(0, 16)}-${hash(app).slice(0, 8)}`;
}

/** What the agent records beside the unit (APPS_ROOT/APP/app.json, root's): exec and list read it. */
export interface ProcMeta {
  app: string;
  generation: number;
  argv: string[];
  env: string[];
  user: string;
  /** Whether the agent created `user` for this app (remove deletes it then). */
  ownUser: boolean;
  workdir: string;
  /** When the app was first deployed (epoch seconds): its logs start there, not with an earlier app of the same name. */
  createdAt?: number;
}

/** One word of a unit setting, double-quoted with C escapes; `%` (specifiers) doubled; `$` doubled where variables expand. */
export function unitQuote(word: string, expandsVariables: boolean): string {
  let out = '';
  for (const ch of word) {
    const code = ch.codePointAt(0)!;
    if (ch === '\\') out += '\\\\';
    else if (ch === '"') out += '\\"';
    else if (ch === '\n') out += '\\n';
    else if (ch === '\t') out += '\\t';
    else if (code < 0x20 || code === 0x7f) out += `\\x${code.toString(16).padStart(2, '0')}`;
    else if (ch === '%') out += '%%';
    else if (ch === '$' && expandsVariables) out += '$$';
    else out += ch;
  }
  return `"${out}"`;
}

/**
 * A path for a setting that takes it as it is (WorkingDirectory=): systemd
 * does not unquote it, only expands specifiers, so `%` is doubled and nothing
 * else is touched. A control character cannot be written at all: refused.
 */
export function unitPathValue(path: string): string {
  if (!path.startsWith('/') || /[\x00-\x1f\x7f]/.test(path)) throw new Error(`expected an absolute path without control characters, got ${JSON.stringify(path)}`);
  return path.replaceAll('%', '%%');
}

/** The `[Unit]` start limit and `[Service]` Restart= of a policy. */
export function restartSettings(r: ProcSpec['restart']): { unit: string[]; service: string[] } {
  if (r.name === 'no') return { unit: [], service: ['Restart=no'] };
  if (r.name === 'on-failure' && r.maxRetries !== undefined) {
    // At most N restarts, ever (until a start by hand clears the count): N + 1 starts.
    return { unit: ['StartLimitIntervalSec=infinity', `StartLimitBurst=${r.maxRetries + 1}`], service: ['Restart=on-failure', `RestartSec=${RESTART_SEC}`] };
  }
  return {
    unit: [`StartLimitIntervalSec=${START_LIMIT_INTERVAL_SEC}`, `StartLimitBurst=${START_LIMIT_BURST}`],
    service: [`Restart=${r.name}`, `RestartSec=${RESTART_SEC}`],
  };
}

/** The unit of a process app. `program` is argv[0] resolved to an absolute path in the guest. */
export function renderUnit(spec: ProcSpec, program: string, meta: Pick<ProcMeta, 'user' | 'ownUser' | 'workdir'>): string {
  const restart = restartSettings(spec.restart);
  const exec = [program, ...spec.argv.slice(1)].map((w) => unitQuote(w, true)).join(' ');
  const lines = [
    `# Written by goship-agent for the app ${spec.app}, generation ${spec.generation}.`,
    '# goshipctl app deploy replaces it and app remove deletes it: do not edit.',
    '[Unit]',
    `Description=GoShip app ${spec.app}`,
    'Wants=network-online.target',
    'After=network-online.target',
    ...restart.unit,
    '',
    '[Service]',
    // exec: the start fails when execve does (a missing or unrunnable program), not later.
    'Type=exec',
    `ExecStart=${exec}`,
    `User=${meta.user}`,
    `WorkingDirectory=${unitPathValue(meta.workdir)}`,
    // The values live in a root-only file: the unit itself is world-readable (0644), as systemd wants it.
    ...(spec.env.length > 0 ? [`EnvironmentFile=${envFile(spec.app, spec.generation)}`] : []),
    ...restart.service,
    'TimeoutStopSec=10',
    `SyslogIdentifier=${spec.app}`,
    ...(meta.ownUser ? ['NoNewPrivileges=yes', 'PrivateTmp=yes'] : []),
    ...(spec.memoryBytes !== undefined ? [`MemoryMax=${spec.memoryBytes}`] : []),
    ...(spec.cpus !== undefined ? [`CPUQuota=${Math.max(1, Math.round(spec.cpus * 100))}%`] : []),
    '',
    '[Install]',
    'WantedBy=multi-user.target',
    '',
  ];
  return lines.join('\n');
}

/**
 * The text of an app's EnvironmentFile: one `KEY="VALUE"` line per variable,
 * the value double-quoted with `\`, `"`, `` ` `` and `$` escaped (systemd's
 * rules for a double-quoted value: nothing expands, a newline stays).
 */
export function renderEnvFile(env: readonly string[]): string {
  return env
    .map((kv) => {
      const i = kv.indexOf('=');
      return `${kv.slice(0, i)}="${kv.slice(i + 1).replace(/[\\"`$]/g, (c) => `\\${c}`)}"\n`;
    })
    .join('');
}

/** The unit's cgroup (cgroup v2, the system slice: the units the agent writes set no Slice=). */
export function unitCgroupProcs(app: string): string {
  return `/sys/fs/cgroup/system.slice/${unitName(app)}/cgroup.procs`;
}

/** `/proc/PID/stat` → its parent and its start (clock ticks after boot). The name in parentheses may hold spaces or `)`: fields count from the last `)`. */
export function parseProcStat(text: string): { ppid: number; startTicks: number } | undefined {
  const end = text.lastIndexOf(')');
  if (end < 0) return undefined;
  // After "pid (comm) ": state(3) ppid(4) … starttime(22).
  const f = text.slice(end + 2).trim().split(/\s+/);
  const ppid = Number(f[1]);
  const startTicks = Number(f[19]);
  return Number.isInteger(ppid) && Number.isInteger(startTicks) && f.length >= 20 ? { ppid, startTicks } : undefined;
}

/** `btime` of `/proc/stat`: the boot's Unix time in seconds. */
export function parseBtime(text: string): number | undefined {
  const m = /^btime (\d+)$/m.exec(text);
  return m ? Number(m[1]) : undefined;
}

/**
 * The main process among a unit's processes: systemd (PID 1) is the parent
 * of the one it started; its children are not. Undefined unless exactly one
 * (a program that forked into the background is not judged here).
 */
export function mainOf(procs: ReadonlyArray<{ pid: number; ppid: number }>): number | undefined {
  const top = procs.filter((p) => p.ppid === 1);
  return top.length === 1 ? top[0]!.pid : undefined;
}

/** Linux's USER_HZ on x86 and arm64: the unit of /proc/PID/stat's times. */
export const USER_HZ = 100;

/** The properties proc.list asks systemctl show for. */
export const SHOW_PROPERTIES = ['Id', 'ActiveState', 'SubState', 'MainPID', 'ExecMainStartTimestamp', 'ExecMainCode', 'ExecMainStatus', 'NRestarts', 'Result', 'LoadState'] as const;

/** `systemctl show -p A,B U1 U2` output: one block of KEY=VALUE lines per unit, blank lines between. */
export function parseShow(text: string): Array<Record<string, string>> {
  const blocks: Array<Record<string, string>> = [];
  let cur: Record<string, string> | undefined;
  for (const line of text.split('\n')) {
    if (line.trim() === '') {
      if (cur) blocks.push(cur);
      cur = undefined;
      continue;
    }
    const eq = line.indexOf('=');
    if (eq <= 0) continue;
    (cur ??= {})[line.slice(0, eq)] = line.slice(eq + 1);
  }
  if (cur) blocks.push(cur);
  return blocks;
}

/** `@1764630000` (systemctl --timestamp=unix) → ISO, or null. */
export function unixTimestamp(text: string | undefined): string | null {
  const m = /^@(\d+)$/.exec(text ?? '');
  return m ? new Date(Number(m[1]) * 1000).toISOString() : null;
}

/**
 * What the host sees of a unit: running (PID, start), restarting (between a
 * crash and its restart), failed (the policy gave up, or no restart), stopped.
 * `signalName` maps a signal number to its name (os.constants.signals in the agent).
 */
export function procState(props: Record<string, string>, meta: ProcMeta, signalName: (n: number) => string | null): ProcInfo {
  const active = props.ActiveState ?? 'unknown';
  const sub = props.SubState ?? 'unknown';
  const pid = Number(props.MainPID ?? 0);
  const code = Number(props.ExecMainCode ?? 0);
  const status = Number(props.ExecMainStatus ?? 0);
  const state =
    active === 'active' && sub === 'running'
      ? 'running'
      : active === 'activating' && sub === 'auto-restart'
        ? 'restarting'
        : active === 'failed'
          ? 'failed'
          : active === 'inactive'
            ? 'stopped'
            : active === 'activating'
              ? 'starting'
              : active === 'deactivating'
                ? 'stopping'
                : active;
  // ExecMainCode: 1 exited (status is the code), 2 killed, 3 dumped (status is the signal); 0 while it runs.
  const ended = state !== 'running' && code !== 0;
  return {
    app: meta.app,
    generation: meta.generation,
    unit: unitName(meta.app),
    state,
    activeState: active,
    subState: sub,
    pid: state === 'running' && pid > 0 ? pid : null,
    startedAt: state === 'running' ? unixTimestamp(props.ExecMainStartTimestamp) : null,
    restarts: Number(props.NRestarts ?? 0) || 0,
    exitCode: ended && code === 1 ? status : null,
    signal: ended && (code === 2 || code === 3) ? signalName(status) : null,
    result: props.Result ?? '',
    user: meta.user,
    argv: meta.argv,
  };
}

/** One `journalctl -o json` entry → its line of output (with the time first when asked), or undefined. */
export function journalLine(entry: Record<string, unknown>, timestamps: boolean): string | undefined {
  const m = entry.MESSAGE;
  const text = typeof m === 'string' ? m : Array.isArray(m) && m.every((b) => typeof b === 'number') ? Buffer.from(m as number[]).toString('utf8') : undefined;
  if (text === undefined) return undefined;
  if (!timestamps) return text;
  const us = Number(entry.__REALTIME_TIMESTAMP);
  if (!Number.isFinite(us)) return text;
  const iso = new Date(Math.floor(us / 1000)).toISOString();
  return `${iso.slice(0, -1)}${String(Math.floor(us % 1000)).padStart(3, '0')}Z ${text}`;
}

/** The journalctl argv of proc.logs: the program's own output (not systemd's lines about it). */
export function journalArgv(app: string, o: { follow: boolean; tail?: number; since?: number }): string[] {
  return [
    'journalctl',
    `_SYSTEMD_UNIT=${unitName(app)}`,
    '--output=json',
    '--no-pager',
    '--quiet',
    ...(o.follow ? ['--follow'] : []),
    ...(o.tail !== undefined ? [`--lines=${o.tail}`] : []),
    ...(o.since !== undefined ? [`--since=@${Math.floor(o.since)}`] : []),
  ];
}

/** A `getent passwd NAME` line → uid, gid, home; or undefined. */
export function parsePasswd(line: string): { name: string; uid: number; gid: number; home: string } | undefined {
  const f = line.trim().split(':');
  if (f.length < 7 || !/^\d+$/.test(f[2]!) || !/^\d+$/.test(f[3]!)) return undefined;
  return { name: f[0]!, uid: Number(f[2]), gid: Number(f[3]), home: f[5]! };
}

/** The directories systemd (and a login shell) looks in for a program named without a path. */
export const GUEST_PATH = ['/usr/local/sbin', '/usr/local/bin', '/usr/sbin', '/usr/bin', '/sbin', '/bin'];
