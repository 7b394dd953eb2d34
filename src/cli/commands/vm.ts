/** goshipctl vm …: the VM level, for people learning the stack and for scripts. */
import { createReadStream, existsSync } from 'node:fs';
import { readdir } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { constants as osConstants } from 'node:os';
import type { CAC } from 'cac';
import { GoshipError } from '../../errors.ts';
import { LIVE_STATES, loadSpecFile, type Vm } from '../../runtime/index.ts';
import { rawValue, rawValues, secondsOption, sizeOption } from '../args.ts';
import { type CommandContext, bytes, shellQuote, since } from '../context.ts';
import type { GroupRouting } from '../routing.ts';
import { EXIT, table } from '../output.ts';
import { guestSink } from '../terminal.ts';

/** What `vm cp NAME:/PATH FILE` takes at most from a guest unless --max-size says otherwise: a guest must not fill the host's disk. */
export const DEFAULT_CP_MAX_SIZE = '1G';
const DEFAULT_CP_MAX_BYTES = 1024 ** 3;

/** `NAME:PATH` → {vm, path}; a local path otherwise. */
export function parseCpTarget(arg: string): { vm: string; path: string } | { local: string } {
  const m = /^([a-z0-9][a-z0-9-]{0,62}):(\/.*)$/.exec(arg);
  return m ? { vm: m[1]!, path: m[2]! } : { local: arg };
}

export function vmRow(v: Vm): string[] {
  return [v.name, v.state, v.pid ? String(v.pid) : '-', v.project ?? '-', v.image ?? '-', v.state === 'running' || v.state === 'ready' ? since(v.startedAt) : '-'];
}

export function vmTable(vms: Vm[]): string {
  return vms.length === 0 ? 'no VMs' : table(['NAME', 'STATE', 'PID', 'PROJECT', 'IMAGE', 'UPTIME'], vms.map(vmRow));
}

/** A progress line while waiting for the agent. */
export function agentProgress(ctx: CommandContext, name: string, consoleLog: string) {
  const p = ctx.out.progress(`waiting for the agent of ${name} (console: ${consoleLog})`);
  return {
    onAgentProgress: (e: { phase: string }) => p.update(`waiting for the agent of ${name}: ${e.phase} (console: ${consoleLog})`),
    done: (msg?: string) => p.done(msg),
  };
}

/** The console log files of a VM, oldest first: the rotated ones (console.log.N … .1), then console.log. */
async function consoleFiles(path: string): Promise<string[]> {
  const dir = dirname(path);
  const base = basename(path);
  const rotated = (await readdir(dir).catch(() => [] as string[]))
    .map((f) => ({ f, n: f.startsWith(`${base}.`) ? Number(f.slice(base.length + 1)) : Number.NaN }))
    .filter((x) => Number.isInteger(x.n) && x.n > 0)
    .sort((a, b) => b.n - a.n)
    .map((x) => join(dir, x.f));
  return [...rotated, ...(existsSync(path) ? [path] : [])];
}

/** Prints what the console log files hold. */
async function printConsole(path: string, raw: boolean): Promise<void> {
  const files = await consoleFiles(path);
  if (files.length === 0) throw new GoshipError('ENOTFOUND', `no console log yet: ${path}`, { hint: 'start the VM first' });
  const out = guestSink(process.stdout, raw);
  for (const f of files) {
    await new Promise<void>((resolve, reject) => {
      createReadStream(f)
        .on('data', (c) => out.write(c as Buffer))
        .on('end', resolve)
        .on('error', reject);
    });
  }
  if (out !== (process.stdout as unknown)) await new Promise<void>((resolve) => out.end(resolve));
}

/**
 * Which of these commands run on a project's node (src/cli/routing.ts): those
 * with a `<name>` (a project's VM has its name), and `cp` by its `NAME:PATH`
 * operand.
 */
/** Pure: `vm tunnel`'s target: `PORT` (the guest's loopback) or `unix:/PATH`. */
export function parseTunnelTarget(target: string): { to: 'tcp'; port: number } | { to: 'unix'; path: string } {
  if (/^\d{1,5}$/.test(target) && Number(target) >= 1 && Number(target) <= 65535) return { to: 'tcp', port: Number(target) };
  if (/^unix:\/[^\0]*$/.test(target) && target.length <= 4096 + 5) return { to: 'unix', path: target.slice(5) };
  throw new GoshipError('EINVALID', `vm tunnel: expected a port (1-65535) on the guest's loopback or unix:/PATH, got ${JSON.stringify(target)}`);
}

export const vmRouting: GroupRouting = { project: 'name', commands: { cp: { route: 'copy' } } };

export function registerVm(cli: CAC, ctx: CommandContext): void {
  const a = ctx.argv;

  cli
    .command('args <spec>', 'print the exact QEMU argv for a VM spec (YAML or JSON file), shell-quoted or --json')
    .example('goshipctl vm args examples/vm.yaml')
    .action(async (file: string) => {
      const spec = await loadSpecFile(file);
      const rt = await ctx.runtime();
      const argv = await rt.vms.argvFor(spec);
      ctx.out.result(argv, () => argv.map(shellQuote).join(' '));
    });

  cli
    .command('create <spec>', 'define a VM from a spec file (YAML or JSON); --base adds a qcow2 overlay on a base image')
    .option('--base <file>', 'base image (qcow2 or raw): the VM gets a copy-on-write overlay as its first disk')
    .option('--disk <size>', 'virtual size of the overlay (e.g. 20G); at least the base size')
    .example('goshipctl vm create vm.yaml --base /srv/images/debian.qcow2 --disk 20G')
    .action(async (file: string) => {
      const spec = (await loadSpecFile(file)) as { name: string };
      // Relative to where the user typed it (qemu-img would take it relative to the overlay).
      const baseRaw = rawValue(a, 'base');
      const base = baseRaw === undefined ? undefined : resolve(baseRaw);
      const diskBytes = sizeOption(a, 'disk');
      const rt = await ctx.runtime();
      const vm = await rt.vms.create({ spec, ...(base ? { base: { path: base } } : {}), ...(diskBytes ? { diskBytes } : {}) });
      ctx.out.result(vm, () => `defined VM ${vm.name} (${vm.paths.dir})\nstart it: goshipctl vm start ${vm.name}`);
    });

  cli
    .command('start <name>', 'start a VM: spawn QEMU, cont over QMP, wait for the guest agent')
    .option('--no-wait', 'return once QEMU runs; do not wait for the agent')
    .option('--timeout <seconds>', 'how long to wait for the agent (default 180)')
    .action(async (name: string, o: { wait: boolean }) => {
      const rt = await ctx.runtime();
      const vm0 = await rt.vms.get(name);
      const wait = o.wait !== false && (vm0.config as { agent?: boolean }).agent !== false;
      const p = wait ? agentProgress(ctx, name, vm0.paths.consoleLog) : undefined;
      try {
        const vm = await rt.vms.start(name, {
          waitAgent: wait,
          agentTimeoutMs: secondsOption(a, 'timeout') ?? 180_000,
          ...(p ? { onAgentProgress: p.onAgentProgress } : {}),
        });
        p?.done();
        ctx.out.result(vm, () => `VM ${name} is ${vm.state} (pid ${vm.pid})`);
      } catch (err) {
        p?.done();
        throw err;
      }
    });

  cli
    .command('stop <name>', 'stop a VM: agent shutdown → ACPI power-down → QMP quit → SIGTERM → SIGKILL')
    .option('--force', 'skip the graceful steps: QMP quit, then signals')
    .option('--timeout <seconds>', 'wait per graceful step (default 30)')
    .action(async (name: string, o: { force?: boolean }) => {
      const t = secondsOption(a, 'timeout');
      const rt = await ctx.runtime();
      const r = await rt.vms.stop(name, { force: Boolean(o.force), ...(t !== undefined ? { timeouts: { agentMs: t, acpiMs: t } } : {}) });
      ctx.out.result({ vm: r.vm, endedBy: r.endedBy, attempts: r.attempts }, () => `VM ${name} stopped (ended by ${r.endedBy})`);
    });

  cli
    .command('destroy <name>', 'remove a VM: its overlay, seed, logs, sockets and record')
    .option('--force', 'stop it first if it runs')
    .action(async (name: string, o: { force?: boolean }) => {
      const rt = await ctx.runtime();
      await rt.vms.destroy(name, { force: Boolean(o.force) });
      ctx.out.result({ destroyed: name }, () => `VM ${name} destroyed`);
    });

  cli.command('list', 'list VMs with their state').action(async () => {
    const rt = await ctx.runtime();
    await rt.vms.reconcile();
    const vms = await rt.vms.list();
    ctx.out.result(vms, () => vmTable(vms));
  });

  cli.command('status <name>', 'one VM: record, live QMP status, paths').action(async (name: string) => {
    const rt = await ctx.runtime();
    await rt.vms.reconcile();
    const vm = await rt.vms.get(name);
    const qmp = await rt.vms.qmpStatus(name).catch((e: Error) => ({ error: e.message }));
    const disk = await rt.vms.diskChain(name).catch((e: Error) => ({ error: e.message }));
    ctx.out.result({ ...vm, qmp, disk: disk ?? null }, () =>
      [
        `name      ${vm.name}`,
        `state     ${vm.state}${vm.pid ? ` (pid ${vm.pid})` : ''}${qmp && 'status' in qmp ? `, QMP: ${qmp.status}` : ''}`,
        ...(vm.end ? [`ended     ${vm.end.at}: ${vm.end.summary}${vm.end.kind === 'crashed' || vm.end.kind === 'lost' ? `\n${(vm.end.logTail ?? '').replace(/^/gm, '          ')}` : ''}`] : []),
        ...(vm.note ? [`note      ${vm.note}`] : []),
        ...(vm.monitor ? [`monitor   pid ${vm.monitor.pid}${vm.monitor.adopted ? ' (adopted its QEMU)' : ''}`] : []),
        ...(vm.restarts?.count ? [`restarts  ${vm.restarts.count}, last ${vm.restarts.lastAt ?? '?'}: ${vm.restarts.lastReason ?? ''}`] : []),
        ...(vm.reboots?.count ? [`reboots   ${vm.reboots.count}, last ${vm.reboots.lastAt ?? '?'} (each a fresh QEMU)`] : []),
        `uptime    ${vm.state === 'running' || vm.state === 'ready' ? since(vm.startedAt) : '-'}`,
        ...jailLines(vm),
        ...(vm.agent ? [`agent     ${vm.agent.version} (hostname ${vm.agent.hostname})`] : []),
        ...(Array.isArray(disk)
          ? disk.map((l, i) => `${i === 0 ? 'disk      ' : '  backed by '}${l.filename} (${l.format}, virtual ${bytes(l.virtualSize)}, on host ${bytes(l.actualSize)})`)
          : []),
        `dir       ${vm.paths.dir}`,
        `console   ${vm.paths.consoleLog}`,
        `qemu log  ${vm.paths.qemuLog}`,
        `qmp       ${vm.paths.qmpUserSocket} (yours: qmp-shell, socat; GoShip's monitor holds ${vm.paths.qmpSocket})`,
        `monitor   ${vm.paths.monitorSocket} (log ${vm.paths.monitorLog})`,
      ].join('\n'),
    );
  });

  cli
    .command('console <name>', 'show the serial console log (-f follows)')
    .option('-f, --follow', 'keep printing new output')
    .option('--raw', "the guest's bytes as they are, control sequences too (on a terminal they are shown, not obeyed)")
    .action(async (name: string, o: { follow?: boolean; raw?: boolean }) => {
      const rt = await ctx.runtime();
      await rt.vms.reconcile();
      const vm = await rt.vms.get(name);
      if (!o.follow || !LIVE_STATES.has(vm.state)) return printConsole(vm.paths.consoleLog, o.raw === true);
      // The VM's monitor writes console.log: it sends what the files hold, then every new byte.
      const monitor = await rt.vms.monitor(name);
      try {
        await monitor.console(guestSink(process.stdout, o.raw === true), { from: 'start', signal: ctx.signal });
      } finally {
        await monitor.close();
      }
    });

  cli
    .command('qmp <name> <command>', 'send one raw QMP command and print the reply')
    .example(`goshipctl vm qmp web '{"execute":"query-status"}'`)
    .action(async (name: string, command: string) => {
      let parsed: unknown;
      try {
        parsed = JSON.parse(command);
      } catch {
        throw new GoshipError('EINVALID', `QMP command is not JSON: ${command}`, { hint: `example: '{"execute":"query-status"}'` });
      }
      const rt = await ctx.runtime();
      const reply = await rt.vms.qmpRaw(name, parsed);
      process.stdout.write(`${JSON.stringify({ return: reply }, null, ctx.out.json ? 2 : undefined)}\n`);
    });

  /** The VM's agent session: a TTY shows that it waits for an agent that is not ready, at most --agent-timeout (default 30 s). */
  const guestAgent = async (name: string) => {
    const rt = await ctx.runtime();
    const waitMs = secondsOption(a, 'agent-timeout');
    return rt.vms.agent(name, undefined, {
      ...(waitMs ? { agentWaitMs: waitMs } : {}),
      onWaiting: () => {
        const p = ctx.out.progress(`waiting for the guest agent of VM ${name}`);
        return () => p.done();
      },
    });
  };
  const AGENT_TIMEOUT = ['--agent-timeout <seconds>', 'how long to wait for a guest agent that is not ready (default 30)'] as const;

  cli.command('ping <name>', 'round-trip time to the guest agent').option(...AGENT_TIMEOUT).action(async (name: string) => {
    const agent = await guestAgent(name);
    try {
      const r = await agent.ping();
      // A monitor that has just started or adopted the VM says hello before its agent session is
      // up: its hello has no hostname yet (ready: false), and the VM's name stands in for it.
      ctx.out.result({ rttMs: r.rttMs, agent: agent.hello }, () => `pong from ${agent.hello.hostname || name}: ${r.rttMs.toFixed(2)} ms`);
    } finally {
      await agent.close();
    }
  });

  cli.command('info <name>', 'what the guest agent reports: hostname, kernel, uptime, memory, disk, load').option(...AGENT_TIMEOUT).action(async (name: string) => {
    const agent = await guestAgent(name);
    try {
      const i = await agent.info();
      ctx.out.result(i, () =>
        [
          `hostname  ${i.hostname}`,
          `kernel    ${i.kernel}`,
          `uptime    ${Math.round(i.uptimeSec)}s`,
          `memory    ${bytes(i.memFree)} free of ${bytes(i.memTotal)}`,
          `disk /    ${bytes(i.diskFree)} free of ${bytes(i.diskTotal)}`,
          `load      ${i.loadavg.map((l) => l.toFixed(2)).join(' ')}`,
          `agent     ${i.agent} (boot ${i.bootId})`,
        ].join('\n'),
      );
    } finally {
      await agent.close();
    }
  });

  cli
    .command('exec <name> [...command]', 'run a command in the guest (argv, no shell), streaming its output; exits with its code')
    .option('--cwd <dir>', 'working directory in the guest')
    .option('--env <KEY=VALUE>', 'environment variable (repeatable)')
    .option('--timeout <seconds>', 'kill the command after this long')
    .option('-t, --tty', 'run it on a pseudo-terminal')
    .option(...AGENT_TIMEOUT)
    .option('--raw', 'output as it is, control sequences too (on a terminal they are shown, not obeyed; -t is always raw)')
    .example('goshipctl vm exec web -- uname -a')
    .action(async (name: string, command: string[], o: { '--'?: string[]; tty?: boolean; raw?: boolean }) => {
      const argv = [...command, ...(o['--'] ?? [])];
      if (argv.length === 0) throw new GoshipError('EUSAGE', 'vm exec: no command given', { hint: 'goshipctl vm exec NAME -- CMD ARGS' });
      const env: Record<string, string> = {};
      for (const kv of rawValues(a, 'env')) {
        const i = kv.indexOf('=');
        if (i <= 0) throw new GoshipError('EINVALID', `--env: expected KEY=VALUE, got "${kv}"`);
        env[kv.slice(0, i)] = kv.slice(i + 1);
      }
      const cwd = rawValue(a, 'cwd');
      const timeoutMs = secondsOption(a, 'timeout');
      const agent = await guestAgent(name);
      try {
        const r = await agent.exec(argv, {
          env,
          ...(cwd ? { cwd } : {}),
          ...(timeoutMs ? { timeoutMs } : {}),
          ...(o.tty ? { tty: true } : {}),
          ...(o.tty && process.stdout.rows && process.stdout.columns ? { rows: process.stdout.rows, cols: process.stdout.columns } : {}),
          ...(process.stdin.isTTY ? {} : { stdin: process.stdin }),
          // A terminal session (-t) is the guest's to draw on; otherwise a terminal gets no control sequence from the guest.
          stdout: guestSink(process.stdout, o.raw === true || o.tty === true),
          stderr: guestSink(process.stderr, o.raw === true || o.tty === true),
          signal: ctx.signal,
        });
        if (ctx.out.json) process.stderr.write(`${JSON.stringify(r)}\n`);
        return r.exitCode ?? (r.signal ? 128 + signalNumber(r.signal) : EXIT.failed);
      } finally {
        await agent.close();
        // A stdin pipe that is still open must not keep goshipctl alive after the command ended.
        if (!process.stdin.isTTY) process.stdin.destroy();
      }
    });

  cli
    .command('tunnel <name> <target>', "relay stdin and stdout to a port on the guest's loopback (PORT) or a unix socket in it (unix:/PATH), over the agent channel: an ssh ProxyCommand")
    .option(...AGENT_TIMEOUT)
    .example('ssh -o ProxyCommand="goshipctl vm tunnel web 22" goship@web')
    .action(async (name: string, target: string) => {
      const to = parseTunnelTarget(target);
      const agent = await guestAgent(name);
      // process.stdout, not a file stream on fd 1: Node makes a pipe's fd 1 non-blocking, and only its
      // socket waits for a full pipe to drain (ssh reads slower than the guest sends). On a pipe the
      // guest's half close reaches the reader when goshipctl exits; on a socket at once (shutdown).
      try {
        await agent.tunnel(to, { input: process.stdin, output: process.stdout, signal: ctx.signal });
        return EXIT.ok;
      } finally {
        await agent.close();
        process.stdin.destroy();
      }
    });

  cli
    .command('cp <src> <dst>', 'copy a file into or out of a VM: vm cp FILE NAME:/PATH, vm cp NAME:/PATH FILE')
    .option('--mode <octal>', 'file mode in the guest (upload), e.g. 0644')
    .option('--max-size <size>', `largest file taken from the guest (download; default ${DEFAULT_CP_MAX_SIZE})`)
    .option(...AGENT_TIMEOUT)
    .action(async (src: string, dst: string) => {
      const s = parseCpTarget(src);
      const d = parseCpTarget(dst);
      if ('local' in s && 'vm' in d) {
        const modeRaw = rawValue(a, 'mode');
        if (modeRaw !== undefined && !/^0?[0-7]{3,4}$/.test(modeRaw)) throw new GoshipError('EINVALID', `--mode: expected an octal mode like 0644, got "${modeRaw}"`);
        const agent = await guestAgent(d.vm);
        try {
          const r = await agent.upload(s.local, d.path, modeRaw ? { mode: parseInt(modeRaw, 8) } : {});
          ctx.out.result(r, () => `${s.local} → ${d.vm}:${d.path} (${bytes(r.bytes)}, sha256 ${r.sha256})`);
        } finally {
          await agent.close();
        }
      } else if ('vm' in s && 'local' in d) {
        const maxBytes = sizeOption(a, 'max-size') ?? DEFAULT_CP_MAX_BYTES;
        const agent = await guestAgent(s.vm);
        try {
          const r = await agent.download(s.path, d.local, { maxBytes, signal: ctx.signal });
          ctx.out.result(r, () => `${s.vm}:${s.path} → ${d.local} (${bytes(r.bytes)}, sha256 ${r.sha256})`);
        } finally {
          await agent.close();
        }
      } else {
        throw new GoshipError('EUSAGE', 'vm cp: exactly one side must be NAME:/ABSOLUTE/PATH', { hint: 'goshipctl vm cp ./app.tar web:/tmp/app.tar' });
      }
    });
}

function signalNumber(sig: string): number {
  return (osConstants.signals as Record<string, number>)[sig] ?? 1;
}

/** `vm status`: the VM's identity and its cgroup's limits, or why it has none (docs/security.md). */
export function jailLines(vm: Vm): string[] {
  const j = vm.jail;
  if (!j) return [];
  const out: string[] = [];
  if (j.uid !== undefined) out.push(`identity  uid ${j.uid} (its own)`);
  if (j.cgroup) {
    const c = j.cgroup;
    const cpus = Number((c.cpuQuotaUs / c.cpuPeriodUs).toFixed(2));
    out.push(`limits    memory ${Math.round(c.memoryBytes / (1024 * 1024))} MiB, CPU ${cpus} host CPU${cpus === 1 ? '' : 's'}, ${c.pids} tasks (cgroup v${c.version})`);
  } else if (j.noLimits) {
    out.push(`limits    none: ${j.noLimits}`);
  }
  return out;
}
