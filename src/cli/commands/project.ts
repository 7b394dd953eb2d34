/** goshipctl project …: one VM per project, ready for work. */
import type { CAC } from 'cac';
import { execa } from 'execa';
import { GoshipError, ValidationError } from '../../errors.ts';
import { WAIT_LEVELS, bootStepsText, mountTag, readSshKeys, type BootProgress, type BootReport, type PortsView, type ProjectView, type WaitLevel } from '../../runtime/index.ts';
import { intOption, rawValue, rawValues, secondsOption } from '../args.ts';
import { type CommandContext, bytes, since } from '../context.ts';
import { table } from '../output.ts';
import type { GroupRouting } from '../routing.ts';

/** `--wait boot|agent`. */
function waitOption(argv: readonly string[]): WaitLevel | undefined {
  const raw = rawValue(argv, 'wait');
  if (raw === undefined) return undefined;
  if (!(WAIT_LEVELS as readonly string[]).includes(raw)) {
    throw new ValidationError([{ path: '--wait', message: `expected ${WAIT_LEVELS.join(' or ')}, got ${JSON.stringify(raw)}` }]);
  }
  return raw as WaitLevel;
}

const STEP_WAITING: Record<BootProgress['step'], string> = {
  qemu: 'starting QEMU',
  agent: 'waiting for the guest agent',
  identity: 'giving the clone its identity',
  disk: "growing the clone's disk",
  clock: "setting the guest's clock from the host",
  network: 'waiting for the network (network-online.target)',
  'cloud-init': 'waiting for cloud-init to finish',
};
const STEP_DONE: Record<BootProgress['step'], string> = {
  qemu: 'QEMU running',
  agent: 'agent answered',
  identity: 'identity given',
  disk: 'disk grown',
  clock: 'clock set',
  network: 'network online',
  'cloud-init': 'cloud-init done',
};

/** A TTY's view of a start: one line per step reached, a spinner on the one being waited for. */
function bootProgress(ctx: CommandContext, name: string, consoleLog: string) {
  const p = ctx.out.progress(`${name}: ${STEP_WAITING.qemu}`);
  return {
    onProgress: (e: BootProgress) => {
      if (e.state === 'waiting') p.update(`${name}: ${STEP_WAITING[e.step]} (console: ${consoleLog})`);
      else p.note(`  ${STEP_DONE[e.step]}${e.skipped ? `: skipped, ${e.skipped}` : ''} (${(e.atMs / 1000).toFixed(1)} s)`);
    },
    done: () => p.done(),
  };
}

function readyText(name: string, view: ProjectView, boot: BootReport): string {
  const what = boot.wait === 'agent' ? 'its agent answers; the guest may still be booting' : 'network online, cloud-init done';
  return `project ${name} is ready in ${(boot.totalMs / 1000).toFixed(1)} s (VM pid ${view.vm?.pid}; ${what})\nsteps: ${bootStepsText(boot.steps)}`;
}

/** A positional as the user typed it: cac turns `8080` into a number. */
function rawPositional(value: string | number): string {
  return String(value);
}

function portsTable(v: PortsView): string {
  if (v.recorded.length === 0) return 'no port forwards';
  const live = new Set((v.live ?? []).map((f) => `${f.proto}:${f.host}`));
  return table(
    ['PROTO', 'HOST', 'GUEST', 'LIVE'],
    v.recorded.map((p) => [p.proto, `127.0.0.1:${p.host}`, String(p.guest), v.live === null ? '- (stopped)' : live.has(`${p.proto}:${p.host}`) ? 'yes' : 'MISSING']),
  );
}

function portsText(v: ProjectView): string {
  return v.project.spec.ports.map((p) => `${p.proto === 'udp' ? 'udp:' : ''}${p.host}→${p.guest}`).join(',') || '-';
}

/** The stable --json shape of a project. */
export function projectJson(v: ProjectView) {
  const { project: p, vm } = v;
  return {
    name: p.name,
    state: p.state,
    ...(p.lastError ? { lastError: p.lastError } : {}),
    ...(p.op ? { op: { kind: p.op.kind, startedAt: p.op.startedAt } } : {}),
    node: p.node,
    createdAt: p.createdAt,
    spec: p.spec,
    vm: vm
      ? {
          id: vm.id,
          state: vm.state,
          pid: vm.pid ?? null,
          startedAt: vm.startedAt ?? null,
          agent: vm.agent ?? null,
          monitor: vm.monitor ?? null,
          end: vm.end ?? null,
          restarts: vm.restarts ?? { count: 0 },
          paths: vm.paths,
        }
      : null,
  };
}

function reachText(v: ProjectView): string {
  const n = v.project.name;
  const lines = [`run a command:   goshipctl vm exec ${n} -- uname -a`, `copy a file in:  goshipctl vm cp ./file ${n}:/tmp/file`, `console log:     goshipctl vm console ${n}`];
  for (const p of v.project.spec.ports) lines.push(`port:            127.0.0.1:${p.host} (${p.proto}) → guest port ${p.guest}`);
  if (v.project.spec.sshKeys.length > 0) {
    const ssh = v.project.spec.ports.find((p) => p.guest === 22 && p.proto === 'tcp');
    if (ssh) lines.push(`ssh:             ssh -p ${ssh.host} goship@127.0.0.1`);
  }
  return lines.join('\n');
}

/**
 * Which of these commands run on a project's node (src/cli/routing.ts): those
 * with a `<name>`, and `create` on the nodes its `--node` options name, its
 * `--ssh-key` files sent there first.
 */
export const projectRouting: GroupRouting = { project: 'name', commands: { create: { route: 'create', image: '--image', files: { '--ssh-key': 'file' } }, move: { route: 'local' }, receive: { route: 'local' }, docker: { route: 'local' } } };

export function registerProject(cli: CAC, ctx: CommandContext): void {
  const a = ctx.argv;

  cli
    .command('create <name>', 'create a project: its VM on an image, provisioned by cloud-init, booted, agent ready')
    .option('--cpus <n>', 'vCPUs (default 1)')
    .option('--memory <size>', 'memory, e.g. 2G (default 1G)')
    .option('--disk <size>', 'disk size, e.g. 20G (default 10G)')
    .option('--image <name>', 'base image (default: default)')
    .option('--ssh-key <file>', 'OpenSSH public key file for the goship user (repeatable)')
    .option('--port <host:guest>', 'forward 127.0.0.1:HOST to the guest (repeatable; udp:HOST:GUEST for UDP)')
    .option('--mount <host:guest>', 'share the host directory HOST_DIR at GUEST_DIR in the guest (virtio-fs; repeatable; HOST_DIR:GUEST_DIR:ro: read-only)')
    .option('--console-max-size <size>', 'console.log is rotated at this size, one older file kept (default 8M)')
    .option('--restart <policy>', 'no (default) or on-crash: the VM\'s monitor starts a crashed QEMU again, with backoff')
    .option('--no-start', 'create the VM but do not boot it')
    .option('--cold', 'boot from the image even when a template of this shape exists (goshipctl image warm)')
    .option('--private-memory', "a clone of a template: its memory a copy of its own, no page shared with another clone")
    .option('--wait <what>', 'boot (default): until the network is online and cloud-init has finished; agent: until the guest agent answers')
    .option('--timeout <seconds>', 'how long to wait for it to be ready (default 300)')
    .example('goshipctl project create web --cpus 2 --memory 2G --disk 20G --port 8080:80')
    .example('goshipctl project create dev --mount $PWD:/srv/app --mount /srv/data:/data:ro')
    .action(async (name: string, o: { start: boolean; cold?: boolean; privateMemory?: boolean }) => {
      const rt = await ctx.runtime();
      const sshKeys = await readSshKeys(rawValues(a, 'ssh-key'));
      const cpus = intOption(a, 'cpus', 'a whole number of vCPUs');
      const memory = rawValue(a, 'memory');
      const disk = rawValue(a, 'disk');
      const image = rawValue(a, 'image');
      const restart = rawValue(a, 'restart');
      const consoleMaxSize = rawValue(a, 'console-max-size');
      const timeoutMs = secondsOption(a, 'timeout');
      const wait = waitOption(a);
      const p = o.start === false ? undefined : bootProgress(ctx, name, rt.layout.vmFile(name, 'consoleLog'));
      try {
        const view = await rt.projects.create({
          name,
          ...(cpus !== undefined ? { cpus } : {}),
          ...(memory !== undefined ? { memory } : {}),
          ...(disk !== undefined ? { disk } : {}),
          ...(image !== undefined ? { image } : {}),
          ...(restart !== undefined ? { restart: restart as 'no' | 'on-crash' } : {}),
          ...(consoleMaxSize !== undefined ? { consoleMaxSize } : {}),
          sshKeys,
          ports: rawValues(a, 'port'),
          mounts: rawValues(a, 'mount'),
          noStart: o.start === false,
          cold: Boolean(o.cold),
          ...(o.privateMemory ? { privateMemory: true } : {}),
          ...(timeoutMs !== undefined ? { timeoutMs } : {}),
          ...(wait ? { wait } : {}),
          ...(p ? { onProgress: p.onProgress } : {}),
        });
        p?.done();
        const origin = view.origin?.from === 'template' ? `restored from template ${view.origin.template}` : view.origin ? `booted from the image (${view.origin.reason})` : undefined;
        ctx.out.result({ ...projectJson(view), ...(view.boot ? { boot: view.boot } : {}), ...(view.origin ? view.origin : {}) }, () =>
          view.boot ? `${readyText(name, view, view.boot)}\n${origin ? `${origin}\n` : ''}${reachText(view)}` : `project ${name} created (not started): goshipctl project start ${name}`,
        );
      } catch (err) {
        p?.done();
        throw err;
      }
    });

  cli.command('list', "list projects, this host's and every node's (a node that cannot be reached: its projects marked unreachable)").action(async () => {
    const rt = await ctx.runtime();
    const [views, remote] = await Promise.all([rt.projects.list(), rt.nodes.remoteProjects(projectJson)]);
    type Row = { json: Record<string, unknown>; cells: string[] };
    const rows: Row[] = views.map((v) => ({
      json: projectJson(v),
      cells: [
        v.project.name,
        'local',
        v.project.state,
        v.vm?.state ?? '-',
        v.vm?.pid ? String(v.vm.pid) : '-',
        String(v.project.spec.cpus),
        bytes(v.project.spec.memoryBytes),
        portsText(v),
        v.vm?.state === 'ready' || v.vm?.state === 'running' ? since(v.vm.startedAt) : '-',
      ],
    }));
    for (const r of remote) {
      if (r.rows) {
        for (const p of r.rows as Array<ReturnType<typeof projectJson>>) {
          const ports = p.spec.ports.map((x) => `${x.proto === 'udp' ? 'udp:' : ''}${x.host}→${x.guest}`).join(',') || '-';
          const up = p.vm?.state === 'ready' || p.vm?.state === 'running' ? since(p.vm.startedAt ?? undefined) : '-';
          rows.push({ json: p, cells: [p.name, r.node, p.state, p.vm?.state ?? '-', p.vm?.pid ? String(p.vm.pid) : '-', String(p.spec.cpus), bytes(p.spec.memoryBytes), ports, up] });
        }
      } else {
        for (const name of r.placed) rows.push({ json: { name, node: r.node, state: 'unreachable', error: r.error ?? null }, cells: [name, r.node, 'unreachable', '-', '-', '-', '-', '-', '-'] });
      }
    }
    const unreachable = remote.filter((r) => r.error !== undefined);
    ctx.out.result(rows.map((r) => r.json), () =>
      rows.length === 0
        ? 'no projects (create one: goshipctl project create NAME)'
        : [table(['NAME', 'NODE', 'STATE', 'VM', 'PID', 'CPUS', 'MEMORY', 'PORTS', 'UPTIME'], rows.map((r) => r.cells)), ...unreachable.map((r) => `node ${r.node} unreachable: ${r.error}`)].join('\n'),
    );
  });

  cli
    .command('docker <name>', "print DOCKER_HOST for the project's dockerd: a socket on this host that its VM's monitor relays to the guest's /run/docker.sock")
    .option('--context', 'also create (or update) the Docker context goship-NAME, for `docker --context goship-NAME` or `docker context use`')
    .example('eval "export $(goshipctl project docker web)" && docker ps')
    .action(async (name: string, o: { context?: boolean }) => {
      const rt = await ctx.runtime();
      const host = `unix://${await rt.projects.dockerSocket(name)}`;
      const context = `goship-${name}`;
      if (o.context) {
        const exists = (await execa('docker', ['context', 'inspect', context], { reject: false, stdin: 'ignore' }).catch(() => undefined))?.exitCode === 0;
        const r = await execa('docker', ['context', exists ? 'update' : 'create', context, '--description', `GoShip project ${name}`, '--docker', `host=${host}`], { reject: false, stdin: 'ignore' }).catch((err: Error) => ({ exitCode: 127, stderr: err.message }));
        if (r.exitCode !== 0) throw new GoshipError('ENOTSUP', `docker context ${exists ? 'update' : 'create'} ${context} failed: ${String(r.stderr).trim().slice(0, 400)}`, { hint: 'is the Docker CLI installed on this host? (Debian: apt-get install docker.io, or docker-cli)' });
      }
      ctx.out.result({ dockerHost: host, ...(o.context ? { context } : {}) }, () => `DOCKER_HOST=${host}`);
    });

  cli
    .command('mount <action> <name>', "shared folders: mount list NAME (they are set at create: project create --mount)")
    .example('goshipctl project mount list dev')
    .action(async (action: string, name: string) => {
      if (action !== 'list') throw new ValidationError([{ path: 'action', message: `expected "list", got ${JSON.stringify(action)}` }], { subject: 'invalid command', hint: 'shared folders are set at create: goshipctl project create NAME --mount HOST_DIR:GUEST_DIR[:ro]' });
      const rt = await ctx.runtime();
      const { project: p } = await rt.projects.info(name);
      const rows = (p.spec.mounts ?? []).map((m, i) => ({ tag: mountTag(i), host: m.host, guest: m.guest, readOnly: m.readOnly }));
      ctx.out.result(rows, () => (rows.length === 0 ? `project ${name} has no shared folders` : table(['HOST', 'GUEST', 'MODE', 'TAG'], rows.map((r) => [r.host, r.guest, r.readOnly ? 'ro' : 'rw', r.tag]))));
    });

  cli.command('info <name>', 'one project: VM state, PID, resources, ports, uptime, agent, disk usage, paths').action(async (name: string) => {
    const rt = await ctx.runtime();
    const info = await rt.projects.info(name);
    const { project: p, vm } = info;
    ctx.out.result({ ...projectJson(info), diskUsageBytes: info.diskUsageBytes ?? null, apps: info.apps.map((x) => ({ name: x.name, kind: x.kind, state: x.state, image: x.image ?? null, ports: x.spec?.ports ?? [] })) }, () =>
      [
        `project   ${p.name} (${p.state}${p.lastError ? `: ${p.lastError}` : ''})`,
        `vm        ${vm ? `${vm.state}${vm.pid ? `, pid ${vm.pid}` : ''}` : 'missing'}`,
        `uptime    ${vm?.state === 'ready' || vm?.state === 'running' ? since(vm.startedAt) : '-'}`,
        `resources ${p.spec.cpus} vCPU, ${bytes(p.spec.memoryBytes)} memory, image ${p.spec.image}`,
        `disk      ${bytes(info.diskUsageBytes)} used on the host${p.spec.diskBytes ? ` (virtual ${bytes(p.spec.diskBytes)})` : ''}`,
        `ports     ${portsText(info)}`,
        `mounts    ${(p.spec.mounts ?? []).map((m) => `${m.host} → ${m.guest}${m.readOnly ? ' (ro)' : ''}`).join(', ') || '-'}`,
        `agent     ${vm?.agent ? `${vm.agent.version}, protocol ${vm.agent.protocol}, hostname ${vm.agent.hostname}` : '-'}`,
        `restart   ${p.spec.restart ?? 'no'}${vm?.restarts?.count ? `: ${vm.restarts.count} restart(s), last ${vm.restarts.lastAt ?? '?'} after: ${vm.restarts.lastReason ?? '?'}` : ''}`,
        ...(vm?.end ? [`last end  ${vm.end.at}: ${vm.end.summary}`] : []),
        `apps      ${info.apps.map((x) => `${x.name} (${x.kind}, ${x.state})`).join(', ') || '-'}`,
        ...(vm
          ? [
              `console   ${vm.paths.consoleLog}`,
              `qemu log  ${vm.paths.qemuLog}`,
              `qmp       ${vm.paths.qmpSocket}`,
              `agent     ${vm.paths.agentSocket}`,
              `disk      ${vm.paths.overlay ?? '-'}`,
            ]
          : []),
      ].join('\n'),
    );
  });

  /** `project start` and `project resume`: the VM started (a suspended one restored) and waited for. */
  const startAction = (resume: boolean) => async (name: string, o: { discardState?: boolean }) => {
    const rt = await ctx.runtime();
    const timeoutMs = secondsOption(a, 'timeout');
    const wait = waitOption(a);
    const p = bootProgress(ctx, name, rt.layout.vmFile(name, 'consoleLog'));
    const opts = { ...(timeoutMs !== undefined ? { timeoutMs } : {}), ...(wait ? { wait } : {}), ...(o.discardState ? { discardState: true } : {}), onProgress: p.onProgress };
    try {
      const view = await (resume ? rt.projects.resume(name, opts) : rt.projects.start(name, opts));
      p.done();
      ctx.out.result({ ...projectJson(view), resumed: view.resumed, boot: view.boot }, () => readyText(name, view, view.boot).replace(' is ready in ', view.resumed ? ' is resumed and ready in ' : ' is ready in '));
    } catch (err) {
      p.done();
      throw err;
    }
  };

  cli
    .command('start <name>', "boot the project's VM and wait until it is ready (network online, cloud-init done); a suspended project is resumed")
    .option('--wait <what>', 'boot (default): until the network is online and cloud-init has finished; agent: until the guest agent answers')
    .option('--timeout <seconds>', 'how long to wait for it to be ready (default 300)')
    .option('--discard-state', 'a suspended project boots from its disk instead, and its saved memory is removed')
    .action(startAction(false));

  cli
    .command('suspend <name>', "save the project's running VM (memory, devices) and end its QEMU: resume brings back its processes as they were")
    .action(async (name: string) => {
      const rt = await ctx.runtime();
      const r = await rt.projects.suspend(name);
      ctx.out.result({ ...projectJson(r), saved: { bytes: r.saved.bytes, at: r.saved.at, file: r.saved.file }, totalMs: r.totalMs }, () =>
        `project ${name} suspended in ${(r.totalMs / 1000).toFixed(1)} s (memory and devices saved, ${Math.round(r.saved.bytes / 1048576)} MiB); resume it: goshipctl project resume ${name}`,
      );
    });

  cli
    .command('resume <name>', 'restore a suspended project: its processes, apps and guest clock go on, its ports forward again')
    .option('--wait <what>', 'boot (default): also until the network is online and cloud-init has finished; agent: until the guest agent answers')
    .option('--timeout <seconds>', 'how long to wait for it to be ready (default 300)')
    .action(startAction(true));

  cli
    .command('stop <name>', "stop the project's VM (agent shutdown, then harder)")
    .option('--force', 'skip the graceful steps')
    .action(async (name: string, o: { force?: boolean }) => {
      const rt = await ctx.runtime();
      const r = await rt.projects.stop(name, { force: Boolean(o.force) });
      ctx.out.result({ ...projectJson(r), endedBy: r.stop.endedBy }, () => `project ${name} stopped (ended by ${r.stop.endedBy})`);
    });

  cli
    .command('snapshot <action> <name> [tag]', 'snapshots of the disk, with --memory its running processes too: snapshot create NAME TAG [--memory], list NAME, restore NAME TAG, delete NAME TAG')
    .option('--memory', 'create: with the running guest\'s memory and devices (restore brings its processes back)')
    .option('--wait <what>', 'restore: boot (default) or agent, as project start')
    .option('--timeout <seconds>', 'restore: how long to wait for it to be ready (default 300)')
    .example('goshipctl project snapshot create web before-upgrade --memory')
    .example('goshipctl project snapshot restore web before-upgrade')
    .action(async (action: string, name: string, rawTag: string | number | undefined, o: { memory?: boolean }) => {
      const rt = await ctx.runtime();
      const tag = rawTag === undefined ? undefined : rawPositional(rawTag);
      const needTag = (): string => {
        if (tag === undefined) throw new GoshipError('EUSAGE', `project snapshot ${action}: no tag given`, { hint: `goshipctl project snapshot ${action} NAME TAG` });
        return tag;
      };
      if (action === 'list') {
        const list = await rt.projects.snapshotList(name);
        ctx.out.result(list, () =>
          list.length === 0 ? `project ${name} has no snapshots` : table(['TAG', 'MEMORY', 'CREATED', 'TOOK'], list.map((x) => [x.tag, x.memory ? 'yes' : 'no', x.createdAt, `${(x.ms / 1000).toFixed(1)} s`])),
        );
      } else if (action === 'create') {
        const snap = await rt.projects.snapshotCreate(name, needTag(), { memory: Boolean(o.memory) });
        ctx.out.result(snap, () => `project ${name}: snapshot ${snap.tag} taken in ${(snap.ms / 1000).toFixed(1)} s (${snap.memory ? 'disk, memory and devices' : 'disk'})`);
      } else if (action === 'delete') {
        await rt.projects.snapshotDelete(name, needTag());
        ctx.out.result({ name, tag, deleted: true }, () => `project ${name}: snapshot ${tag} deleted`);
      } else if (action === 'restore') {
        const timeoutMs = secondsOption(a, 'timeout');
        const wait = waitOption(a);
        const p = bootProgress(ctx, name, rt.layout.vmFile(name, 'consoleLog'));
        try {
          const view = await rt.projects.snapshotRestore(name, needTag(), { ...(timeoutMs !== undefined ? { timeoutMs } : {}), ...(wait ? { wait } : {}), onProgress: p.onProgress });
          p.done();
          ctx.out.result({ ...projectJson(view), snapshot: view.snapshot, boot: view.boot }, () =>
            readyText(name, view, view.boot).replace(' is ready in ', ` is back at snapshot ${view.snapshot.tag} (${view.snapshot.memory ? 'its memory restored' : 'booted from its disk'}) and ready in `),
          );
        } catch (err) {
          p.done();
          throw err;
        }
      } else {
        throw new GoshipError('EUSAGE', `project snapshot: unknown action ${JSON.stringify(action)}`, { hint: 'goshipctl project snapshot create|list|restore|delete NAME [TAG]' });
      }
    });

  cli
    .command('move <name>', "carry a project of this host to a node: suspended here, its disk and state sent over the node's SSH connection (checksummed), resumed there, then removed here")
    .option('--to <node>', 'the node (goshipctl node add)')
    .example('goshipctl project move web --to box')
    .action(async (name: string) => {
      const to = rawValue(a, 'to');
      if (to === undefined) throw new GoshipError('EUSAGE', 'project move: no --to NODE given', { hint: 'goshipctl project move NAME --to NODE' });
      const rt = await ctx.runtime();
      const p = ctx.out.progress(`moving project ${name} to ${to}`);
      try {
        const r = await rt.move(name, to, (what) => p.update(`moving project ${name} to ${to}: ${what}`));
        p.done();
        ctx.out.result(r, () => `project ${name} moved to node ${r.node} in ${(r.ms / 1000).toFixed(1)} s (${Math.round(r.bytes / 1048576)} MiB sent; ${r.state} there)`);
      } catch (err) {
        p.done();
        throw err;
      }
    });

  cli
    .command('receive <name>', "the other end of project move: the project's files as a tar stream on stdin (run by another host's goshipctl over ssh)")
    .option('--start', 'resume (or boot) it once it is here')
    .action(async (name: string, o: { start?: boolean }) => {
      const rt = await ctx.runtime();
      const view = await rt.receive(name, process.stdin, { start: Boolean(o.start) });
      ctx.out.result(projectJson(view), () => `project ${name} received (${view.project.state})`);
    });

  cli
    .command('port <action> <name> [port]', 'live port forwards: port add NAME [udp:]HOST:GUEST, port remove NAME [udp:]HOST, port list NAME')
    .example('goshipctl project port add web 8080:80')
    .example('goshipctl project port remove web 8080')
    .action(async (action: string, name: string, port: string | undefined) => {
      const rt = await ctx.runtime();
      let view: PortsView;
      if (action === 'list') view = await rt.projects.ports(name);
      else if (action === 'add') {
        if (port === undefined) throw new GoshipError('EUSAGE', 'project port add: no port given', { hint: 'goshipctl project port add NAME [udp:]HOST:GUEST' });
        view = await rt.projects.portAdd(name, rawPositional(port));
      } else if (action === 'remove') {
        const m = port === undefined ? null : /^(?:(tcp|udp):)?(\d{1,5})$/.exec(rawPositional(port));
        if (!m) throw new GoshipError('EUSAGE', `project port remove: expected [udp:]HOST, got ${JSON.stringify(port ?? '')}`, { hint: 'goshipctl project port remove NAME [udp:]HOST' });
        view = await rt.projects.portRemove(name, Number(m[2]), (m[1] as 'tcp' | 'udp' | undefined) ?? 'tcp');
      } else {
        throw new GoshipError('EUSAGE', `project port: unknown action ${JSON.stringify(action)}`, { hint: 'goshipctl project port add|remove|list NAME …' });
      }
      ctx.out.result(view, () => portsTable(view));
    });

  cli
    .command('delete <name>', 'delete the project: its VM, disk, seed, sockets and records')
    .option('--force', 'stop it first if it runs')
    .action(async (name: string, o: { force?: boolean }) => {
      const rt = await ctx.runtime();
      await rt.projects.delete(name, { force: Boolean(o.force) });
      ctx.out.result({ deleted: name }, () => `project ${name} deleted`);
    });
}
