/** goshipctl version, goshipctl host, goshipctl ssh, goshipctl ssh-config. */
import { realpathSync } from 'node:fs';
import { execa } from 'execa';
import type { CAC } from 'cac';
import { formatHostReport, type Runtime } from '../../runtime/index.ts';
import { secondsOption } from '../args.ts';
import type { CommandContext } from '../context.ts';
import { VERSION } from '../version.ts';

export function registerTop(cli: CAC, ctx: CommandContext): void {
  cli
    .command('version', 'GoShip, QEMU and QMP versions, and the accelerator `auto` picks')
    .example('goshipctl version --json')
    .action(async () => {
      const rt = await ctx.runtime();
      const data = await rt.versions(VERSION);
      const { qemu, accel } = data;
      ctx.out.result(data, () =>
        [
          `goship   ${VERSION} (node ${process.version})`,
          `qemu     ${qemu.version}${qemu.package ? ` (${qemu.package})` : ''}  ${qemu.binary}`,
          `qmp      query-version ${qemu.qmp.version} (QMP works on this host)`,
          `accel    auto → ${accel.accel}: ${accel.reason}`,
        ].join('\n'),
      );
    });

  cli
    .command('host', 'what this host can do: CPU, topology, NUMA, hugepages, KVM, SEV/TDX')
    .example('goshipctl host --json')
    .action(async () => {
      const rt = await ctx.runtime();
      const report = await rt.hostReport();
      ctx.out.result(report, () => formatHostReport(report));
    });

  const AGENT_TIMEOUT = ['--agent-timeout <seconds>', 'how long to wait for a guest agent that is not ready (default 30)'] as const;
  /** How ssh runs goshipctl for its ProxyCommand: this very goshipctl, on this GoShip's home and run directories. */
  const sshAccess = async (rt: Runtime, name: string) => {
    const agentTimeoutMs = secondsOption(ctx.argv, 'agent-timeout');
    const proxy = ['/usr/bin/env', `GOSHIP_HOME=${rt.layout.home}`, `GOSHIP_RUN=${rt.layout.run}`, process.execPath, realpathSync(process.argv[1] ?? '')];
    return rt.projects.ssh(name, proxy, agentTimeoutMs !== undefined ? { agentTimeoutMs } : {});
  };

  cli
    .command('ssh-config <name>', "print a `Host goship-NAME` block for OpenSSH (ssh -F, scp -F, rsync -e, VS Code): the project's own key, its pinned host keys, a ProxyCommand over the agent channel")
    .option(...AGENT_TIMEOUT)
    .example('goshipctl ssh-config web >> ~/.ssh/config && ssh goship-web')
    .action(async (name: string) => {
      const r = await sshAccess(await ctx.runtime(), name);
      ctx.out.result({ host: r.alias, configFile: r.configFile, config: r.config }, () => r.config.trimEnd());
    });

  cli
    .command('ssh <name> [...command]', "OpenSSH into the project's VM as its user (goship), or run a command there: ssh -F with the project's ssh-config")
    .option(...AGENT_TIMEOUT)
    .example('goshipctl ssh web -- uname -a')
    .action(async (name: string, command: string[], o: { '--'?: string[] }) => {
      const r = await sshAccess(await ctx.runtime(), name);
      const words = [...command, ...(o['--'] ?? [])];
      const ssh = await execa('ssh', ['-F', r.configFile, r.alias, ...(words.length > 0 ? ['--', ...words] : [])], { stdio: 'inherit', reject: false });
      return ssh.exitCode ?? 255;
    });
}
