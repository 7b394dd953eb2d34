/**
 * Starting a VM's monitor, from the runtime: a detached process, its log in
 * the VM's monitor.log, its report lines read from a pipe on its file
 * descriptor 3 (`forked`: QEMU's PID, QEMU still paused; then `running`,
 * `adopted` or `error`). The monitor spawns QEMU itself (qemu-child.ts); an
 * adoption takes over the QEMU that runs. After the report the monitor is on
 * its own: the caller may exit, the VM keeps its keeper.
 */
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { open, rename, stat } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Readable } from 'node:stream';
import { GoshipError, type ErrorCode, ERROR_CODES } from '../errors.ts';
import type { Layout } from '../layout.ts';
import { QemuExitError, isOurProcess, logTail, processMarker } from '../qemu/index.ts';
import type { Vm } from '../store/index.ts';
import { monitorEnv } from './env.ts';
import type { Launch } from './launch.ts';

/** The monitor's log is rotated at start once it is this large (one older file kept). */
export const MONITOR_LOG_MAX_BYTES = 1024 * 1024;
/** How long a monitor may take to report. QEMU's own start is bounded inside it. */
export const MONITOR_REPORT_TIMEOUT_MS = 60_000;
/** The monitor's entry bundle. A monitor started by an earlier build (its entry was an ES module) runs `goship-monitor.mjs`: still recognized, so it is adopted, not doubled. */
const MONITOR_BUNDLE = 'goship-monitor.cjs';
const MONITOR_BUNDLE_BEFORE = 'goship-monitor.mjs';

/** The monitor bundle beside the CLI bundle (dist/goship-monitor.cjs). */
export function monitorBundlePath(): string {
  const here = dirname(fileURLToPath(import.meta.url));
  const candidates = [join(here, MONITOR_BUNDLE), join(here, '..', '..', 'dist', MONITOR_BUNDLE), join(here, '..', 'dist', MONITOR_BUNDLE)];
  const found = candidates.find((c) => existsSync(c));
  if (!found) throw new GoshipError('EMONITOR', 'the monitor bundle (dist/goship-monitor.cjs) is missing', { hint: 'build it: npm run build' });
  return found;
}

/** Pure: is this /proc/PID/cmdline the monitor of VM `id` under GOSHIP_HOME `home`? */
export function isMonitorCmdline(cmdline: string, id: string, home: string): boolean {
  const args = cmdline.split('\0');
  const at = (flag: string): string | undefined => {
    const i = args.indexOf(flag);
    return i === -1 ? undefined : args[i + 1];
  };
  return args.some((a) => a.endsWith(`/${MONITOR_BUNDLE}`) || a.endsWith(`/${MONITOR_BUNDLE_BEFORE}`)) && at('--vm') === id && at('--home') === home;
}

export interface MonitorReport {
  /** The monitor's PID. */
  pid: number;
  /** QEMU's PID. */
  qemuPid: number;
  /** When QEMU was spawned, and when the monitor started (ISO): what the monitor records. */
  startedAt?: string;
  monitorStartedAt?: string;
}

async function rotateLog(path: string): Promise<void> {
  const size = await stat(path).then(
    (s) => s.size,
    () => 0,
  );
  if (size > MONITOR_LOG_MAX_BYTES) await rename(path, `${path}.1`).catch(() => undefined);
}

function reportError(raw: Record<string, unknown>, vm: Vm): GoshipError {
  const e = (raw.error ?? {}) as { code?: string; message?: string; hint?: string };
  if (e.code === 'EQEMU_EXIT') {
    return new QemuExitError(
      typeof raw.exitCode === 'number' ? raw.exitCode : null,
      typeof raw.signal === 'string' ? raw.signal : null,
      typeof raw.logTail === 'string' ? raw.logTail : '',
      vm.argv ?? [],
      vm.paths.qemuLog,
    );
  }
  const code: ErrorCode = e.code && e.code in ERROR_CODES ? (e.code as ErrorCode) : 'EMONITOR';
  return new GoshipError(code, e.message ?? 'the monitor failed', e.hint === undefined ? {} : { hint: e.hint });
}

/**
 * Starts the monitor of `vm`: fresh (`launch`: the monitor reads it from the
 * VM's launch.json and spawns QEMU) or adopting the QEMU that runs (`adopt`);
 * waits for its report.
 */
export async function startMonitor(opts: {
  layout: Layout;
  vm: Vm;
  adopt?: boolean;
  launch?: Launch;
  bundle?: string;
  /**
   * Told the PIDs as soon as the monitor has spawned QEMU (still paused:
   * `-S`): the caller records them, so a goshipctl killed from here on leaves
   * no QEMU that no record knows.
   */
  onForked?: (pids: { qemu: number; monitor: number }) => Promise<void>;
}): Promise<MonitorReport> {
  const { layout, vm } = opts;
  if (!opts.adopt && !opts.launch) throw new GoshipError('EINTERNAL', `starting the monitor of VM ${vm.name}: a fresh start needs its launch`);
  const bundle = opts.bundle ?? monitorBundlePath();
  await rotateLog(vm.paths.monitorLog);
  const env = monitorEnv(process.env);
  const argv = [process.execPath, bundle, '--vm', vm.id, '--home', layout.home, '--run', layout.run, ...(opts.adopt ? ['--adopt'] : [])];
  const log = await open(vm.paths.monitorLog, 'a', 0o600);
  let child;
  try {
    child = spawn(argv[0]!, argv.slice(1), { detached: true, stdio: ['ignore', log.fd, log.fd, 'pipe'], env });
  } finally {
    await log.close();
  }
  const pipe = child.stdio[3] as Readable;
  const exited = new Promise<{ code: number | null; signal: string | null }>((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  /** QEMU's PID, from the monitor's first line: a monitor that dies before it reports must not leave QEMU behind. */
  let forked: number | undefined;
  /** The caller's record of the PIDs, being written. */
  let recorded: Promise<void> | undefined;
  try {
    const line = await new Promise<string | undefined>((resolve, reject) => {
      let text = '';
      const timer = setTimeout(() => reject(new GoshipError('EMONITOR', `the monitor of VM ${vm.name} did not report within ${MONITOR_REPORT_TIMEOUT_MS / 1000} s`, { hint: `read ${vm.paths.monitorLog}` })), MONITOR_REPORT_TIMEOUT_MS);
      pipe.setEncoding('utf8');
      pipe.on('data', (d: string) => {
        text += d;
        for (let nl = text.indexOf('\n'); nl !== -1; nl = text.indexOf('\n')) {
          const first = text.slice(0, nl);
          text = text.slice(nl + 1);
          const pid = /^\{"t":"forked","pid":(\d+)\}$/.exec(first)?.[1];
          if (pid !== undefined) {
            forked = Number(pid);
            recorded = opts.onForked?.({ qemu: forked, monitor: child.pid! }).catch(() => undefined);
            continue;
          }
          clearTimeout(timer);
          resolve(first);
          return;
        }
      });
      pipe.on('end', () => {
        clearTimeout(timer);
        resolve(undefined);
      });
      pipe.on('error', () => undefined);
      child.once('error', (err) => {
        clearTimeout(timer);
        reject(new GoshipError('EMONITOR', `cannot start the monitor: ${err.message}`, { cause: err }));
      });
    });
    if (line === undefined) {
      const e = await Promise.race([exited, new Promise<undefined>((r) => setTimeout(r, 1000, undefined))]);
      const how = e ? (e.signal ? `was killed by ${e.signal}` : `exited with code ${e.code}`) : 'closed its report pipe';
      const tail = await logTail(vm.paths.monitorLog, 5);
      throw new GoshipError('EMONITOR', `the monitor of VM ${vm.name} ${how} before it reported${tail ? `: ${tail.split('\n').join(' | ')}` : ''}`, {
        hint: `read ${vm.paths.monitorLog}`,
      });
    }
    const raw = JSON.parse(line) as Record<string, unknown>;
    await recorded;
    if (raw.t === 'running' || raw.t === 'adopted') {
      forked = undefined;
      return {
        pid: child.pid!,
        qemuPid: Number(raw.pid),
        ...(typeof raw.startedAt === 'string' ? { startedAt: raw.startedAt } : {}),
        ...(typeof raw.monitorStartedAt === 'string' ? { monitorStartedAt: raw.monitorStartedAt } : {}),
      };
    }
    throw reportError(raw, vm);
  } finally {
    pipe.destroy();
    child.unref();
    // No report of a running VM: the QEMU the monitor spawned goes too (a monitor that reported an error has seen to it already).
    if (forked !== undefined && (await isOurProcess(forked, processMarker(vm.id)))) {
      try {
        process.kill(forked, 'SIGKILL');
      } catch {
        // gone meanwhile: the error that brought us here is the one to report
      }
    }
  }
}
