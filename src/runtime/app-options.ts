/**
 * What `app deploy` takes, checked before anything changes: every problem at
 * once, each naming the flag the user typed. Pure.
 */
import { basename } from 'node:path';
import type { Issue } from '../errors.ts';
import { NAME_PATTERN, NAME_RULE, parseSize } from '../qemu/index.ts';

export interface AppPort {
  proto: 'tcp' | 'udp';
  /** The host port (127.0.0.1), forwarded to the same port number in the guest. */
  host: number;
  /** The port the program listens on: the container's port, or the guest port of a process app. */
  container: number;
}

export interface AppVolume {
  name: string;
  path: string;
}

export type AppRestart = { name: 'no' } | { name: 'on-failure'; maxRetries?: number } | { name: 'always' } | { name: 'unless-stopped' };

export type AppSource =
  | { kind: 'build'; dir: string }
  | { kind: 'archive'; file: string }
  | { kind: 'image'; ref: string }
  | { kind: 'binary'; file: string }
  | { kind: 'command' };

export interface DeployOptions {
  project: string;
  app: string;
  source: AppSource;
  /** `[udp:]HOST:CONTAINER` strings or parsed ports. */
  ports?: (string | AppPort)[];
  /** `KEY=VALUE` strings. */
  env?: string[];
  /** The text of an env file (`KEY=VALUE` lines, `#` comments). */
  envFile?: string;
  /** `VOLUME:/path` strings. */
  volumes?: string[];
  restart?: string;
  memory?: string | number;
  cpus?: string | number;
  /** The program's arguments (a container's CMD; a process's ARGS or PROGRAM ARGS). */
  cmd?: string[];
  /** Process apps: the working directory and user in the guest. */
  workdir?: string;
  user?: string;
  onProgress?: (line: string) => void;
}

export interface ValidatedApp {
  project: string;
  app: string;
  source: AppSource;
  ports: AppPort[];
  env: string[];
  volumes: AppVolume[];
  restart: AppRestart;
  memoryBytes: number | undefined;
  cpus: number | undefined;
  cmd: string[] | undefined;
  workdir: string | undefined;
  user: string | undefined;
}

const ENV_KEY = /^[A-Za-z_][A-Za-z0-9_]*$/;
const VOLUME_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/;
const IMAGE_REF = /^[A-Za-z0-9][A-Za-z0-9_.:/@+-]{0,511}$/;
const USER_NAME = /^[a-z_][a-z0-9_-]{0,31}$/;
/** A program's file name, kept in the guest (argv[0]). */
const PROGRAM_FILE = /^(?!\.{1,2}$)[A-Za-z0-9._+-]{1,255}$/;

/** Pure: `8080:80`, `udp:5353:53` → a port, or an issue. */
export function parseAppPort(text: string, path: string): AppPort | Issue {
  const m = /^(?:(tcp|udp):)?(\d{1,5}):(\d{1,5})$/.exec(text);
  const bad = (why: string): Issue => ({ path, message: `${why}; expected [udp:]HOST:CONTAINER with ports 1-65535, got ${JSON.stringify(text)}` });
  if (!m) return bad('not a port mapping');
  const host = Number(m[2]);
  const container = Number(m[3]);
  if (host < 1 || host > 65535) return bad(`host port ${host} is out of range`);
  if (container < 1 || container > 65535) return bad(`container port ${container} is out of range`);
  return { proto: (m[1] as 'tcp' | 'udp' | undefined) ?? 'tcp', host, container };
}

/** Pure: `no`, `on-failure`, `on-failure:5`, `always`, `unless-stopped`. */
export function parseRestart(text: string, path = '--restart'): AppRestart | Issue {
  if (text === 'no' || text === 'always' || text === 'unless-stopped') return { name: text };
  const m = /^on-failure(?::(\d{1,6}))?$/.exec(text);
  if (m) return m[1] === undefined ? { name: 'on-failure' } : { name: 'on-failure', maxRetries: Number(m[1]) };
  return { path, message: `expected no, on-failure[:N], always or unless-stopped, got ${JSON.stringify(text)}` };
}

/** Pure: the `KEY=VALUE` lines of an env file (blank lines and `#` comments skipped), or issues naming the line. */
export function parseEnvFile(text: string): { env: string[]; issues: Issue[] } {
  const env: string[] = [];
  const issues: Issue[] = [];
  text.split('\n').forEach((raw, i) => {
    const line = raw.replace(/\r$/, '');
    if (line.trim() === '' || line.trimStart().startsWith('#')) return;
    const eq = line.indexOf('=');
    const key = eq > 0 ? line.slice(0, eq) : '';
    if (!ENV_KEY.test(key)) issues.push({ path: `--env-file:${i + 1}`, message: `expected KEY=VALUE, got ${JSON.stringify(line.slice(0, 60))}` });
    else env.push(line);
  });
  return { env, issues };
}

/** Pure: checks every option of a deploy at once. Throws nothing: the caller turns issues into one error. */
export function checkAppOptions(o: DeployOptions): { app: ValidatedApp; issues: Issue[] } {
  const issues: Issue[] = [];
  if (typeof o.project !== 'string' || !NAME_PATTERN.test(o.project)) issues.push({ path: 'project', message: `expected ${NAME_RULE}, got ${JSON.stringify(o.project)}` });
  if (typeof o.app !== 'string' || !NAME_PATTERN.test(o.app)) issues.push({ path: 'app', message: `expected ${NAME_RULE}, got ${JSON.stringify(o.app)}` });
  const s = o.source;
  if (s.kind === 'image' && !IMAGE_REF.test(s.ref)) issues.push({ path: '--image', message: `expected an image reference such as localhost:5000/web:1, got ${JSON.stringify(s.ref)}` });
  if (s.kind === 'command' && (o.cmd ?? []).length === 0) issues.push({ path: '--command', message: 'give the program and its arguments after --' });
  const ports: AppPort[] = [];
  (o.ports ?? []).forEach((p, i) => {
    const r = typeof p === 'string' ? parseAppPort(p, `--port[${i}]`) : p;
    if ('message' in r) return void issues.push(r);
    const dup = ports.find((q) => q.proto === r.proto && q.host === r.host);
    if (dup) issues.push({ path: `--port[${i}]`, message: `host port ${r.proto}:${r.host} is given twice` });
    else ports.push(r);
  });
  const env: string[] = [];
  if (o.envFile !== undefined) {
    const f = parseEnvFile(o.envFile);
    env.push(...f.env);
    issues.push(...f.issues);
  }
  (o.env ?? []).forEach((kv, i) => {
    const eq = kv.indexOf('=');
    if (eq <= 0 || !ENV_KEY.test(kv.slice(0, eq))) issues.push({ path: `--env[${i}]`, message: `expected KEY=VALUE with KEY of letters, digits and _, got ${JSON.stringify(kv.slice(0, 60))}` });
    else if (kv.includes('\0')) issues.push({ path: `--env[${i}]`, message: 'must not contain NUL' });
    else env.push(kv);
  });
  const volumes: AppVolume[] = [];
  (o.volumes ?? []).forEach((text, i) => {
    const m = /^([^:]+):(\/.*)$/.exec(text);
    if (!m || !VOLUME_NAME.test(m[1]!)) issues.push({ path: `--volume[${i}]`, message: `expected VOLUME:/path with a volume name of letters, digits, _ . -, got ${JSON.stringify(text)}` });
    else volumes.push({ name: m[1]!, path: m[2]! });
  });
  let restart: AppRestart = { name: 'no' };
  if (o.restart !== undefined) {
    const r = parseRestart(o.restart);
    if ('message' in r) issues.push(r);
    else restart = r;
  }
  let memoryBytes: number | undefined;
  if (o.memory !== undefined) {
    const m = parseSize(o.memory);
    if (!m.ok) issues.push({ path: '--memory', message: m.message });
    else if (m.bytes < 4 * 1024 * 1024) issues.push({ path: '--memory', message: `expected at least 4M, got ${o.memory}` });
    else memoryBytes = m.bytes;
  }
  let cpus: number | undefined;
  if (o.cpus !== undefined) {
    const n = typeof o.cpus === 'number' ? o.cpus : /^\d+(\.\d+)?$/.test(o.cpus) ? Number(o.cpus) : Number.NaN;
    if (!Number.isFinite(n) || n < 0.01 || n > 1024) issues.push({ path: '--cpus', message: `expected a number of CPUs such as 0.5 or 2, got ${JSON.stringify(o.cpus)}` });
    else cpus = n;
  }
  const processApp = s.kind === 'binary' || s.kind === 'command';
  if (processApp) {
    if (restart.name === 'unless-stopped') issues.push({ path: '--restart', message: 'unless-stopped is a container policy: a process app takes no, on-failure[:N] or always' });
    if ((o.volumes ?? []).length > 0) issues.push({ path: '--volume', message: 'volumes are for containers: a process app uses its directory in the guest (or --workdir)' });
  } else {
    if (o.workdir !== undefined) issues.push({ path: '--workdir', message: 'is for process apps (--binary, --command); a container has its image\'s WORKDIR' });
    if (o.user !== undefined) issues.push({ path: '--user', message: 'is for process apps (--binary, --command); a container has its image\'s USER' });
  }
  if (s.kind === 'binary' && !PROGRAM_FILE.test(basename(s.file))) {
    issues.push({ path: '--binary', message: `the program's file name must be letters, digits, . _ + - (it keeps its name in the guest), got ${JSON.stringify(basename(s.file))}` });
  }
  if (processApp && o.workdir !== undefined && (!o.workdir.startsWith('/') || o.workdir.split('/').includes('..'))) issues.push({ path: '--workdir', message: `expected an absolute path without .., got ${JSON.stringify(o.workdir)}` });
  if (processApp && o.user !== undefined && !USER_NAME.test(o.user)) issues.push({ path: '--user', message: `expected a user name (lowercase letters, digits, _ and -), got ${JSON.stringify(o.user)}` });
  return {
    app: {
      project: o.project,
      app: o.app,
      source: s,
      ports,
      env,
      volumes,
      restart,
      memoryBytes,
      cpus,
      cmd: o.cmd && o.cmd.length > 0 ? [...o.cmd] : undefined,
      workdir: o.workdir,
      user: o.user,
    },
    issues,
  };
}
