/**
 * goshipctl: parse flags, call the runtime, print a table or --json. Nothing else.
 *
 * cac matches one-word commands only, so the first word picks a group
 * (`vm`, `image`, `project`) and each group is its own cac program.
 */
import { GoshipError } from '../errors.ts';
import { CommandContext } from './context.ts';
import { EXIT, Output, exitCodeFor } from './output.ts';
import { registerTop } from './commands/top.ts';
import { GROUPS, grammarFor, program } from './programs.ts';
import { routeToNodes } from './route.ts';
import { VERSION } from './version.ts';

export { VERSION };

export const OVERVIEW = `goshipctl ${VERSION}: a VM-first control plane on QEMU, without libvirt

Usage: goshipctl <command> [options]   (every command takes --json)

Projects
  project create NAME [--cpus N --memory 2G --disk 20G --image NAME --ssh-key FILE --port HOST:GUEST]
  project list | info NAME | start NAME | stop NAME | delete NAME [--force]
  project port add NAME [udp:]HOST:GUEST | port remove NAME [udp:]HOST | port list NAME
  project suspend NAME | resume NAME, project snapshot create|list|restore|delete NAME [TAG] [--memory]
  project move NAME --to NODE
  ssh NAME [-- CMD], ssh-config NAME   OpenSSH into the project's VM (its own key, over the agent channel)

Apps (inside a project's VM)
  app deploy PROJECT APP --build DIR | --image-archive FILE | --image REF [--port H:C --env K=V --restart always …] [-- CMD]
  app deploy PROJECT APP --binary FILE | --command [--port H:G --user U --workdir D …] -- [PROGRAM] ARGS   (a process, systemd's)
  app list [PROJECT] | info PROJECT APP | start|stop|restart|remove PROJECT APP
  app logs PROJECT APP [-f --tail N --since 10m --timestamps], app exec PROJECT APP [-t -i] -- CMD ARGS

VMs
  vm args SPEC              the exact QEMU argv of a VM spec (YAML or JSON)
  vm create SPEC [--base FILE --disk 20G]   define a VM from a spec file (overlay on a base image)
  vm start|stop|destroy NAME, vm list, vm status NAME
  vm console NAME [-f]      the serial console log
  vm qmp NAME '{"execute":"query-status"}'
  vm ping|info NAME, vm exec NAME -- CMD ARGS, vm cp SRC DST (NAME:PATH on one side)
  vm tunnel NAME PORT|unix:/PATH   stdin/stdout to a socket in the guest (an ssh ProxyCommand)

Images
  image build [NAME] [--packages a,b], image list | info NAME | remove NAME
  image warm [NAME] [--cpus N --memory 1G]   a template: project create then restores, not boots
  image import NAME FILE [--kernel F --initrd F --cmdline S], image push NODE NAME

Nodes (other hosts' GoShips, over SSH; commands on their projects run there)
  node add NAME ssh://USER@HOST[:PORT] [--identity FILE --known-hosts FILE --install]
  node list | info NAME | remove NAME [--force]
  project create NAME --node NODE [--node NODE2]…   (one VM per node)
  image warm|list|info|remove … --node NODE          (a node's images and templates)

Host
  version                   GoShip, QEMU and QMP versions, the accelerator auto picks
  host                      CPU, topology, NUMA, hugepages, KVM usability, SEV/TDX

Examples
  goshipctl project create web --cpus 2 --memory 2G --port 8080:80
  goshipctl vm exec web -- uname -a
  goshipctl vm args examples/vm.yaml --json
  goshipctl project list --json

Exit codes: 0 ok, 1 failed, 2 invalid input, 3 not found, 4 wrong state or name taken.
Files: GOSHIP_HOME (state, images, disks) and GOSHIP_RUN (sockets); see docs/cli.md.`;

/** The exit status of a process killed by SIGPIPE, which is what a reader that went away means. */
export const EXIT_PIPE_CLOSED = 128 + 13;

/**
 * A closed stdout (the reader of a pipe exited: `… | head`) ends goshipctl
 * quietly, as it ends `docker exec … | head`: the running command is
 * cancelled in the guest, nothing is printed, the exit status is 141.
 */
function watchStdout(): AbortSignal {
  const closed = new AbortController();
  process.stdout.on('error', (err: NodeJS.ErrnoException) => {
    if (err.code === 'EPIPE' || err.code === 'ERR_STREAM_DESTROYED') closed.abort(err);
    else throw err;
  });
  return closed.signal;
}

/** The exit status of a command ended by Ctrl-C (SIGINT), as a shell reports it. */
export const EXIT_INTERRUPTED = 128 + 2;

/**
 * Ctrl-C (SIGINT) aborts the running command's signal, so a stream (`app logs
 * -f`, `vm exec`) cancels its work in the guest, and goshipctl ends with 130;
 * a command that does not stop within a second is ended then.
 */
function watchInterrupt(ctl: AbortController): () => boolean {
  let interrupted = false;
  process.once('SIGINT', () => {
    interrupted = true;
    ctl.abort(new GoshipError('EUSAGE', 'interrupted'));
    setTimeout(() => process.exit(EXIT_INTERRUPTED), 1000).unref();
  });
  return () => interrupted;
}

/** Runs goshipctl with `args` (without node and the script); resolves to the exit code. */
export async function main(argv: readonly string[]): Promise<number> {
  // `goshipctl --json project list` as well as `goshipctl project list --json`: the global flag may come first.
  let lead = 0;
  while (argv[lead] === '--json') lead++;
  const args = lead > 0 ? [...argv.slice(lead), '--json'] : argv;
  const json = args.includes('--json');
  const out = new Output({ json });
  const cancel = new AbortController();
  const interrupted = watchInterrupt(cancel);
  const stdoutClosed = AbortSignal.any([watchStdout(), cancel.signal]);
  const [first, ...rest] = args;
  if (first === undefined || first === '--help' || first === '-h' || first === 'help') {
    process.stdout.write(`${OVERVIEW}\n`);
    return EXIT.ok;
  }
  if (first === '--version' || first === '-v') {
    process.stdout.write(`${VERSION}\n`);
    return EXIT.ok;
  }
  const group = GROUPS[first];
  const ctx = new CommandContext(out, group ? rest : args, stdoutClosed);
  const cli = group ? program(`goshipctl ${first}`, ctx, group.register) : program('goshipctl', ctx, registerTop);
  try {
    // Routed by the same commands cac parses with: the group's.
    const remote = await routeToNodes(args, grammarFor(group ? { [first]: cli } : {}), () => ctx.runtime(), out, stdoutClosed);
    if (remote !== undefined) return interrupted() ? EXIT_INTERRUPTED : stdoutClosed.aborted ? EXIT_PIPE_CLOSED : remote;
    cli.parse(['node', 'goshipctl', ...(group ? rest : args)], { run: false });
    if (cli.options.help || cli.options.version) return EXIT.ok; // cac printed it
    if (!cli.matchedCommand) {
      const what = group ? (rest[0] === undefined ? `goshipctl ${first} needs a command` : `unknown command: ${first} ${rest[0]}`) : `unknown command: ${first}`;
      throw new GoshipError('EUSAGE', what, { hint: group ? `goshipctl ${first} --help lists them` : 'goshipctl --help lists the commands' });
    }
    const code = await cli.runMatchedCommand();
    if (interrupted()) return EXIT_INTERRUPTED;
    if (stdoutClosed.aborted) return EXIT_PIPE_CLOSED;
    return typeof code === 'number' ? code : EXIT.ok;
  } catch (err) {
    if (interrupted()) return EXIT_INTERRUPTED;
    if (stdoutClosed.aborted) return EXIT_PIPE_CLOSED;
    const e = err instanceof Error && !(err instanceof GoshipError) && /Unknown option|missing required args|value is missing/i.test(err.message)
      ? new GoshipError('EUSAGE', err.message.replace(/^error: /i, ''), { hint: `goshipctl ${group ? `${first} ` : ''}${group ? (rest[0] ?? '') : first} --help` })
      : err;
    out.error(e);
    return exitCodeFor(e);
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err) => {
    process.stderr.write(`goshipctl: internal error: ${err instanceof Error ? err.stack : String(err)}\n`);
    process.exitCode = EXIT.failed;
  },
);
