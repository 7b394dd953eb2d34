/**
 * Restarts goship-agent in a guest the way an operator would (systemctl),
 * and waits until a new agent process answers. `guest` runs a shell script
 * in the VM through the agent and returns its stdout.
 */
import { until } from './net.ts';

export async function restartGuestAgent(guest: (script: string) => Promise<string>): Promise<{ before: number; after: number }> {
  const mainPid = async (): Promise<number> => Number((await guest('systemctl show -p MainPID --value goship-agent')).trim());
  const before = await mainPid();
  // Restarted by systemd a moment after this exec has its answer (a restart now would cut the exec off).
  // A transient timer's default accuracy is a minute: ask for 10 ms.
  await guest('systemd-run --quiet --on-active=1 --timer-property=AccuracySec=10ms systemctl restart goship-agent');
  const after = await until(
    'a new goship-agent to answer',
    async () => {
      const pid = await mainPid().catch(() => undefined);
      return pid !== undefined && pid > 0 && pid !== before ? pid : undefined;
    },
    120_000,
    500,
  );
  return { before, after };
}
