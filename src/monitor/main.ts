/**
 * goship-monitor: the monitor process of one VM (dist/goship-monitor.cjs).
 *
 *   goship-monitor --vm ID --home GOSHIP_HOME --run GOSHIP_RUN (--qemu-pid PID | --adopt)
 *
 * Started by the runtime: a fresh start through the launcher (launcher.ts),
 * which has forked QEMU already and passes its PID; `--adopt` takes over a
 * running QEMU whose monitor died. It reports one JSON line on file
 * descriptor 3 when that is a pipe (`running`, `adopted` or `error`), writes
 * its log to stderr (the VM's monitor.log), and exits when its VM has ended
 * for good. See docs/architecture.md. This entry is Node built-ins only: it
 * loads the body (dist/goship-monitor-body.cjs, body.ts) through V8's code
 * cache.
 */
import { closeSync, fstatSync, writeSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadCached } from '../boot/index.ts';
import { Layout } from '../layout.ts';
import { restoreEnv } from './env.ts';
import { QMP_SOCKET_TIMEOUT_MS, forkedQemu, resumeEarly } from './early.ts';

/** The rest of the monitor, beside this file (built from body.ts). */
const BODY = 'goship-monitor-body.cjs';
/** When this file began to run, in ms since Node started (for the log). */
const ENTRY_MS = (process.uptime() * 1000).toFixed(0);

const USAGE = 'usage: goship-monitor --vm ID --home GOSHIP_HOME --run GOSHIP_RUN (--qemu-pid PID | --adopt)';
const REPORT_FD = 3;

interface Args {
  id: string;
  home: string;
  run: string;
  adopt: boolean;
  qemuPid?: number;
}

function parseArgs(argv: string[]): Args {
  const out: Record<string, string> = {};
  let adopt = false;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--adopt') adopt = true;
    else if (a === '--vm' || a === '--home' || a === '--run' || a === '--qemu-pid') out[a.slice(2)] = argv[++i] ?? '';
    else throw new Error(`unknown argument ${JSON.stringify(a)}\n${USAGE}`);
  }
  const pid = out['qemu-pid'] === undefined ? undefined : Number(out['qemu-pid']);
  if (!out.vm || !out.home || !out.run || adopt === (pid !== undefined)) throw new Error(USAGE);
  if (pid !== undefined && !(Number.isInteger(pid) && pid > 0)) throw new Error(`--qemu-pid: expected a PID, got ${JSON.stringify(out['qemu-pid'])}`);
  return { id: out.vm, home: out.home, run: out.run, adopt, ...(pid !== undefined ? { qemuPid: pid } : {}) };
}

function reportChannel(): (message: Record<string, unknown>) => void {
  let open = false;
  try {
    const st = fstatSync(REPORT_FD);
    // Node hands a child its extra stdio as a socket pair; a shell would give a FIFO.
    open = st.isFIFO() || st.isSocket();
  } catch {
    open = false;
  }
  return (message) => {
    if (!open) return;
    try {
      writeSync(REPORT_FD, `${JSON.stringify(message)}\n`);
      closeSync(REPORT_FD);
    } catch {
      // The starter went away: nobody is waiting for the answer.
    }
    open = false;
  };
}

function log(line: string): void {
  process.stderr.write(`${new Date().toISOString()} goship-monitor[${process.pid}]: ${line}\n`);
}

async function main(): Promise<number> {
  // Before any child: QEMU gets the starter's environment, not the monitor's malloc setting.
  restoreEnv(process.env);
  const args = parseArgs(process.argv.slice(2));
  // Nothing here may die of a closed pipe or a client that vanished.
  process.on('SIGPIPE', () => undefined);
  process.on('SIGHUP', () => undefined);
  const layout = new Layout(args.home, args.run);
  // A fresh start: the launcher forked QEMU before this process even became Node; its end comes as SIGCHLD.
  const early = args.qemuPid === undefined ? undefined : forkedQemu(args.qemuPid);
  const report = reportChannel();
  const startedAt = new Date().toISOString();
  if (early) {
    // QEMU runs before the body loads (~30 ms of this machine's time): the entry negotiates QMP and resumes it.
    let gone = false;
    void early.exited.then(() => (gone = true));
    const handover = await resumeEarly({ qmp: layout.qmpSocket(args.id), console: layout.vmSocket(args.id, 'consoleSocket'), monitor: layout.vmSocket(args.id, 'monitorSocket') }, () => !gone, QMP_SOCKET_TIMEOUT_MS);
    if (typeof handover === 'string') log(`the entry did not resume QEMU (${handover}): the body will try`);
    else {
      early.handover = handover;
      handover.marks.unshift(`entry ${ENTRY_MS}`);
      report({ t: 'running', pid: early.pid, status: 'running', startedAt: new Date(early.startedAt).toISOString(), monitorStartedAt: startedAt });
    }
  }
  const { Store, Monitor } = loadCached(join(dirname(fileURLToPath(import.meta.url)), BODY)) as typeof import('./body.ts');
  const store = await Store.open(layout);
  const monitor = new Monitor({ layout, store, id: args.id, adopt: args.adopt, report, log, startedAt, ...(early ? { early } : {}) });
  log(`${args.adopt ? 'adopting' : 'starting'} VM ${args.id}`);
  const code = await monitor.main();
  log(`exiting (${code})`);
  return code;
}

process.on('uncaughtException', (err) => {
  log(`uncaught: ${err.stack ?? err.message}`);
  process.exit(70);
});
process.on('unhandledRejection', (err) => {
  log(`unhandled rejection: ${(err as Error)?.stack ?? String(err)}`);
  process.exit(70);
});

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    log((err as Error).message);
    process.exit(2);
  },
);
