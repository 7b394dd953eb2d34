/**
 * Commands on a project placed on another node run there: the node's own
 * goshipctl, over ssh, with the same arguments and the user's stdin, stdout,
 * stderr and exit code (src/runtime/nodes.ts); so do the image commands given
 * `--node` (a node's images and templates are its own). Everything else runs
 * here.
 *
 * A file argument names a file on this host, which the node cannot read:
 * each (programs, archives, SSH keys, env files, build contexts, the local
 * side of `vm cp`) is staged in a private temporary directory on the node,
 * and a download is brought back. Values never travel as argv words.
 */
import { createReadStream } from 'node:fs';
import { readFile, rename, rm, stat } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { Writable } from 'node:stream';
import { GoshipError } from '../errors.ts';
import { buildContextStream, openPartial, parseEnvFile, type Runtime } from '../runtime/index.ts';
import type { Output } from './output.ts';
import { fileOptions, nodeFiles, routeOf, type Grammar } from './routing.ts';

type Node = Awaited<ReturnType<Runtime['nodes']['node']>>;
type ForwardOptions = Parameters<Runtime['nodes']['forward']>[2];

/** The node gets image `name` from here when it lacks it (checksummed on arrival). */
async function ensureImage(rt: Runtime, node: Node, name: string, out: Output): Promise<void> {
  const has = await rt.nodes.run(node, ['image', 'info', name, '--json'], { timeoutMs: 60_000 });
  if (has.code !== 3) return;
  const info = await rt.images.info(name);
  const p = out.progress(`pushing image ${name} to ${node.name}`);
  const pushed = await rt.nodes.pushImage(node.name, info.dir, name).finally(() => p.done());
  if (pushed.code !== 0) throw new GoshipError('EIMAGE_IMPORT', `node ${node.name}: image push of ${name} failed: ${pushed.stderr.trim().slice(0, 400)}`);
}

/**
 * Checks each --env-file here, where it is read, before anything moves. It
 * goes to the node as a file (staged in the private directory, like the
 * others), never expanded into --env words: `ps` on either host would show
 * the values.
 */
async function checkEnvFiles(grammar: Grammar, args: readonly string[]): Promise<void> {
  for (const f of fileOptions(grammar, args).filter((x) => x.flag === '--env-file')) {
    const text = await readFile(f.path, 'utf8').catch((cause: unknown) => {
      throw new GoshipError('EREAD', `--env-file: cannot read ${f.path}`, { cause });
    });
    const parsed = parseEnvFile(text);
    if (parsed.issues.length > 0) throw new GoshipError('EINVALID', `--env-file ${f.path}: ${parsed.issues.map((i) => `${i.path}: ${i.message}`).join('; ')}`);
  }
}

/** A file name that is safe as the last part of a path on the node (busybox runs by its name: it is kept when it can be). */
const safeName = (path: string): string => {
  const b = basename(path);
  return /^[A-Za-z0-9._+-]{1,128}$/.test(b) && b !== '.' && b !== '..' ? b : 'file';
};

/**
 * The argv for a node, its local files staged there: each sent (a directory
 * as a tar stream) into a private temporary directory on the node
 * (`mktemp -d`) and its path put in the argv; a download `vm cp` writes there
 * and the file is brought back after. `done` fetches, then removes the
 * directory on the node.
 */
async function stageOnNode(rt: Runtime, grammar: Grammar, node: Node, args: readonly string[], out: Output): Promise<{ argv: string[]; done: (code: number) => Promise<void> }> {
  await checkEnvFiles(grammar, args);
  let argv = [...args];
  const files = nodeFiles(grammar, argv);
  if (files.length === 0) return { argv, done: async () => undefined };
  const modes = new Map<number, string>();
  for (const [i, f] of files.entries()) {
    if (f.kind === 'fetch') continue;
    const st = await stat(f.path).catch((cause: unknown) => {
      throw new GoshipError('EREAD', `${f.flag ?? 'vm cp'}: cannot read ${f.path}`, { cause });
    });
    if (f.kind === 'dir' ? !st.isDirectory() : !st.isFile()) throw new GoshipError('EINVALID', `${f.flag ?? 'vm cp'}: ${f.path} is not a ${f.kind === 'dir' ? 'directory' : 'regular file'}`);
    modes.set(i, (st.mode & 0o777).toString(8));
  }
  const made = await rt.nodes.run(node, ['mktemp', '-d', '-t', 'goship-stage.XXXXXXXXXX'], { raw: true, timeoutMs: 60_000 });
  const tmp = made.stdout.trim();
  if (made.code !== 0 || !/^\/[A-Za-z0-9._/-]+$/.test(tmp)) throw new GoshipError('ENODE_STAGE', `node ${node.name}: mktemp -d failed there: ${made.stderr.trim().slice(0, 300)}`);
  const remove = async (): Promise<void> => {
    await rt.nodes.run(node, ['rm', '-rf', '--', tmp], { raw: true, timeoutMs: 60_000 }).catch(() => undefined);
  };
  const fetches: Array<{ local: string; remote: string }> = [];
  try {
    const words = [...argv];
    for (const [i, f] of files.entries()) {
      const remote = `${tmp}/${i}/${safeName(f.path)}`;
      if (f.kind === 'fetch') {
        await rt.nodes.run(node, ['mkdir', '-p', '--', `${tmp}/${i}`], { raw: true, timeoutMs: 60_000 });
        const isDir = await stat(f.path).then((st) => st.isDirectory(), () => false);
        fetches.push({ local: isDir ? join(f.path, safeName(remoteSource(argv))) : f.path, remote });
      } else {
        const p = out.progress(`sending ${f.path} to ${node.name}`);
        // A build directory goes as its .dockerignore says, here already: what it excludes never reaches the node either.
        const input = f.kind === 'dir' ? await buildContextStream(f.path) : createReadStream(f.path);
        const mode = modes.get(i)!;
        const script = f.kind === 'dir' ? 'mkdir -p "$1" && tar -x -f - -C "$1"' : 'mkdir -p "$(dirname "$1")" && cat > "$1" && chmod "$2" "$1"';
        const r = await rt.nodes.run(node, ['sh', '-c', script, 'sh', remote, mode], { raw: true, input, timeoutMs: 3_600_000 }).finally(() => p.done());
        if (r.code !== 0) throw new GoshipError('ENODE_STAGE', `node ${node.name}: could not receive ${f.path}: ${r.stderr.trim().slice(0, 300)}`);
      }
      const value = f.width === 1 && f.flag !== undefined ? `${f.flag}=${remote}` : remote;
      words.splice(f.at + (f.width === 2 ? 1 : 0), 1, value);
    }
    argv = words;
  } catch (err) {
    await remove();
    throw err;
  }
  return {
    argv,
    done: async (code) => {
      try {
        if (code !== 0) return;
        for (const f of fetches) {
          // Never a name another user could plant a link at (it was the PID): a random one, made exclusively.
          const { path: part, handle } = await openPartial(f.local);
          const sink = handle.createWriteStream();
          const c = await rt.nodes.forward(node, ['cat', '--', f.remote], { raw: true, stdout: sink, stderr: process.stderr });
          await new Promise<void>((res, rej) => sink.end((e?: Error | null) => (e ? rej(e) : res())));
          if (c !== 0) {
            await rm(part, { force: true });
            throw new GoshipError('ENODE_STAGE', `node ${node.name}: could not bring ${f.local} back (cat exited ${c})`);
          }
          await rename(part, f.local);
        }
      } finally {
        await remove();
      }
    },
  };
}

/** The guest path of a download `vm cp NAME:PATH LOCAL`. */
function remoteSource(argv: readonly string[]): string {
  const w = argv.find((a) => /^[a-z0-9][a-z0-9-]{0,62}:/.test(a));
  return w ? w.slice(w.indexOf(':') + 1) : 'file';
}

/** What `--json` keeps of one node's output when a command runs on several: 16 MiB. */
const GATHER_LIMIT = 16 * 1024 * 1024;

/**
 * The routed command on each node in turn (staged files sent first, brought
 * back after), the first failing exit code the result. On several nodes a
 * human gets a `== node NAME ==` header before each; `--json` gets one
 * document, `[{node, code, result}]`, each node's JSON parsed into `result`
 * (its text when it is not JSON, null past GATHER_LIMIT with `error`), so a
 * script reads one value, not one per node.
 */
async function onEach(
  rt: Runtime,
  grammar: Grammar,
  nodes: readonly Node[],
  args: readonly string[],
  out: Output,
  stdio: Omit<ForwardOptions, 'raw'>,
  hooks: { before?: (node: Node) => Promise<void>; after?: (node: Node, code: number) => Promise<void> },
): Promise<number> {
  const gather = nodes.length > 1 && out.json;
  const gathered: Array<{ node: string; code: number; result: unknown; error?: string }> = [];
  let code = 0;
  for (const node of nodes) {
    await hooks.before?.(node);
    if (nodes.length > 1 && !out.json) process.stderr.write(`== node ${node.name} ==\n`);
    const chunks: Buffer[] = [];
    let size = 0;
    const stdout = gather
      ? new Writable({
          write(chunk: Buffer, _enc, cb) {
            size += chunk.length;
            if (size <= GATHER_LIMIT) chunks.push(chunk);
            cb();
          },
        })
      : stdio.stdout;
    const staged = await stageOnNode(rt, grammar, node, args, out);
    const c = await rt.nodes.forward(node, staged.argv, { ...stdio, stdout }).catch(async (err: unknown) => {
      await staged.done(1);
      throw err;
    });
    await staged.done(c);
    await hooks.after?.(node, c);
    if (gather) gathered.push({ node: node.name, code: c, ...gatheredResult(Buffer.concat(chunks).toString('utf8'), size) });
    if (c !== 0 && code === 0) code = c;
  }
  if (gather) process.stdout.write(`${JSON.stringify(gathered, null, 2)}\n`);
  return code;
}

/** One node's `--json` output as a value: parsed, its text when it is not JSON (nothing: null), or null with why past GATHER_LIMIT. */
export function gatheredResult(text: string, size: number): { result: unknown; error?: string } {
  if (size > GATHER_LIMIT) return { result: null, error: `output of ${size} bytes, over the ${GATHER_LIMIT} kept of each node` };
  if (text.trim() === '') return { result: null };
  try {
    return { result: JSON.parse(text) as unknown };
  } catch {
    return { result: text };
  }
}

/**
 * Runs `args` on the nodes that hold its project, when it is about such a
 * project, or on the nodes its `--node` options name (`project create`,
 * `image warm`; the image it needs pushed first); `grammar`: its group's
 * commands, src/cli/routing.ts. Undefined when it runs here.
 */
export async function routeToNodes(args: readonly string[], grammar: Grammar, runtime: () => Promise<Runtime>, out: Output, signal: AbortSignal): Promise<number | undefined> {
  const route = routeOf(grammar, args);
  if (route.kind === 'local') return undefined;
  const rt = await runtime();
  const stdio = {
    ...(process.stdin.isTTY && !args.includes('-i') && !args.includes('--interactive') ? {} : { stdin: process.stdin }),
    stdout: process.stdout,
    stderr: process.stderr,
    signal,
  };

  if (route.kind === 'create') {
    const nodes = await Promise.all(route.nodes.map((n) => rt.nodes.node(n)));
    return onEach(rt, grammar, nodes, route.args, out, stdio, {
      before: async (node) => {
        await ensureImage(rt, node, route.image, out);
        // Recorded first: a create cut off here is found on the node by the next project list.
        await rt.nodes.place(node.name, route.project, true);
      },
    });
  }
  if (route.kind === 'nodes') {
    const nodes = await Promise.all(route.nodes.map((n) => rt.nodes.node(n)));
    const image = route.image;
    return onEach(rt, grammar, nodes, route.args, out, stdio, image === undefined ? {} : { before: (node) => ensureImage(rt, node, image, out) });
  }

  const placed = await rt.nodes.placement(route.project);
  if (placed.length === 0) {
    if (route.node !== undefined) throw new GoshipError('ENOTFOUND', `project ${route.project} is not on node ${route.node}`, { hint: 'goshipctl project list shows where each project is' });
    return undefined;
  }
  const targets = route.node === undefined ? placed : placed.filter((n) => n.name === route.node);
  if (targets.length === 0) throw new GoshipError('ENOTFOUND', `project ${route.project} is not on node ${route.node}`, { hint: `it is on ${placed.map((n) => n.name).join(', ')}` });
  // vm exec and vm ping need only the VM's monitor: reached through ssh's forwarding, they run here, with no goshipctl started on the node.
  let forwardFailed = false;
  if (targets.length === 1 && route.node === undefined && args[0] === 'vm' && (args[1] === 'exec' || args[1] === 'ping')) {
    const f = await rt.nodes.monitorForward(targets[0]!, route.project);
    if (f && (await rt.vms.viaNode(route.project, f.local))) return undefined;
    await f?.drop();
    forwardFailed = f !== undefined;
  }
  return onEach(rt, grammar, targets, route.args, out, stdio, {
    after: async (node, c) => {
      // The node answered, its monitor's forward did not: the path recorded may be stale; the next command learns it again.
      if (forwardFailed) await rt.nodes.forgetMonitorSocket(node.name, route.project);
      if (c === 0 && args[0] === 'project' && args[1] === 'delete') await rt.nodes.place(node.name, route.project, false);
    },
  });
}
