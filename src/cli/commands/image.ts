/** goshipctl image …: base images (built from Debian packages, or imported). */
import type { CAC } from 'cac';
import type { ImageInfo, TemplateInfo } from '../../runtime/index.ts';
import { intOption, rawValue, rawValues, secondsOption } from '../args.ts';
import { type CommandContext, bytes } from '../context.ts';
import { table } from '../output.ts';
import type { GroupRouting } from '../routing.ts';

function imageJson(i: ImageInfo) {
  return {
    name: i.name,
    dir: i.dir,
    base: i.base,
    kernel: i.kernel ?? null,
    initrd: i.initrd ?? null,
    cmdline: i.cmdline ?? null,
    sizeBytes: i.sizeBytes,
    sha256: i.sha256,
    manifest: i.manifest,
  };
}

function templateJson(t: TemplateInfo) {
  return { name: t.name, image: t.image, dir: t.dir, cpus: t.cpus, memoryBytes: t.memoryBytes, diskBytes: t.diskBytes, sizeBytes: t.sizeBytes, stateBytes: t.stateBytes, qemuVersion: t.qemuVersion, imageKey: t.imageKey, createdAt: t.createdAt, bootMs: t.bootMs, saveMs: t.saveMs };
}

/**
 * Which of these commands run on a node (src/cli/routing.ts): given `--node`,
 * warm, list, info and remove act on that node's images and templates; warm
 * first pushes the image it names when the node lacks it.
 */
export const imageRouting: GroupRouting = { commands: { warm: { route: 'nodes', image: 'operand' }, list: { route: 'nodes' }, info: { route: 'nodes' }, remove: { route: 'nodes' } } };

export function registerImage(cli: CAC, ctx: CommandContext): void {
  const a = ctx.argv;

  cli
    .command('build [name]', 'build a base image from Debian packages with mmdebstrap (cached: same inputs, no rebuild)')
    .option('--packages <list>', 'extra Debian packages, comma-separated (repeatable)')
    .option('--force', 'rebuild even when an image with the same inputs exists')
    .example('goshipctl image build')
    .example('goshipctl image build tools --packages git,make')
    .action(async (name: string | undefined, o: { force?: boolean }) => {
      const rt = await ctx.runtime();
      const extra = rawValues(a, 'packages').flatMap((p) => p.split(',')).map((p) => p.trim()).filter(Boolean);
      const p = ctx.out.progress(`building image ${name ?? 'default'}`);
      try {
        const info = await rt.images.build({ ...(name ? { name } : {}), extraPackages: extra, force: Boolean(o.force), onProgress: (e) => p.update(`image ${name ?? 'default'}: ${e.message}`) });
        p.done();
        ctx.out.result(imageJson(info), () => `image ${info.name}: ${info.base} (${bytes(info.sizeBytes)}, sha256 ${info.sha256.slice(0, 16)}…)`);
      } catch (err) {
        p.done();
        throw err;
      }
    });

  cli.command('list', 'list base images').action(async () => {
    const rt = await ctx.runtime();
    const entries = await rt.images.list();
    ctx.out.result(
      entries.map((e) => (e.ok ? { ok: true, ...imageJson(e) } : { ok: false, name: e.name, dir: e.dir, error: e.error.toJSON() })),
      () =>
        entries.length === 0
          ? 'no images (build the default one: goshipctl image build)'
          : table(
              ['NAME', 'SIZE', 'BOOT', 'BUILT', 'SHA256'],
              entries.map((e) =>
                e.ok
                  ? [e.name, bytes(e.sizeBytes), e.kernel ? 'kernel' : 'firmware', e.manifest.builtAt, `${e.sha256.slice(0, 12)}…`]
                  : [e.name, '-', '-', '-', `broken: ${e.error.message}`],
              ),
            ),
    );
  });

  cli
    .command('info <name>', 'one image: packages, size, sha256, build date, boot files')
    .option('--verify', 'recompute the sha256 of base.qcow2 and compare it with the manifest')
    .action(async (name: string, o: { verify?: boolean }) => {
      const rt = await ctx.runtime();
      const i = await rt.images.info(name, { verify: Boolean(o.verify) });
      const m = i.manifest;
      const templates = await rt.projects.templates(name);
      ctx.out.result({ ...imageJson(i), templates: templates.map(templateJson) }, () =>
        [
          `name      ${i.name}`,
          `base      ${i.base} (${bytes(i.sizeBytes)})`,
          `sha256    ${i.sha256}${o.verify ? ' (verified)' : ''}`,
          `built     ${m.builtAt}${m.suite ? ` from Debian ${m.suite}` : ''}`,
          `boot      ${i.kernel ? `kernel ${i.kernel}${i.initrd ? `, initrd ${i.initrd}` : ''}\n          cmdline ${i.cmdline ?? '-'}` : 'firmware'}`,
          `agent     ${m.agentBaked ? 'baked in' : 'installed by cloud-init at first boot'}`,
          ...(m.packages ? [`packages  ${m.packages.join(' ')}`] : []),
          `templates ${templates.length === 0 ? `none (goshipctl image warm ${name})` : templates.map((t) => `${t.name} (${bytes(t.sizeBytes)}${t.imageKey === m.key ? '' : ', of an earlier build: not used'})`).join(', ')}`,
        ].join('\n'),
      );
    });

  cli
    .command('warm [name]', 'boot a VM of the image to a settled guest and save it as a template: project create then restores it instead of booting')
    .option('--cpus <n>', 'vCPUs of the projects it serves (default 1)')
    .option('--memory <size>', 'their memory (default 1G)')
    .option('--disk <size>', 'their disk size (default 10G)')
    .option('--timeout <seconds>', 'how long the boot may take (default 300)')
    .example('goshipctl image warm')
    .example('goshipctl image warm default --cpus 2 --memory 2G')
    .example('goshipctl image warm --node box   (a template on node box: project create --node box restores it)')
    .action(async (name: string | undefined) => {
      const rt = await ctx.runtime();
      const cpus = intOption(a, 'cpus', 'a whole number of vCPUs');
      const memory = rawValue(a, 'memory');
      const disk = rawValue(a, 'disk');
      const timeoutMs = secondsOption(a, 'timeout');
      const p = ctx.out.progress(`warming image ${name ?? 'default'}: booting a VM`);
      try {
        const t = await rt.projects.warm({
          ...(name ? { image: name } : {}),
          ...(cpus !== undefined ? { cpus } : {}),
          ...(memory !== undefined ? { memory } : {}),
          ...(disk !== undefined ? { disk } : {}),
          ...(timeoutMs !== undefined ? { timeoutMs } : {}),
          onProgress: (e) => p.update(`warming image ${name ?? 'default'}: ${e.step} ${e.state}`),
        });
        p.done();
        ctx.out.result(templateJson(t), () => `template ${t.name}: booted in ${(t.bootMs / 1000).toFixed(1)} s, saved in ${t.saveMs} ms (${bytes(t.sizeBytes)}); project create --image ${t.image} now restores it`);
      } catch (err) {
        p.done();
        throw err;
      }
    });

  cli.command('remove <name>', 'remove a base image').alias('rm').action(async (name: string) => {
    const rt = await ctx.runtime();
    await rt.images.remove(name);
    ctx.out.result({ removed: name }, () => `image ${name} removed`);
  });

  cli
    .command('import <name> <file>', 'import your own cloud image (qcow2 or raw, with cloud-init); firmware boot unless --kernel')
    .option('--kernel <file>', 'kernel for direct kernel boot')
    .option('--initrd <file>', 'its initrd')
    .option('--cmdline <text>', 'its command line')
    .option('--force', 'replace an image of that name')
    .action(async (name: string, file: string, o: { force?: boolean }) => {
      const rt = await ctx.runtime();
      const kernel = rawValue(a, 'kernel');
      const initrd = rawValue(a, 'initrd');
      const cmdline = rawValue(a, 'cmdline');
      const p = ctx.out.progress(`importing ${file} as ${name}`);
      try {
        const info = await rt.images.import(name, file, {
          ...(kernel ? { kernel } : {}),
          ...(initrd ? { initrd } : {}),
          ...(cmdline ? { cmdline } : {}),
          force: Boolean(o.force),
        });
        p.done();
        ctx.out.result(imageJson(info), () => `image ${info.name} imported (${bytes(info.sizeBytes)})`);
      } catch (err) {
        p.done();
        throw err;
      }
    });

  cli
    .command('push <node> <name>', 'copy an image to a node (goshipctl node add), checksummed; a node that has it keeps its copy')
    .example('goshipctl image push box default')
    .action(async (node: string, name: string) => {
      const rt = await ctx.runtime();
      const info = await rt.images.info(name);
      const p = ctx.out.progress(`pushing image ${name} (${bytes(info.sizeBytes)}) to ${node}`);
      try {
        const r = await rt.nodes.pushImage(node, info.dir, name);
        p.done();
        if (r.code !== 0) {
          process.stderr.write(r.stderr);
          return r.code;
        }
        const got = JSON.parse(r.stdout) as { received: boolean; sha256: string };
        ctx.out.result({ node, name, received: got.received, sha256: got.sha256 }, () =>
          got.received ? `image ${name} pushed to ${node} (${bytes(info.sizeBytes)}, sha256 ${got.sha256.slice(0, 12)}… checked there)` : `node ${node} already has image ${name} (same sha256)`,
        );
        return 0;
      } catch (err) {
        p.done();
        throw err;
      }
    });

  cli
    .command('receive <name>', "the other end of image push: an image directory as a tar stream on stdin (run by another host's goshipctl over ssh)")
    .action(async (name: string) => {
      const rt = await ctx.runtime();
      const info = await rt.images.receive(name, process.stdin);
      ctx.out.result({ ...imageJson(info), received: info.received }, () => `image ${info.name} ${info.received ? 'received' : 'already here'} (${bytes(info.sizeBytes)})`);
    });
}
