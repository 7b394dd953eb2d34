/**
 * QEMU processes in /proc: recognise our own, wait for them to go, read the
 * tail of their log. No daemon: every `goshipctl` invocation finds its VMs
 * again through /proc.
 */
import { open, readFile } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { statState } from '../proc.ts';
import { processMarker } from './argv.ts';

export { processMarker, statState };


/** Pure: does this NUL-separated /proc/PID/cmdline belong to the VM with this marker? */
export function cmdlineHasMarker(cmdline: string, marker: string): boolean {
  const args = cmdline.split('\0');
  for (let i = 0; i < args.length - 1; i++) {
    if (args[i] === '-name') {
      // -name guest=NAME,process=MARKER[,debug-threads=on]; names cannot hold commas.
      return (args[i + 1] ?? '').split(',').includes(`process=${marker}`);
    }
  }
  return false;
}


/**
 * True when `pid` is alive, not a zombie, and its command line carries `marker`.
 * A PID reused by an unrelated process is therefore never taken for the VM.
 */
export async function isOurProcess(pid: number, marker: string): Promise<boolean> {
  try {
    const [cmdline, stat] = await Promise.all([
      readFile(`/proc/${pid}/cmdline`, 'latin1'),
      readFile(`/proc/${pid}/stat`, 'latin1'),
    ]);
    return statState(stat) !== 'Z' && cmdlineHasMarker(cmdline, marker);
  } catch {
    return false;
  }
}

/** Waits until the process is gone (or no longer ours). Resolves false on timeout. */
export async function waitGone(pid: number, marker: string, timeoutMs: number, pollMs = 10): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (!(await isOurProcess(pid, marker))) return true;
    if (Date.now() >= deadline) return false;
    await sleep(pollMs);
  }
}

/** The last lines of a log file (at most `maxBytes` read), or '' when it does not exist. */
export async function logTail(path: string, maxLines = 15, maxBytes = 16_384): Promise<string> {
  let fh;
  try {
    fh = await open(path, 'r');
  } catch {
    return '';
  }
  try {
    const { size } = await fh.stat();
    const start = Math.max(0, size - maxBytes);
    const buf = Buffer.alloc(size - start);
    await fh.read(buf, 0, buf.length, start);
    const lines = buf.toString('utf8').split('\n');
    if (start > 0) lines.shift(); // a partial first line
    while (lines.length > 0 && lines[lines.length - 1]!.trim() === '') lines.pop();
    return lines.slice(-maxLines).join('\n');
  } finally {
    await fh.close();
  }
}
