/**
 * Commands on a project placed on another node run there: the node's own
 * goshipctl, over ssh, with the same arguments and the user's stdin, stdout,
 * stderr and exit code (src/runtime/nodes.ts). Everything else runs here.
 *
 * A file argument names a file on this host, which the node cannot read:
 * `--env-file` is sent as its `--env` lines; the others (build contexts,
 * archives, programs, `vm cp`) are refused with ENOTSUP for now.
 */
import { readFile } from 'node:fs/promises';
import { GoshipError } from '../errors.ts';
import { fileOptions, parseEnvFile, routeOf, type Runtime } from '../runtime/index.ts';
import type { Output } from './output.ts';

/** The image a `project create` argv names (`--image X`), or the default. */
function imageOf(args: readonly string[]): string {
  for (let i = 0; i < args.length; i++) {
    if (args[i] === '--') break;
    if (args[i] === '--image' && i + 1 < args.length) return args[i + 1]!;
    if (args[i]!.startsWith('--image=')) return args[i]!.slice('--image='.length);
  }
  return 'default';
}

/** The argv for a node: --env-file expanded into --env; other file arguments refused. */
async function forNode(args: readonly string[], node: string): Promise<string[]> {
  const files = fileOptions(args);
  const refused = files.filter((f) => f.flag !== '--env-file');
  if (refused.length > 0 || (args[0] === 'vm' && args[1] === 'cp')) {
    const what = refused.length > 0 ? refused.map((f) => `${f.flag} ${f.path}`).join(', ') : 'vm cp';
    throw new GoshipError('ENOTSUP', `node ${node}: ${what} names a file on this host, and sending files to a node is not built yet`, {
      hint: `copy the file to the node first (scp), then run the command there: ssh to the node and use its goshipctl`,
    });
  }
  const out = [...args];
  for (const f of files.reverse()) {
    const text = await readFile(f.path, 'utf8').catch((cause: unknown) => {
      throw new GoshipError('EREAD', `--env-file: cannot read ${f.path}`, { cause });
    });
    const parsed = parseEnvFile(text);
    if (parsed.issues.length > 0) throw new GoshipError('EINVALID', `--env-file ${f.path}: ${parsed.issues.map((i) => `${i.path}: ${i.message}`).join('; ')}`);
    const width = out[f.at]!.includes('=') ? 1 : 2;
    out.splice(f.at, width, ...parsed.env.flatMap((kv) => ['--env', kv]));
  }
  return out;
}

/**
 * Runs `args` on the nodes that hold its project, when it is about such a
 * project; undefined when it runs here.
 */
export async function routeToNodes(args: readonly string[], runtime: () => Promise<Runtime>, out: Output, signal: AbortSignal): Promise<number | undefined> {
  const route = routeOf(args);
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
    const image = imageOf(route.args);
    const argv = await forNode(route.args, nodes[0]!.name);
    let code = 0;
    for (const node of nodes) {
      // The node gets the image from here when it lacks it (checksummed on arrival).
      const has = await rt.nodes.run(node, ['image', 'info', image, '--json'], { timeoutMs: 60_000 });
      if (has.code === 3) {
        const info = await rt.images.info(image);
        const p = out.progress(`pushing image ${image} to ${node.name}`);
        const pushed = await rt.nodes.pushImage(node.name, info.dir, image).finally(() => p.done());
        if (pushed.code !== 0) throw new GoshipError('EIMAGE_IMPORT', `node ${node.name}: image push of ${image} failed: ${pushed.stderr.trim().slice(0, 400)}`);
      }
      // Recorded first: a create cut off here is found on the node by the next project list.
      await rt.nodes.place(node.name, route.project, true);
      if (nodes.length > 1 && !out.json) process.stderr.write(`== node ${node.name} ==\n`);
      const c = await rt.nodes.forward(node, argv, stdio);
      if (c !== 0 && code === 0) code = c;
    }
    return code;
  }

  const placed = await rt.nodes.placement(route.project);
  if (placed.length === 0) {
    if (route.node !== undefined) throw new GoshipError('ENOTFOUND', `project ${route.project} is not on node ${route.node}`, { hint: 'goshipctl project list shows where each project is' });
    return undefined;
  }
  const targets = route.node === undefined ? placed : placed.filter((n) => n.name === route.node);
  if (targets.length === 0) throw new GoshipError('ENOTFOUND', `project ${route.project} is not on node ${route.node}`, { hint: `it is on ${placed.map((n) => n.name).join(', ')}` });
  const argv = await forNode(route.args, targets[0]!.name);
  let code = 0;
  for (const node of targets) {
    if (targets.length > 1 && !out.json) process.stderr.write(`== node ${node.name} ==\n`);
    const c = await rt.nodes.forward(node, argv, stdio);
    if (c === 0 && args[0] === 'project' && args[1] === 'delete') await rt.nodes.place(node.name, route.project, false);
    if (c !== 0 && code === 0) code = c;
  }
  return code;
}
