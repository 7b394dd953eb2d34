/** goshipctl version, goshipctl host. */
import type { CAC } from 'cac';
import { formatHostReport } from '../../runtime/index.ts';
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
}
