/**
 * The proc.* methods: process apps as systemd units written by the agent
 * (the pure part, unit text and state, is procs/unit.ts). systemd owns the
 * programs: an agent restart touches none of them, a reboot starts them
 * again (the units are enabled), and the agent only reads their state.
 */
import { createHash, randomBytes } from 'node:crypto';
import { access, chmod, chown, constants, mkdir, readFile, readdir, rename, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { connect } from 'node:net';
import { spawn } from 'node:child_process';
import { dirname } from 'node:path';
import { constants as os } from 'node:os';
import { PassThrough } from 'node:stream';
import {
  ProcAppParamsSchema,
  ProcControlParamsSchema,
  ProcExecParamsSchema,
  ProcLogsParamsSchema,
  ProcSpecSchema,
  ProcStageParamsSchema,
  type ProcApplyResult,
  type ProcInfo,
  type ProcSpec,
} from '../../src/protocol/index.ts';
import { JsonLines } from './docker/frames.ts';
import { runCommand } from './exec.ts';
import {
  APPS_ROOT,
  GUEST_PATH,
  SHOW_PROPERTIES,
  UNIT_DIR,
  appDir,
  appOfUnit,
  dataDir,
  envFile,
  generationDir,
  journalArgv,
  journalLine,
  mainOf,
  metaFile,
  ownUser,
  parseBtime,
  parseProcStat,
  parsePasswd,
  parseShow,
  procState,
  renderEnvFile,
  renderUnit,
  unitCgroupProcs,
  unitName,
  USER_HZ,
  type ProcMeta,
} from './procs/unit.ts';
import { run, systemctl } from './run.ts';
import { RemoteError, parseParams, type Call, type Handler } from './session.ts';

const sha256 = (text: string): string => createHash('sha256').update(text).digest('hex');
const signalName = (n: number): string | null => Object.entries(os.signals).find(([, num]) => num === n)?.[0] ?? null;
const unitPath = (app: string): string => `${UNIT_DIR}/${unitName(app)}`;
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Writes a file whole or not at all (a temporary beside it, then rename). */
async function writeAtomic(path: string, text: string, mode: number): Promise<void> {
  const tmp = `${path}.goship-${randomBytes(6).toString('hex')}.tmp`;
  await writeFile(tmp, text, { mode });
  await rename(tmp, path);
}

async function readMeta(app: string): Promise<ProcMeta | undefined> {
  try {
    const m = JSON.parse(await readFile(metaFile(app), 'utf8')) as ProcMeta;
    return m.app === app ? m : undefined;
  } catch {
    return undefined;
  }
}

/** A user by name: /etc/passwd read here (an exec costs a quarter of a second under TCG), else NSS (`getent`). */
async function getent(user: string): Promise<{ name: string; uid: number; gid: number; home: string } | undefined> {
  const local = await readFile('/etc/passwd', 'utf8').then(
    (text) => text.split('\n').find((line) => line.startsWith(`${user}:`)),
    () => undefined,
  );
  if (local !== undefined) return parsePasswd(local);
  const r = await run(['getent', 'passwd', user]);
  return r.code === 0 ? parsePasswd(r.stdout.split('\n')[0] ?? '') : undefined;
}

/** argv[0] as systemd will run it: an absolute path to an executable file. */
async function resolveProgram(program: string): Promise<string> {
  const runnable = async (path: string): Promise<boolean> => {
    try {
      await access(path, constants.X_OK);
      return (await stat(path)).isFile();
    } catch {
      return false;
    }
  };
  if (program.startsWith('/')) {
    if (await runnable(program)) return program;
    throw new RemoteError('EINVALID', `${program} is not an executable file in the guest`);
  }
  if (program.includes('/')) throw new RemoteError('EINVALID', `give the program as an absolute path or a name in the guest's PATH, got ${JSON.stringify(program)}`);
  for (const dir of GUEST_PATH) if (await runnable(`${dir}/${program}`)) return `${dir}/${program}`;
  throw new RemoteError('EINVALID', `no program ${JSON.stringify(program)} in the guest (looked in ${GUEST_PATH.join(':')})`);
}

/**
 * A directory with exactly this mode (mkdir's is cut by the agent's umask).
 * Above an app's files every directory is 0711: its user passes through to
 * them, no one lists the apps; the app's own directory holds app.json (0600).
 */
async function dirWithMode(dir: string, mode: number): Promise<void> {
  await mkdir(dir, { recursive: true });
  await chmod(dir, mode);
}

async function appDirReady(app: string): Promise<void> {
  for (const d of [dirname(APPS_ROOT), APPS_ROOT, appDir(app)]) await dirWithMode(d, 0o711);
}

/** Users of their own being created while an app's program uploads (proc.stage), by app: proc.apply and proc.remove wait for them. */
const usersInFlight = new Map<string, Promise<unknown>>();

async function stageMethod(_call: Call, raw: unknown): Promise<{ dir: string }> {
  const p = parseParams(ProcStageParamsSchema, raw, 'proc.stage');
  if (p.ownUser && !usersInFlight.has(p.app)) {
    // Not awaited: it runs while the host uploads; apply reports a failure (it tries again).
    const made = ownUserOf(p.app).catch(() => undefined);
    usersInFlight.set(p.app, made);
    void made.finally(() => {
      if (usersInFlight.get(p.app) === made) usersInFlight.delete(p.app);
    });
  }
  await appDirReady(p.app);
  const dir = generationDir(p.app, p.generation);
  await rm(dir, { recursive: true, force: true });
  await dirWithMode(dir, 0o755);
  return { dir };
}

/** The app's own user, created when missing. */
async function ownUserOf(app: string): Promise<{ name: string; uid: number; gid: number }> {
  const name = ownUser(app, sha256);
  let u = await getent(name);
  if (!u) {
    const r = await run(['useradd', '--system', '--user-group', '--no-create-home', '--home-dir', dataDir(app), '--shell', '/usr/sbin/nologin', '--comment', `GoShip app ${app}`, name]);
    u = await getent(name);
    if (!u) throw new RemoteError('EINTERNAL', `useradd ${name}: ${r.stderr.trim() || `exit ${r.code}`}`);
  }
  return u;
}

/** The app's user: the one given (it must exist), or one of its own (created here). */
async function appUser(spec: ProcSpec): Promise<{ user: string; own: boolean; uid: number; gid: number }> {
  if (spec.user !== undefined) {
    const u = await getent(spec.user);
    if (!u) throw new RemoteError('EINVALID', `--user: no user ${JSON.stringify(spec.user)} in the guest`);
    return { user: u.name, own: false, uid: u.uid, gid: u.gid };
  }
  await usersInFlight.get(spec.app);
  const u = await ownUserOf(spec.app);
  return { user: u.name, own: true, uid: u.uid, gid: u.gid };
}

async function showAll(apps: string[]): Promise<Map<string, Record<string, string>>> {
  const byUnit = new Map<string, Record<string, string>>();
  if (apps.length === 0) return byUnit;
  const r = await run(['systemctl', 'show', '--timestamp=unix', `--property=${SHOW_PROPERTIES.join(',')}`, ...apps.map(unitName)]);
  if (r.code !== 0) throw new RemoteError('EINTERNAL', `systemctl show: ${r.stderr.trim() || `exit ${r.code}`}`);
  for (const b of parseShow(r.stdout)) if (b.Id) byUnit.set(b.Id, b);
  return byUnit;
}

async function infoOf(app: string): Promise<ProcInfo | undefined> {
  const meta = await readMeta(app);
  if (!meta) return undefined;
  const props = (await showAll([app])).get(unitName(app)) ?? {};
  return procState(props, meta, signalName);
}

/** The last lines the program wrote since `sinceSec` (for a start that failed). */
async function outputSince(app: string, sinceSec: number): Promise<string> {
  const r = await run(['journalctl', `_SYSTEMD_UNIT=${unitName(app)}`, `--since=@${Math.floor(sinceSec)}`, '--lines=10', '--output=cat', '--no-pager', '--quiet']);
  return r.stdout.trim().split('\n').filter(Boolean).slice(-5).join(' | ').slice(0, 800);
}

/** Whether something accepts a TCP connection on 127.0.0.1:port now. */
function accepts(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect({ host: '127.0.0.1', port });
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

/** Waits `settleMs`, or less: until every one of `ports` accepts (a program that listens has started). */
async function settle(settleMs: number, ports: readonly number[]): Promise<void> {
  const end = Date.now() + settleMs;
  if (ports.length === 0) return sleep(settleMs);
  while (Date.now() < end) {
    if ((await Promise.all(ports.map(accepts))).every(Boolean)) return;
    await sleep(Math.min(50, Math.max(0, end - Date.now())));
  }
}

/**
 * The unit's main process as the kernel shows it (its cgroup and /proc), with
 * no exec of systemctl (~0.15 s under TCG): undefined when that cannot say.
 */
async function cgroupMain(app: string): Promise<{ pid: number; startTicks: number } | undefined> {
  const text = await readFile(unitCgroupProcs(app), 'utf8').catch(() => '');
  const procs: Array<{ pid: number; ppid: number; startTicks: number }> = [];
  for (const pid of text.split('\n').filter(Boolean).map(Number)) {
    const st = parseProcStat(await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => ''));
    if (st) procs.push({ pid, ...st });
  }
  const main = mainOf(procs);
  return procs.find((p) => p.pid === main);
}

/**
 * A new unit just started (Type=exec: systemctl returned once the program was
 * exec'd) is running and was never restarted if its main process is the same
 * one before and after the watch: then its state needs no `systemctl show`.
 */
async function runningSince(app: string, before: { pid: number; startTicks: number } | undefined): Promise<ProcInfo | undefined> {
  const after = await cgroupMain(app);
  if (!before || !after || after.pid !== before.pid || after.startTicks !== before.startTicks) return undefined;
  const [btime, meta] = await Promise.all([readFile('/proc/stat', 'utf8').then(parseBtime, () => undefined), readMeta(app)]);
  if (btime === undefined || !meta) return undefined;
  const started = btime + Math.floor(after.startTicks / USER_HZ);
  return procState({ ActiveState: 'active', SubState: 'running', MainPID: String(after.pid), ExecMainStartTimestamp: `@${started}`, NRestarts: '0', Result: 'success' }, meta, signalName);
}

/**
 * (Re)starts the unit and watches it: up after settleMs (or once its ports
 * accept) without a restart, or why not. `installed` is what install() did: a new
 * unit has no failed state to reset, and if systemd cannot find it yet (it
 * had looked the name up before the file existed) it is reloaded once.
 */
async function startAndSettle(app: string, settleMs: number, ports: readonly number[], installed: 'new' | 'loaded' | 'reloaded'): Promise<{ ok: true; info: ProcInfo } | { ok: false; why: string }> {
  const since = Date.now() / 1000 - 1;
  if (installed !== 'new') await systemctl(['reset-failed', unitName(app)]);
  let r = await run(['systemctl', 'restart', unitName(app)]);
  if (r.code !== 0 && installed === 'new') {
    await systemctl(['daemon-reload']);
    r = await run(['systemctl', 'restart', unitName(app)]);
  }
  // A new unit has no restarts of its own yet: its processes say whether it stayed up.
  const first = r.code === 0 && installed === 'new' ? await cgroupMain(app) : undefined;
  if (r.code === 0) await settle(settleMs, ports);
  else await sleep(200);
  const fast = first ? await runningSince(app, first) : undefined;
  if (fast) return { ok: true, info: fast };
  const info = await infoOf(app);
  if (r.code === 0 && info?.state === 'running' && info.restarts === 0) return { ok: true, info };
  const out = await outputSince(app, since);
  // systemd's own refusal (a unit it cannot load, a program it cannot exec) is in systemctl's stderr.
  const refused = r.code !== 0 ? r.stderr.trim().split('\n').slice(-2).join(' ').slice(0, 400) : '';
  const how = refused ? `systemd refused to start it: ${refused}` : !info
    ? 'it has no unit'
    : info.state === 'restarting' || info.restarts > 0
      ? `it keeps restarting (${info.restarts} restart${info.restarts === 1 ? '' : 's'}${info.exitCode !== null ? `, exit code ${info.exitCode}` : info.signal ? `, ${info.signal}` : ''})`
      : `it ${info.state === 'failed' ? 'failed' : `is ${info.state}`}${info.exitCode !== null ? ` with exit code ${info.exitCode}` : info.signal ? ` by ${info.signal}` : ''}${info.result && info.result !== 'success' ? ` (${info.result})` : ''}`;
  return { ok: false, why: `${how}${out ? `; its last output: ${out}` : ''}` };
}

/** The link `systemctl enable` makes for the unit's `WantedBy=multi-user.target`. */
const wantsLink = (app: string): string => `${UNIT_DIR}/multi-user.target.wants/${unitName(app)}`;

/**
 * Writes the unit and its meta, enables it, and has systemd read it. A
 * daemon-reload costs seconds under TCG (every generator runs again), so it
 * is paid only when needed: a new unit is read from disk when it is first
 * started (and if systemd still says no, startAndSettle reloads once and
 * tries again); one systemd may have loaded before says NeedDaemonReload once
 * its file changed. The enable link is made here (`systemctl enable` would
 * reload once more). Says whether systemd was reloaded.
 */
async function install(app: string, unit: string, meta: ProcMeta): Promise<'new' | 'loaded' | 'reloaded'> {
  const existed = await stat(unitPath(app)).then(() => true, () => false);
  await writeAtomic(metaFile(app), `${JSON.stringify(meta, null, 2)}\n`, 0o600);
  await writeAtomic(unitPath(app), unit, 0o644);
  await mkdir(dirname(wantsLink(app)), { recursive: true });
  await rm(wantsLink(app), { force: true });
  await symlink(unitPath(app), wantsLink(app));
  if (!existed) return 'new';
  const r = await run(['systemctl', 'show', '--property=LoadState,NeedDaemonReload', unitName(app)]);
  const props = parseShow(r.stdout)[0] ?? {};
  if (r.code === 0 && props.LoadState === 'loaded' && props.NeedDaemonReload === 'no') return 'loaded';
  await systemctl(['daemon-reload']);
  return 'reloaded';
}

/** Stops and removes the unit, its files and (when the agent made it) its user. */
async function uninstall(app: string, meta: ProcMeta | undefined): Promise<void> {
  await systemctl(['stop', unitName(app)]);
  await rm(wantsLink(app), { force: true });
  await rm(unitPath(app), { force: true });
  await systemctl(['daemon-reload']);
  await systemctl(['reset-failed', unitName(app)]);
  await rm(appDir(app), { recursive: true, force: true });
  if (meta?.ownUser) await run(['userdel', meta.user]);
}

async function applyMethod(_call: Call, raw: unknown): Promise<ProcApplyResult> {
  const spec = parseParams(ProcSpecSchema, raw, 'proc.apply');
  let program: string;
  let u: Awaited<ReturnType<typeof appUser>>;
  try {
    program = await resolveProgram(spec.argv[0]!);
    if (spec.workdir !== undefined && !(await stat(spec.workdir).then((s) => s.isDirectory(), () => false))) {
      throw new RemoteError('EINVALID', `--workdir: no directory ${spec.workdir} in the guest`);
    }
    u = await appUser(spec);
  } catch (err) {
    // Refused before anything was swapped: a first deploy leaves nothing (its staged program goes), a redeploy only its own generation.
    if (!(await readMeta(spec.app))) await rm(appDir(spec.app), { recursive: true, force: true });
    else await rm(generationDir(spec.app, spec.generation), { recursive: true, force: true });
    throw err;
  }
  await appDirReady(spec.app);
  await dirWithMode(dataDir(spec.app), 0o750);
  await chown(dataDir(spec.app), u.uid, u.gid);
  const oldUnit = await readFile(unitPath(spec.app), 'utf8').catch(() => undefined);
  const oldMeta = await readMeta(spec.app);
  const meta: ProcMeta = {
    app: spec.app,
    generation: spec.generation,
    argv: [program, ...spec.argv.slice(1)],
    env: spec.env,
    user: u.user,
    ownUser: u.own,
    workdir: spec.workdir ?? dataDir(spec.app),
    createdAt: oldMeta?.createdAt ?? Math.floor(Date.now() / 1000),
  };
  if (spec.env.length > 0) {
    await mkdir(generationDir(spec.app, spec.generation), { recursive: true, mode: 0o711 });
    await writeAtomic(envFile(spec.app, spec.generation), renderEnvFile(spec.env), 0o600);
  }
  const installed = await install(spec.app, renderUnit(spec, program, meta), meta);
  const started = await startAndSettle(spec.app, spec.settleMs, spec.readyPorts, installed);
  if (started.ok) {
    // The generations before go: only the one running stays.
    for (const entry of await readdir(appDir(spec.app))) if (/^\d+$/.test(entry) && Number(entry) !== spec.generation) await rm(`${appDir(spec.app)}/${entry}`, { recursive: true, force: true });
    return started;
  }
  // Roll back: the unit before runs again, or the app goes (it never ran).
  let back = 'fix the program or its arguments and deploy again';
  if (oldUnit !== undefined && oldMeta) {
    const again = await startAndSettle(spec.app, spec.settleMs, [], await install(spec.app, oldUnit, oldMeta));
    back = again.ok ? 'the version that ran before runs again' : `the version before did not start again either: ${again.why}`;
    await rm(generationDir(spec.app, spec.generation), { recursive: true, force: true });
  } else {
    await uninstall(spec.app, meta);
  }
  return { ok: false, why: started.why, back };
}

async function listMethod(): Promise<{ procs: ProcInfo[] }> {
  const files = await readdir(UNIT_DIR).catch(() => [] as string[]);
  const metas = (await Promise.all(files.map((f) => appOfUnit(f)).filter((a): a is string => a !== undefined).map(readMeta))).filter((m): m is ProcMeta => m !== undefined);
  const props = await showAll(metas.map((m) => m.app));
  return { procs: metas.map((m) => procState(props.get(unitName(m.app)) ?? {}, m, signalName)) };
}

async function requireMeta(app: string): Promise<ProcMeta> {
  const meta = await readMeta(app);
  if (!meta) throw new RemoteError('ENOTFOUND', `no process app ${app} in the guest`);
  return meta;
}

async function controlMethod(_call: Call, raw: unknown): Promise<ProcInfo> {
  const p = parseParams(ProcControlParamsSchema, raw, 'proc.control');
  await requireMeta(p.app);
  // A start by hand clears a failed state (and its start-limit count) first.
  if (p.verb !== 'stop') await systemctl(['reset-failed', unitName(p.app)]);
  const r = await run(['systemctl', p.verb, unitName(p.app)]);
  if (r.code !== 0) throw new RemoteError('EAPP_START', `systemctl ${p.verb} ${unitName(p.app)}: ${r.stderr.trim() || `exit ${r.code}`}`);
  return (await infoOf(p.app))!;
}

async function removeMethod(_call: Call, raw: unknown): Promise<{ removed: boolean }> {
  const p = parseParams(ProcAppParamsSchema, raw, 'proc.remove');
  await usersInFlight.get(p.app);
  const meta = await readMeta(p.app);
  const present = meta !== undefined || (await stat(unitPath(p.app)).then(() => true, () => false));
  if (present) {
    await uninstall(p.app, meta);
    return { removed: true };
  }
  // A first deploy cut off after proc.stage (its upload failed): the staged directory, and the user made for it.
  const staged = await stat(appDir(p.app)).then(() => true, () => false);
  if (staged) {
    await rm(appDir(p.app), { recursive: true, force: true });
    const own = await getent(ownUser(p.app, sha256));
    if (own) await run(['userdel', own.name]);
  }
  return { removed: staged };
}

async function logsMethod(call: Call, raw: unknown): Promise<{ lines: number }> {
  const p = parseParams(ProcLogsParamsSchema, raw, 'proc.logs');
  const meta = await requireMeta(p.app);
  const since = Math.max(p.since ?? 0, meta.createdAt ?? 0);
  const child = spawn('journalctl', journalArgv(p.app, { follow: p.follow, ...(p.tail !== undefined ? { tail: p.tail } : {}), ...(since > 0 ? { since } : {}) }).slice(1), {
    stdio: ['ignore', 'pipe', 'ignore'],
  });
  const out = new PassThrough({ highWaterMark: 256 * 1024 });
  const sending = call.sendStream('stdout', out);
  const onAbort = (): void => {
    child.kill('SIGTERM');
  };
  call.signal.addEventListener('abort', onAbort, { once: true });
  let lines = 0;
  const parser = new JsonLines((entry) => {
    const line = journalLine(entry, p.timestamps);
    if (line === undefined) return;
    lines++;
    out.write(`${line}\n`);
  });
  try {
    for await (const chunk of child.stdout as AsyncIterable<Buffer>) {
      parser.push(chunk);
      if (out.writableNeedDrain) await new Promise((r) => out.once('drain', r));
    }
    parser.end();
  } finally {
    call.signal.removeEventListener('abort', onAbort);
    out.end();
  }
  await sending;
  return { lines };
}

async function execMethod(call: Call, raw: unknown) {
  const p = parseParams(ProcExecParamsSchema, raw, 'proc.exec');
  const meta = await requireMeta(p.app);
  const u = await getent(meta.user);
  if (!u) throw new RemoteError('ENOTFOUND', `the user ${meta.user} of the app ${p.app} is gone from the guest`);
  const env: NodeJS.ProcessEnv = { PATH: '/usr/local/bin:/usr/bin:/bin', HOME: u.home, USER: u.name, LOGNAME: u.name, LANG: 'C.UTF-8' };
  for (const kv of meta.env) {
    const eq = kv.indexOf('=');
    env[kv.slice(0, eq)] = kv.slice(eq + 1);
  }
  const r = await runCommand(call, { argv: p.argv, env, cwd: meta.workdir, stdin: p.stdin, tty: p.tty, ...(p.rows && p.cols ? { rows: p.rows, cols: p.cols } : {}), uid: u.uid, gid: u.gid });
  return { exitCode: r.exitCode ?? (r.signal ? 128 + (os.signals[r.signal as keyof typeof os.signals] ?? 0) : null) };
}

export const procHandlers: Record<string, Handler> = {
  'proc.stage': stageMethod,
  'proc.apply': applyMethod,
  'proc.list': listMethod,
  'proc.control': controlMethod,
  'proc.remove': removeMethod,
  'proc.logs': logsMethod,
  'proc.exec': execMethod,
};
