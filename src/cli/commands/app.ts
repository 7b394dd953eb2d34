/** goshipctl app …: a project's workloads, run inside its VM. */
import { readFile } from 'node:fs/promises';
import { resolve } from 'node:path';
import { PassThrough } from 'node:stream';
import type { CAC } from 'cac';
import { GoshipError } from '../../errors.ts';
import type { AppSource, AppView } from '../../runtime/index.ts';
import { durationOption, intOption, rawValue, rawValues } from '../args.ts';
import { type CommandContext, since } from '../context.ts';
import { guestSink } from '../terminal.ts';
import { EXIT, table } from '../output.ts';
import type { GroupRouting } from '../routing.ts';

/** The stable --json shape of an app. */
export function appJson(v: AppView) {
  return {
    project: v.project,
    node: 'local',
    name: v.name,
    kind: v.kind,
    state: v.state,
    image: v.image,
    ports: v.ports,
    restarts: v.restarts,
    startedAt: v.startedAt,
    container: v.container ? { id: v.container.id, name: v.container.name, state: v.container.state, exitCode: v.container.exitCode, error: v.container.error } : null,
    process: v.process
      ? { unit: v.process.unit, pid: v.process.pid, user: v.process.user, argv: v.process.argv, exitCode: v.process.exitCode, signal: v.process.signal, result: v.process.result }
      : null,
    generation: v.record?.generation ?? null,
    spec: v.record?.spec ?? null,
    lastError: v.record?.lastError ?? null,
  };
}

function portsText(v: Pick<AppView, 'ports'>): string {
  return v.ports.map((p) => `${p.proto === 'udp' ? 'udp:' : ''}127.0.0.1:${p.host}→${p.container}`).join(',') || '-';
}

type AppRow = Pick<AppView, 'project' | 'name' | 'kind' | 'image' | 'state' | 'ports' | 'restarts' | 'startedAt'> & { node?: string };

/** The table of apps; with a NODE column when some are on other nodes. */
function appTable(views: AppRow[], unreachable: Array<{ node: string; placed: string[]; error?: string }> = []): string {
  const notes = unreachable.map((r) => `node ${r.node} unreachable (projects ${r.placed.join(', ')}): ${r.error}`);
  if (views.length === 0) return ['no apps (deploy one: goshipctl app deploy PROJECT APP --build DIR)', ...notes].join('\n');
  const nodes = views.some((v) => v.node !== undefined && v.node !== 'local') || unreachable.length > 0;
  const cells = (v: AppRow): string[] => [v.image ?? '-', v.state, portsText(v), v.restarts === null ? '-' : String(v.restarts), v.startedAt ? since(v.startedAt) : '-'];
  const text = nodes
    ? table(['PROJECT', 'NODE', 'APP', 'KIND', 'IMAGE', 'STATE', 'PORTS', 'RESTARTS', 'UPTIME'], views.map((v) => [v.project, v.node ?? 'local', v.name, v.kind, ...cells(v)]))
    : table(['PROJECT', 'APP', 'KIND', 'IMAGE', 'STATE', 'PORTS', 'RESTARTS', 'UPTIME'], views.map((v) => [v.project, v.name, v.kind, ...cells(v)]));
  return [text, ...notes].join('\n');
}

/** Exactly one image source. */
function sourceOf(a: readonly string[]): AppSource {
  const given = [
    ['build', rawValue(a, 'build')],
    ['image-archive', rawValue(a, 'image-archive')],
    ['image', rawValue(a, 'image')],
    ['binary', rawValue(a, 'binary')],
  ].filter(([, v]) => v !== undefined) as Array<[string, string]>;
  const command = a.includes('--command');
  if (given.length + (command ? 1 : 0) !== 1) {
    throw new GoshipError('EUSAGE', 'app deploy: give exactly one of --build DIR, --image-archive FILE, --image REF, --binary FILE or --command', {
      hint: 'goshipctl app deploy PROJECT APP --build ./app',
    });
  }
  if (command) return { kind: 'command' };
  const [flag, value] = given[0]!;
  if (flag === 'build') return { kind: 'build', dir: resolve(value) };
  if (flag === 'image-archive') return { kind: 'archive', file: resolve(value) };
  if (flag === 'binary') return { kind: 'binary', file: resolve(value) };
  return { kind: 'image', ref: value };
}

/**
 * Which of these commands run on a project's node (src/cli/routing.ts): those
 * with a `<project>` (or `[project]`), `deploy`'s local files sent there first.
 */
export const appRouting: GroupRouting = {
  project: 'project',
  commands: { deploy: { files: { '--build': 'dir', '--image-archive': 'file', '--binary': 'file', '--env-file': 'file' } } },
};

export function registerApp(cli: CAC, ctx: CommandContext): void {
  const a = ctx.argv;

  cli
    .command('deploy <project> <app> [...cmd]', 'deploy (or replace) an app in the project VM: a container (--build DIR, --image-archive FILE, --image REF) or a process (--binary FILE, --command)')
    .option('--build <dir>', 'a directory with a Dockerfile: built by dockerd inside the VM')
    .option('--image-archive <file>', 'a docker save tar, loaded inside the VM')
    .option('--image <ref>', 'an image pulled by dockerd inside the VM')
    .option('--binary <file>', 'a program to upload and run as a supervised process (process mode)')
    .option('--command', 'run a program already in the guest: -- PROGRAM ARGS (process mode)')
    .option('--port <host:port>', 'forward 127.0.0.1:HOST to the app: to its container port, or to the guest port a process listens on (repeatable; udp:HOST:PORT)')
    .option('--env <KEY=VALUE>', 'environment variable (repeatable)')
    .option('--env-file <file>', 'KEY=VALUE lines')
    .option('--volume <name:/path>', 'a named volume mounted in the container (repeatable)')
    .option('--restart <policy>', 'no, on-failure[:N], always, unless-stopped (containers only) (default no)')
    .option('--memory <size>', 'memory limit, e.g. 256M')
    .option('--cpus <n>', 'CPU limit, e.g. 0.5')
    .option('--workdir <dir>', 'working directory (process mode)')
    .option('--user <name>', 'user to run as (process mode)')
    .example('goshipctl app deploy web api --build ./api --port 8080:80 --restart always')
    .example('goshipctl app deploy web files --binary ./busybox --port 8081:8080 --restart always -- httpd -f -p 8080')
    .example('goshipctl app deploy web py --command --port 8000:8000 -- /usr/bin/python3 -m http.server 8000')
    .action(async (project: string, app: string, cmd: string[], o: { '--'?: string[] }) => {
      const source = sourceOf(a);
      const envFile = rawValue(a, 'env-file');
      const envText = envFile === undefined ? undefined : await readFile(envFile, 'utf8').catch((cause: Error) => {
        throw new GoshipError('EINVALID', `--env-file: cannot read ${envFile}: ${cause.message}`, { cause });
      });
      const memory = rawValue(a, 'memory');
      const cpus = rawValue(a, 'cpus');
      const restart = rawValue(a, 'restart');
      const workdir = rawValue(a, 'workdir');
      const user = rawValue(a, 'user');
      const argv = [...cmd, ...(o['--'] ?? [])];
      const rt = await ctx.runtime();
      const p = ctx.out.progress(`deploying ${project}/${app}`);
      try {
        const view = await rt.apps.deploy({
          project,
          app,
          source,
          ports: rawValues(a, 'port'),
          env: rawValues(a, 'env'),
          ...(envText !== undefined ? { envFile: envText } : {}),
          volumes: rawValues(a, 'volume'),
          ...(restart !== undefined ? { restart } : {}),
          ...(memory !== undefined ? { memory } : {}),
          ...(cpus !== undefined ? { cpus } : {}),
          ...(workdir !== undefined ? { workdir } : {}),
          ...(user !== undefined ? { user } : {}),
          ...(argv.length > 0 ? { cmd: argv } : {}),
          onProgress: (line) => {
            // The build's own output: on stderr, above the progress line (not in --json mode).
            if (!ctx.out.json) {
              p.done();
              ctx.out.note(line);
            }
          },
        });
        p.done();
        const what = view.container?.name ?? (view.process ? `${view.process.unit}, pid ${view.process.pid ?? '-'}` : '-');
        ctx.out.result(appJson(view), () => `app ${project}/${app} is ${view.state} (${what})${view.ports.length ? `\nports: ${portsText(view)}` : ''}`);
      } catch (err) {
        p.done();
        throw err;
      }
    });

  cli.command('list [project]', "the apps of a project, or of every project on this host and on every node (a node that cannot be reached is named)").action(async (project: string | undefined) => {
    const rt = await ctx.runtime();
    if (project !== undefined) {
      const views = await rt.apps.list(project);
      ctx.out.result(views.map(appJson), () => appTable(views));
      return;
    }
    const [views, remote] = await Promise.all([rt.apps.list(), rt.nodes.remoteApps()]);
    const rows: Array<AppRow & Record<string, unknown>> = [...views.map(appJson), ...remote.flatMap((r) => (r.rows ?? []) as Array<AppRow & Record<string, unknown>>)];
    const unreachable = remote.filter((r) => r.error !== undefined);
    ctx.out.result([...rows, ...unreachable.map((r) => ({ node: r.node, state: 'unreachable', projects: r.placed, error: r.error ?? null }))], () => appTable(rows, unreachable));
  });

  cli.command('info <project> <app>', 'one app: its spec as deployed, its container, its ports').action(async (project: string, app: string) => {
    const rt = await ctx.runtime();
    const v = await rt.apps.info(project, app);
    ctx.out.result(appJson(v), () =>
      [
        `app       ${v.project}/${v.name} (${v.kind})`,
        `state     ${v.state}${v.container?.error ? ` (${v.container.error})` : ''}`,
        `${v.kind === 'process' ? 'program' : 'image  '}   ${v.image ?? '-'}`,
        ...(v.kind === 'process'
          ? [
              `unit      ${v.process?.unit ?? '-'}`,
              `pid       ${v.process?.pid ?? '-'}`,
              `user      ${v.process?.user ?? '-'}`,
              ...(v.process && v.state !== 'running' && (v.process.exitCode !== null || v.process.signal) ? [`last exit ${v.process.exitCode !== null ? `code ${v.process.exitCode}` : v.process.signal} (${v.process.result})`] : []),
            ]
          : [`container ${v.container ? `${v.container.name} ${v.container.id.slice(0, 12)}` : '-'}`]),
        `ports     ${portsText(v)}`,
        `restarts  ${v.restarts ?? '-'}`,
        `uptime    ${v.startedAt ? since(v.startedAt) : '-'}`,
        `restart   ${v.record?.spec?.restart?.name ?? '-'}`,
        ...(v.record?.lastError ? [`last error ${v.record.lastError}`] : []),
      ].join('\n'),
    );
  });

  for (const verb of ['start', 'stop', 'restart'] as const) {
    cli.command(`${verb} <project> <app>`, `${verb} the app's container`).action(async (project: string, app: string) => {
      const rt = await ctx.runtime();
      const v = await rt.apps.control(project, app, verb);
      ctx.out.result(appJson(v), () => `app ${project}/${app} is ${v.state}`);
    });
  }

  cli.command('remove <project> <app>', "remove the app: its container in the VM, its ports, its record").action(async (project: string, app: string) => {
    const rt = await ctx.runtime();
    await rt.apps.remove(project, app);
    ctx.out.result({ removed: `${project}/${app}` }, () => `app ${project}/${app} removed`);
  });

  cli
    .command('logs <project> <app>', "the app's output (stdout and stderr)")
    .option('-f, --follow', 'keep printing new output')
    .option('--tail <n>', 'only the last N lines')
    .option('--since <duration>', 'only output since then, e.g. 10m, 2h, 30s')
    .option('--timestamps', 'prefix each line with its time')
    .option('--raw', 'output as it is, control sequences too (on a terminal they are shown, not obeyed)')
    .action(async (project: string, app: string, o: { follow?: boolean; timestamps?: boolean; raw?: boolean }) => {
      const rt = await ctx.runtime();
      const tail = intOption(a, 'tail', 'a whole number of lines');
      const sinceSec = durationOption(a, 'since');
      await rt.apps.logs(project, app, {
        follow: o.follow === true,
        timestamps: o.timestamps === true,
        ...(tail !== undefined ? { tail } : {}),
        ...(sinceSec !== undefined ? { sinceSec } : {}),
        stdout: guestSink(process.stdout, o.raw === true),
        stderr: guestSink(process.stderr, o.raw === true),
        signal: ctx.signal,
      });
    });

  cli
    .command('exec <project> <app> [...command]', "run a command in the app's container; exits with its code")
    .option('-t, --tty', 'a terminal (with its window size)')
    .option('-i, --interactive', 'pass stdin through')
    .option('--raw', 'output as it is, control sequences too (on a terminal they are shown, not obeyed; -t is always raw)')
    .action(async (project: string, app: string, command: string[], o: { '--'?: string[]; tty?: boolean; interactive?: boolean; raw?: boolean }) => {
      const argv = [...command, ...(o['--'] ?? [])];
      if (argv.length === 0) throw new GoshipError('EUSAGE', 'app exec: no command given', { hint: 'goshipctl app exec PROJECT APP -- CMD ARGS' });
      const rt = await ctx.runtime();
      const tty = o.tty === true;
      const ctl = tty ? new PassThrough() : undefined;
      const resize = (): void => {
        if (ctl && process.stdout.columns && process.stdout.rows) ctl.write(`${JSON.stringify({ resize: { rows: process.stdout.rows, cols: process.stdout.columns } })}\n`);
      };
      const raw = tty && o.interactive && process.stdin.isTTY;
      if (raw) process.stdin.setRawMode(true);
      if (tty) process.stdout.on('resize', resize);
      try {
        const code = await rt.apps.exec(project, app, argv, {
          tty,
          ...(o.interactive ? { stdin: process.stdin } : {}),
          stdout: guestSink(process.stdout, o.raw === true || tty),
          stderr: guestSink(process.stderr, o.raw === true || tty),
          ...(ctl ? { ctl } : {}),
          ...(tty && process.stdout.rows && process.stdout.columns ? { rows: process.stdout.rows, cols: process.stdout.columns } : {}),
          signal: ctx.signal,
        });
        return code ?? EXIT.failed;
      } finally {
        if (raw) process.stdin.setRawMode(false);
        if (tty) process.stdout.off('resize', resize);
        ctl?.end();
        if (o.interactive) process.stdin.destroy();
      }
    });
}
