/**
 * Which project a goshipctl command line is about, so that a command on a
 * project placed on another node runs there, and which nodes a command given
 * `--node` runs on (`project create`, the image commands) (src/cli/route.ts,
 * src/runtime/nodes.ts).
 *
 * One grammar: the cac commands themselves. `grammarOf` reads the registered
 * commands (src/cli/programs.ts) into a plain `Grammar`: per command, the
 * options that take a value (`<…>` or `[…]` in their name, as cac reads
 * them) and which positional names the project. A group says which
 * placeholder means a project (`<name>` in `vm start <name>`, `<project>` in
 * `app logs <project> <app>`), and its commands file says, next to the
 * registrations, what a name alone does not (`project create`, `vm cp`, the
 * options that name a file on this host): a `GroupRouting`.
 *
 * `routeOf` and the rest are pure: the grammar and the argv in, a decision
 * out. Options that take a value are skipped with it, so `vm exec --cwd /x web
 * -- ls` finds `web`; the command is the first positional after the group, as
 * cac matches it.
 */
import type { CAC } from 'cac';

/** What a command's placeholder alone does not say about routing it. */
export interface CommandRouting {
  /**
   * `create`: the placeholder names a project to make, on the nodes its
   * `--node` options name (without one, here); `copy`: an operand
   * `NAME:PATH` names it (`vm cp`); `nodes`: about no project, it runs on
   * the nodes its `--node` options name (without one, here: `image warm`);
   * `local`: never routed, whatever its positionals are called.
   */
  route?: 'create' | 'copy' | 'nodes' | 'local';
  /**
   * The image the command needs on a node, which gets it from here first
   * when it lacks it: named by `--image` (default `default`), or by the
   * command's first operand (default `default`).
   */
  image?: '--image' | 'operand';
  /** Its options whose value is a path on this host: sent to the node first (`dir`: a directory, as a tar stream). */
  files?: Record<string, 'file' | 'dir'>;
}

/** How one group's commands name their project; declared in its commands file. */
export interface GroupRouting {
  /** The placeholder of a project (or project VM) name: a command with a positional of that name is about that project. */
  project?: string;
  /** By command name: what the placeholder does not say. */
  commands?: Record<string, CommandRouting>;
}

/** How one command's line is read. */
export interface CommandGrammar {
  /** Its flags (`--cwd`, `-c`) that take the next word as their value; the global ones included. */
  values: string[];
  /**
   * `project`/`create`: the positional after the command's name at `at`
   * names it; `copy`: an operand `NAME:PATH`; `nodes`: the nodes its
   * `--node` options name; `local`: runs here.
   */
  route: { kind: 'project' | 'create'; at: number } | { kind: 'copy' } | { kind: 'nodes' } | { kind: 'local' };
  /** What names the image it needs on a node (CommandRouting's `image`). */
  image?: '--image' | 'operand';
}

/** goshipctl's command lines as routing reads them: plain data, derived by `grammarOf`. */
export interface Grammar {
  /** By group (`vm`), then command name or alias (`exec`). */
  commands: Record<string, Record<string, CommandGrammar>>;
  /** The options (of any command) whose value is a path on this host. */
  files: Record<string, 'file' | 'dir'>;
}

/** An option's flags as typed: `-f, --follow` → `-f`, `--follow` (cac's own reading of its name). */
function flagsOf(rawName: string): string[] {
  return rawName
    .replace(/[<[].*/, '')
    .split(',')
    .map((f) => f.trim())
    .filter((f) => f !== '');
}

/**
 * The grammar of the given groups' cac programs (built, never run) and their
 * routing. Throws when the routing names a command, a placeholder or a file
 * option that is not registered: a mistake in the table, which the unit test
 * that builds the real one finds.
 */
export function grammarOf(groups: Record<string, { cli: CAC; routing?: GroupRouting | undefined }>): Grammar {
  const grammar: Grammar = { commands: {}, files: {} };
  for (const [group, { cli, routing }] of Object.entries(groups)) {
    const wrong = (what: string): Error => new Error(`goshipctl ${group}: routing: ${what}`);
    const table: Record<string, CommandGrammar> = {};
    const globalValues = cli.globalCommand.options.filter((o) => !o.isBoolean).flatMap((o) => flagsOf(o.rawName));
    for (const name of Object.keys(routing?.commands ?? {})) {
      if (!cli.commands.some((c) => c.name === name)) throw wrong(`${name} is not a command`);
    }
    for (const cmd of cli.commands) {
      const own = routing?.commands?.[cmd.name] ?? {};
      const values = [...globalValues, ...cmd.options.filter((o) => !o.isBoolean).flatMap((o) => flagsOf(o.rawName))];
      const at = routing?.project === undefined ? -1 : cmd.args.findIndex((a) => a.value === routing.project);
      let route: CommandGrammar['route'];
      if (own.route === 'local' || (own.route === undefined && at < 0)) route = { kind: 'local' };
      else if (own.route === 'copy') route = { kind: 'copy' };
      else if (own.route === 'nodes') route = { kind: 'nodes' };
      else if (at < 0) throw wrong(`${cmd.name} has no <${routing?.project ?? '?'}> to create`);
      else route = { kind: own.route === 'create' ? 'create' : 'project', at };
      for (const [flag, kind] of Object.entries(own.files ?? {})) {
        if (!values.includes(flag)) throw wrong(`${cmd.name} ${flag} is not an option of it that takes a value`);
        if (grammar.files[flag] !== undefined && grammar.files[flag] !== kind) throw wrong(`${flag} is a ${grammar.files[flag]} elsewhere, a ${kind} in ${cmd.name}`);
        grammar.files[flag] = kind;
      }
      if (own.image === '--image' && !values.includes('--image')) throw wrong(`${cmd.name} has no --image option`);
      if (own.image === 'operand' && cmd.args.length === 0) throw wrong(`${cmd.name} has no operand to name an image`);
      for (const n of [cmd.name, ...cmd.aliasNames]) table[n] = { values, route, ...(own.image ? { image: own.image } : {}) };
    }
    grammar.commands[group] = table;
  }
  return grammar;
}

export type Route =
  /** Not about one project (or not routable): run here. */
  | { kind: 'local' }
  /** `project create NAME … --node N…`: create it on those nodes; `args` without the --node options; `image` it needs there. */
  | { kind: 'create'; project: string; nodes: string[]; args: string[]; image: string }
  /** A command about no project, `--node N…` given: run it on those nodes; `image` when it needs one there. */
  | { kind: 'nodes'; nodes: string[]; args: string[]; image?: string }
  /** A command on project (or project VM) `project`; `node` when `--node N` picked one; `args` without it. */
  | { kind: 'project'; project: string; node?: string; args: string[] };

/** The words that are not options or option values, with their index. */
function positionals(values: readonly string[], args: readonly string[], from: number): Array<{ word: string; at: number }> {
  const out: Array<{ word: string; at: number }> = [];
  for (let i = from; i < args.length; i++) {
    const a = args[i]!;
    if (a === '--') break;
    if (a.startsWith('-') && a !== '-') {
      if (!a.includes('=') && values.includes(a)) i++;
      continue;
    }
    out.push({ word: a, at: i });
  }
  return out;
}

/**
 * The command of `args` (`GROUP COMMAND …`) and its positionals after the
 * command's name. As cac does: each command reads the line with its own
 * options, and the one whose name is then the first positional is it.
 */
function commandOf(grammar: Grammar, args: readonly string[]): { cmd: CommandGrammar; operands: Array<{ word: string; at: number }> } | undefined {
  const group = args[0] === undefined ? undefined : grammar.commands[args[0]];
  if (group === undefined) return undefined;
  for (const [name, cmd] of Object.entries(group)) {
    const pos = positionals(cmd.values, args, 1);
    if (pos[0]?.word === name) return { cmd, operands: pos.slice(1) };
  }
  return undefined;
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

/** A `vm cp` operand on a VM: `NAME:PATH`. */
const VM_OPERAND = /^([a-z0-9][a-z0-9-]{0,62}):/;

/** The image a command line names by `--image X` (before `--`) or by its first operand; `default` without. */
function imageOf(by: '--image' | 'operand', args: readonly string[], operands: ReadonlyArray<{ word: string }>): string {
  if (by === 'operand') return operands[0]?.word ?? 'default';
  for (let i = 0; i < args.length; i++) {
    if (args[i] === '--') break;
    if (args[i] === '--image' && i + 1 < args.length) return args[i + 1]!;
    if (args[i]!.startsWith('--image=')) return args[i]!.slice('--image='.length);
  }
  return 'default';
}

/** The route of a goshipctl argv (without node and the script) under `grammar`. Pure. */
export function routeOf(grammar: Grammar, argv: readonly string[]): Route {
  // goshipctl's own help runs here; a program's `-h` after `--` is the program's.
  const own = argv.indexOf('--') < 0 ? argv : argv.slice(0, argv.indexOf('--'));
  if (own.includes('--help') || own.includes('-h')) return { kind: 'local' };
  const { args, nodes } = takeNodeOptions(argv);
  const found = commandOf(grammar, args);
  if (found === undefined) return { kind: 'local' };
  const { cmd, operands } = found;
  // Without --node these run here.
  if ((cmd.route.kind === 'create' || cmd.route.kind === 'nodes') && nodes.length === 0) return { kind: 'local' };
  const image = cmd.image === undefined ? undefined : imageOf(cmd.image, args, operands);
  if (cmd.route.kind === 'nodes') return { kind: 'nodes', nodes, args, ...(image === undefined ? {} : { image }) };
  let project: string | undefined;
  if (cmd.route.kind === 'create') {
    project = operands[cmd.route.at]?.word;
    return project === undefined ? { kind: 'local' } : { kind: 'create', project, nodes, args, image: image ?? 'default' };
  }
  if (cmd.route.kind === 'project') project = operands[cmd.route.at]?.word;
  else if (cmd.route.kind === 'copy') project = operands.map((p) => VM_OPERAND.exec(p.word)?.[1]).find((n) => n !== undefined);
  if (project === undefined) return { kind: 'local' };
  return { kind: 'project', project, ...(nodes.length > 0 ? { node: nodes[0]! } : {}), args };
}

/**
 * The file options of a command line bound for a node: each as its flag and
 * the local path, or undefined when there is none. Pure.
 */
export function fileOptions(grammar: Grammar, args: readonly string[]): Array<{ flag: string; path: string; at: number }> {
  const out: Array<{ flag: string; path: string; at: number }> = [];
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    if (a === '--') break;
    const eq = a.indexOf('=');
    const flag = eq > 0 ? a.slice(0, eq) : a;
    if (grammar.files[flag] === undefined) continue;
    if (eq > 0) out.push({ flag, path: a.slice(eq + 1), at: i });
    else if (i + 1 < args.length) out.push({ flag, path: args[++i]!, at: i - 1 });
  }
  return out;
}

/**
 * A local file (or directory) a command bound for a node names, which must be
 * staged on the node first: `file` and `dir` are sent before the command
 * (`--binary`, `--image-archive`, `--ssh-key`, `--env-file`; `--build`; the
 * local side of an upload `vm cp`), `fetch` is brought back after it (the
 * local side of a download `vm cp`). `at` and `width` say which words of the
 * argv to replace with the path on the node (`--flag PATH` is 2 words,
 * `--flag=PATH` and a `vm cp` operand 1).
 */
export interface NodeFile {
  kind: 'file' | 'dir' | 'fetch';
  path: string;
  flag?: string;
  at: number;
  width: 1 | 2;
}

/** The files `args` (a command for a node) names on this host, under `grammar`. Pure. */
export function nodeFiles(grammar: Grammar, args: readonly string[]): NodeFile[] {
  const out: NodeFile[] = fileOptions(grammar, args).map((f) => ({ kind: grammar.files[f.flag]!, path: f.path, flag: f.flag, at: f.at, width: args[f.at]!.includes('=') ? 1 : 2 }));
  const found = commandOf(grammar, args);
  if (found?.cmd.route.kind === 'copy') {
    const ops = found.operands;
    const remote = ops.findIndex((p) => VM_OPERAND.test(p.word));
    // `-` is goshipctl's stdin or stdout, which pass through ssh as they are.
    if (ops.length === 2 && remote >= 0 && ops[1 - remote]!.word !== '-') {
      const local = ops[1 - remote]!;
      out.push({ kind: remote === 0 ? 'fetch' : 'file', path: local.word, at: local.at, width: 1 });
    }
  }
  return out.sort((a, b) => a.at - b.at);
}
