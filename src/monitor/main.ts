/**
 * goship-monitor: the monitor process of one VM (dist/goship-monitor.cjs).
 *
 *   goship-monitor --vm ID --home GOSHIP_HOME --run GOSHIP_RUN [--adopt]
 *
 * Started by the runtime (start-monitor.ts): it spawns the VM's QEMU itself
 * (qemu-child.ts), or with `--adopt` takes over a running QEMU whose monitor
 * died. It reports JSON lines on file descriptor 3 when that is a pipe
 * (`forked` with QEMU's PID while QEMU is still paused, then one of
 * `running`, `adopted` or `error`), writes its log to stderr (the VM's
 * monitor.log), and exits when its VM has ended for good. See
 * docs/architecture.md. This entry is Node built-ins only: it loads the body
 * (dist/goship-monitor-body.cjs, body.ts) through V8's code cache.
 */
import { closeSync, fstatSync, writeSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadCached } from '../boot/index.ts';
import { Layout } from '../layout.ts';
import { restoreEnv } from './env.ts';

/** The rest of the monitor, beside this file (built from body.ts). */
const BODY = 'goship-monitor-body.cjs';
/** When this file began to run, in ms since Node started (for the log). */
const ENTRY_MS = (process.uptime() * 1000).toFixed(0);

const USAGE = 'usage: goship-monitor --vm ID --home GOSHIP_HOME --run GOSHIP_RUN [--adopt]';
const REPORT_FD = 3;

interface Args {
  id: string;
  home: string;
  run: string;
  adopt: boolean;
}

function parseArgs(argv: string[]): Args {
  const out: Record<string, string> = {};
  let adopt = false;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--adopt') adopt = true;
    else if (a === '--vm' || a === '--home' || a === '--run') out[a.slice(2)] = argv[++i] ?? '';
    else throw new Error(`unknown argument ${JSON.stringify(a)}\n${USAGE}`);
  }
  if (!out.vm || !out.home || !out.run) throw new Error(USAGE);
  return { id: out.vm, home: out.home, run: out.run, adopt };
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
  // `forked` comes first and keeps the channel open; any other line is the last.
  return (message) => {
    if (!open) return;
    const last = message.t !== 'forked';
    try {
      writeSync(REPORT_FD, `${JSON.stringify(message)}\n`);
      if (last) closeSync(REPORT_FD);
    } catch {
      // The starter went away: nobody is waiting for the answer.
      open = false;
    }
    if (last) open = false;
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
  const report = reportChannel();
  const startedAt = new Date().toISOString();
  const { Store, Monitor } = loadCached(join(dirname(fileURLToPath(import.meta.url)), BODY)) as typeof import('./body.ts');
  const store = await Store.open(layout);
  const monitor = new Monitor({ layout, store, id: args.id, adopt: args.adopt, report, log, startedAt });
  log(`${args.adopt ? 'adopting' : 'starting'} VM ${args.id} (entry at ${ENTRY_MS} ms, body loaded at ${(process.uptime() * 1000).toFixed(0)} ms)`);
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
