/**
 * GOSHIP_TRACE=1: each runtime step on stderr with the time since the process
 * started (`[+1.234s] qemu: spawned pid 123`), to see where time goes.
 */
import { performance } from 'node:perf_hooks';

const enabled = Boolean(process.env.GOSHIP_TRACE);

export function trace(message: string): void {
  if (enabled) process.stderr.write(`[+${(performance.now() / 1000).toFixed(3)}s] ${message}\n`);
}
