/** goshipctl node …: other hosts' GoShips, over SSH. */
import type { CAC } from 'cac';
import type { NodeView } from '../../runtime/index.ts';
import { rawValue } from '../args.ts';
import { type CommandContext, bytes } from '../context.ts';
import { table } from '../output.ts';
import { VERSION } from '../version.ts';

function nodeJson(v: NodeView) {
  return { name: v.name, url: v.url, reachable: v.reachable ?? null, ...(v.error ? { error: v.error } : {}), ...(v.hint ? { hint: v.hint } : {}), report: v.report, projects: v.projects, knownHosts: v.knownHosts, hostKeys: v.hostKeys };
}

export function registerNode(cli: CAC, ctx: CommandContext): void {
  const a = ctx.argv;
  cli
    .command('add <name> <url>', 'add a node: another host with GoShip, reached over SSH (ssh://USER@HOST[:PORT])')
    .option('--identity <file>', 'the private key to log in with (else ssh picks one)')
    .option('--known-hosts <file>', "a known_hosts file to check the node's host key against (else GoShip records the key at this first contact and refuses a changed one later)")
    .option('--install', "copy this GoShip's CLI, monitor and agent to the node (~/.local/lib/goship) and use them there")
    .example('goshipctl node add box ssh://goship@192.168.1.20 --identity ~/.ssh/id_ed25519 --install')
    .action(async (name: string, url: string, o: { install?: boolean }) => {
      const rt = await ctx.runtime();
      const identity = rawValue(a, 'identity');
      const knownHosts = rawValue(a, 'known-hosts');
      const p = ctx.out.progress(`checking ${url}`);
      try {
        const v = await rt.nodes.add(
          { name, url, ...(identity ? { identity } : {}), ...(knownHosts ? { knownHosts } : {}), ...(o.install ? { install: true } : {}), onProgress: (line) => p.update(line) },
          VERSION,
        );
        p.done();
        ctx.out.result(nodeJson(v), () =>
          [
            `node ${v.name} added: ${v.url}, GoShip ${v.report?.goship}, ${v.report?.cpus} CPUs, ${bytes(v.report?.memoryBytes)}, accel ${v.report?.accel}`,
            ...(v.hostKeys.length > 0 ? [`host key recorded in ${v.knownHosts}: ${v.hostKeys.join(', ')} (compare it with the node's: ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub there)`] : []),
          ].join('\n'),
        );
      } catch (err) {
        p.done();
        throw err;
      }
    });

  cli.command('list', 'list nodes, each checked now: reachable, accelerator, CPUs, memory, projects').action(async () => {
    const rt = await ctx.runtime();
    const views = await rt.nodes.list(VERSION);
    ctx.out.result(views.map(nodeJson), () =>
      views.length === 0
        ? 'no nodes besides this host (add one: goshipctl node add NAME ssh://USER@HOST)'
        : table(
            ['NAME', 'ADDRESS', 'REACHABLE', 'ACCEL', 'CPUS', 'MEMORY', 'PROJECTS'],
            views.map((v) => [v.name, v.url, v.reachable ? 'yes' : `no: ${v.error ?? '?'}`, v.report?.accel ?? '-', String(v.report?.cpus ?? '-'), bytes(v.report?.memoryBytes), v.projects.join(',') || '-']),
          ),
    );
  });

  cli.command('info <name>', 'one node: address, GoShip, accelerator, CPUs, memory, projects').action(async (name: string) => {
    const rt = await ctx.runtime();
    const v = await rt.nodes.info(name, VERSION);
    ctx.out.result(nodeJson(v), () =>
      [
        `node      ${v.name}  ${v.url}`,
        `reachable ${v.reachable ? 'yes' : `no: ${v.error ?? '?'}${v.hint ? `\nhint      ${v.hint}` : ''}`}`,
        `goship    ${v.report?.goship ?? '-'} (protocol ${v.report?.protocol ?? '-'})`,
        `accel     ${v.report ? `${v.report.accel}: ${v.report.accelReason}` : '-'}`,
        `host      ${v.report ? `${v.report.cpus} CPUs, ${bytes(v.report.memoryBytes)}` : '-'}`,
        `projects  ${v.projects.join(', ') || '-'}`,
        `host key  ${v.hostKeys.join(', ') || '-'} (known_hosts ${v.knownHosts ?? '~/.ssh/known_hosts'})`,
        `checked   ${v.report?.checkedAt ?? '-'}`,
      ].join('\n'),
    );
  });

  cli
    .command('remove <name>', 'forget a node (refused while projects live there)')
    .option('--force', 'forget it and its projects here; nothing on the node changes')
    .action(async (name: string, o: { force?: boolean }) => {
      const rt = await ctx.runtime();
      await rt.nodes.remove(name, { force: o.force === true });
      ctx.out.result({ name, removed: true }, () => `node ${name} removed`);
    });
}
