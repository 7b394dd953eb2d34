/**
 * goship-agent: the guest side of GoShip's agent channel.
 *
 *   goship-agent                      serve on the virtio-serial port org.goship.agent.0 (the real transport)
 *   goship-agent --port PATH          serve on this character device
 *   goship-agent --fifo IN OUT        serve on a FIFO pair (tests of the port loop)
 *   goship-agent --listen SOCKET      test mode: serve on a unix socket, one session per connection
 *   goship-agent --version
 *
 * Runs as root under systemd (Restart=always). Logs go to stderr (the journal).
 */
// Writes to the port block one thread of libuv's pool; keep enough for file I/O.
// Set before any asynchronous file operation starts the pool.
process.env.UV_THREADPOOL_SIZE ??= '8';

import { hostname } from 'node:os';
import { downloadMethod, statMethod, uploadMethod } from './files.ts';
import { appHandlers } from './apps.ts';
import { procHandlers } from './procs.ts';
import { execMethod } from './exec.ts';
import { serveUnixSocket } from './listen.ts';
import { servePort } from './port.ts';
import type { AgentContext, Handler } from './session.ts';
import { infoMethod, pingMethod, readBootId, shutdownMethod } from './sysinfo.ts';
import { tunnelMethod } from './tunnel.ts';
import { AGENT_VERSION } from './version.ts';

const handlers: Record<string, Handler> = {
  ping: pingMethod,
  info: infoMethod,
  exec: execMethod,
  upload: uploadMethod,
  download: downloadMethod,
  stat: statMethod,
  shutdown: shutdownMethod,
  tunnel: tunnelMethod,
  ...appHandlers,
  ...procHandlers,
};

function log(line: string): void {
  process.stderr.write(`goship-agent[${process.pid}]: ${line}\n`);
}

const USAGE = 'usage: goship-agent [--port PATH | --fifo IN OUT | --listen SOCKET | --version]';

async function main(argv: string[]): Promise<void> {
  const bootId = readBootId();
  const ctx = (dryRunShutdown: boolean): AgentContext => ({ hostname, bootId: () => bootId, log, dryRunShutdown });
  const [flag, a, b] = argv;
  // A host that vanishes mid-write must not kill the agent.
  process.on('SIGPIPE', () => undefined);
  process.on('uncaughtException', (err) => log(`uncaught: ${err.stack ?? err.message}`));
  process.on('unhandledRejection', (err) => log(`unhandled rejection: ${(err as Error)?.stack ?? String(err)}`));

  switch (flag) {
    case '--version':
      process.stdout.write(`goship-agent ${AGENT_VERSION}\n`);
      return;
    case '--listen': {
      if (!a) throw new Error(USAGE);
      const server = await serveUnixSocket(a, ctx(true), handlers);
      log(`test mode: listening on ${a} (the real transport is the virtio-serial port)`);
      const stop = (): void => {
        server.close();
        process.exit(0);
      };
      process.on('SIGTERM', stop);
      process.on('SIGINT', stop);
      return;
    }
    case '--fifo':
      if (!a || !b) throw new Error(USAGE);
      await servePort({ inPath: a, outPath: b, ctx: ctx(true), handlers });
      return;
    case '--port':
      if (!a) throw new Error(USAGE);
      await servePort({ path: a, ctx: ctx(false), handlers });
      return;
    case undefined:
      await servePort({ ctx: ctx(false), handlers });
      return;
    default:
      throw new Error(`unknown argument ${JSON.stringify(flag)}\n${USAGE}`);
  }
}

main(process.argv.slice(2)).catch((err: unknown) => {
  log((err as Error).message);
  process.exit(2);
});
