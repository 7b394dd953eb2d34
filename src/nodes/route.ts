/**
 * Which project a goshipctl command line is about, so that a command on a
 * project placed on another node runs there (src/runtime/nodes.ts). Pure: the
 * argv in, a decision out; nothing is looked up here.
 *
 * The rules follow the commands' own shapes (docs/cli.md): `project SUB NAME`,
 * `project port SUB NAME`, `vm SUB NAME` (a project's VM has its name), `vm cp`
 * with `NAME:PATH` on one side, `app SUB PROJECT`. Options that take a value
 * are skipped with their value, so `vm exec --cwd /x web -- ls` finds `web`.
 */

/** Options (of any routed command) that take a value as the next word. */
const VALUE_OPTIONS: ReadonlySet<string> = new Set([
  '--cwd', '--env', '--timeout', '--max-size', '--port', '--env-file', '--volume', '--restart', '--memory', '--cpus',
  '--workdir', '--user', '--image', '--build', '--image-archive', '--binary', '--tail', '--since', '--node', '--disk',
  '--ssh-key', '--console-max-size', '--identity', '--known-hosts', '--packages', '--mode', '--agent-timeout', '--wait',
]);

/** Options whose value is a file on this host: forwarded to a node only as their contents. */
export const FILE_OPTIONS: ReadonlySet<string> = new Set(['--build', '--image-archive', '--binary', '--env-file', '--ssh-key']);

export type Route =
  /** Not about one project (or not routable): run here. */
  | { kind: 'local' }
  /** `project create NAME … --node N…`: create it on those nodes; `args` without the --node options. */
  | { kind: 'create'; project: string; nodes: string[]; args: string[] }
  /** A command on project (or project VM) `project`; `node` when `--node N` picked one; `args` without it. */
  | { kind: 'project'; project: string; node?: string; args: string[] };

/** The words that are not options or option values, with their index. */
function positionals(args: readonly string[], from: number): Array<{ word: string; at: number }> {
  const out: Array<{ word: string; at: number }> = [];
  for (let i = from; i < args.length; i++) {
    const a = args[i]!;
    if (a === '--') break;
    if (a.startsWith('-') && a !== '-') {
      if (!a.includes('=') && VALUE_OPTIONS.has(a)) i++;
      continue;
    }
    out.push({ word: a, at: i });
  }
  return out;
}

/** Removes every `--node N` / `--node=N` before `--`; returns the rest and the values. */
export function takeNodeOptions(args: readonly string[]): { args: string[]; nodes: string[] } {
  const rest: string[] = [];
  const nodes: string[] = [];
  let passthrough = false;
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    if (!passthrough && a === '--') passthrough = true;
    if (!passthrough && a === '--node' && i + 1 < args.length) {
      nodes.push(args[++i]!);
      continue;
    }
    if (!passthrough && a.startsWith('--node=')) {
      nodes.push(a.slice('--node='.length));
      continue;
    }
    rest.push(a);
  }
  return { args: rest, nodes };
}

const PROJECT_SUBS = new Set(['info', 'start', 'stop', 'delete']);
const VM_SUBS = new Set(['start', 'stop', 'destroy', 'status', 'console', 'qmp', 'ping', 'info', 'exec']);
const APP_SUBS = new Set(['deploy', 'list', 'info', 'start', 'stop', 'restart', 'remove', 'logs', 'exec']);

/** The route of a goshipctl argv (without node and the script). Pure. */
export function routeOf(argv: readonly string[]): Route {
  const [group, sub] = argv;
  // goshipctl's own help runs here; a program's `-h` after `--` is the program's.
  const own = argv.indexOf('--') < 0 ? argv : argv.slice(0, argv.indexOf('--'));
  if (own.includes('--help') || own.includes('-h')) return { kind: 'local' };
  const { args, nodes } = takeNodeOptions(argv);
  const pos = positionals(args, 2);
  const first = pos[0]?.word;
  if (group === 'project' && sub === 'create' && first !== undefined && nodes.length > 0) return { kind: 'create', project: first, nodes, args };
  let project: string | undefined;
  if (group === 'project' && sub !== undefined && PROJECT_SUBS.has(sub)) project = first;
  else if (group === 'project' && sub === 'port') project = pos[1]?.word;
  else if (group === 'vm' && sub !== undefined && VM_SUBS.has(sub)) project = first;
  else if (group === 'vm' && sub === 'cp') project = pos.map((p) => /^([a-z0-9][a-z0-9-]{0,62}):/.exec(p.word)?.[1]).find((n) => n !== undefined);
  else if (group === 'app' && sub !== undefined && APP_SUBS.has(sub)) project = first;
  if (project === undefined) return { kind: 'local' };
  return { kind: 'project', project, ...(nodes.length > 0 ? { node: nodes[0]! } : {}), args };
}

/**
 * The file options of a command line bound for a node: each as its flag and
 * the local path, or undefined when there is none. Pure.
 */
export function fileOptions(args: readonly string[]): Array<{ flag: string; path: string; at: number }> {
  const out: Array<{ flag: string; path: string; at: number }> = [];
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    if (a === '--') break;
    const eq = a.indexOf('=');
    const flag = eq > 0 ? a.slice(0, eq) : a;
    if (!FILE_OPTIONS.has(flag)) continue;
    if (eq > 0) out.push({ flag, path: a.slice(eq + 1), at: i });
    else if (i + 1 < args.length) out.push({ flag, path: args[++i]!, at: i - 1 });
  }
  return out;
}

/**
 * A local file (or directory) a command bound for a node names, which must be
 * staged on the node first: `file` and `dir` are sent before the command
 * (`--binary`, `--image-archive`, `--ssh-key`; `--build`; the local side of an
 * upload `vm cp`), `fetch` is brought back after it (the local side of a
 * download `vm cp`). `at` and `width` say which words of the argv to replace
 * with the path on the node (`--flag PATH` is 2 words, `--flag=PATH` and a
 * `vm cp` operand 1). `--env-file` is not here: it is sent as `--env` words.
 */
export interface NodeFile {
  kind: 'file' | 'dir' | 'fetch';
  path: string;
  flag?: string;
  at: number;
  width: 1 | 2;
}

/** The files `args` (a command for a node) names on this host. Pure. */
export function nodeFiles(args: readonly string[]): NodeFile[] {
  const out: NodeFile[] = fileOptions(args).map((f) => ({ kind: f.flag === '--build' ? 'dir' : 'file', path: f.path, flag: f.flag, at: f.at, width: args[f.at]!.includes('=') ? 1 : 2 }));
  if (args[0] === 'vm' && args[1] === 'cp') {
    const ops = positionals(args, 2);
    const remote = ops.findIndex((p) => /^[a-z0-9][a-z0-9-]{0,62}:/.test(p.word));
    // `-` is goshipctl's stdin or stdout, which pass through ssh as they are.
    if (ops.length === 2 && remote >= 0 && ops[1 - remote]!.word !== '-') {
      const local = ops[1 - remote]!;
      out.push({ kind: remote === 0 ? 'fetch' : 'file', path: local.word, at: local.at, width: 1 });
    }
  }
  return out.sort((a, b) => a.at - b.at);
}
