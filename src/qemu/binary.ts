/**
 * The QEMU binary: its version as printed by `--version`, and as reported over
 * QMP `query-version` by a QEMU started with `-machine none -nodefaults -S`
 * (which also proves QMP works on this host).
 */
import { spawn } from 'node:child_process';
import { mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { execa } from 'execa';
import { GoshipError } from '../errors.ts';
import { QmpClient } from '../qmp/index.ts';

export const QEMU_BINARY = 'qemu-system-x86_64';

/** Pure: `QEMU emulator version 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)` → parts. */
export function parseQemuVersionText(text: string): { version: string; package: string | undefined } | undefined {
  const m = /QEMU emulator version (\d+\.\d+\.\d+)(?:\s*\(([^)]*)\))?/.exec(text);
  return m ? { version: m[1]!, package: m[2] || undefined } : undefined;
}

export interface QemuVersionReport {
  binary: string;
  /** From `--version`. */
  version: string;
  package: string | undefined;
  /** From QMP `query-version` of a live QEMU. */
  qmp: { version: string; package: string };
}

function notInstalled(binary: string, cause: unknown): GoshipError {
  return new GoshipError('EQEMU_MISSING', `${binary} is not installed or not executable`, {
    hint: 'install it: apt-get install qemu-system-x86',
    cause,
  });
}

/** Waits for a path to exist (QEMU creates its server sockets during start-up). */
export async function waitForPath(path: string, timeoutMs: number, alive: () => boolean): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      await stat(path);
      return true;
    } catch {
      /* not yet */
    }
    if (!alive() || Date.now() >= deadline) return false;
    await sleep(5);
  }
}

export async function qemuVersion(binary = QEMU_BINARY): Promise<QemuVersionReport> {
  let text: string;
  try {
    text = (await execa(binary, ['--version'])).stdout;
  } catch (cause) {
    throw notInstalled(binary, cause);
  }
  const parsed = parseQemuVersionText(text);
  if (!parsed) throw new GoshipError('EQEMU_VERSION', `cannot read the version from '${binary} --version': ${text.split('\n')[0]}`);

  const dir = await mkdtemp(join(tmpdir(), 'goship-v-'));
  const sock = join(dir, 'qmp.sock');
  const child = spawn(binary, ['-machine', 'none', '-nodefaults', '-no-user-config', '-display', 'none', '-S', '-qmp', `unix:${sock},server=on,wait=off`], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  let exited = false;
  child.once('exit', () => (exited = true));
  try {
    if (!(await waitForPath(sock, 10_000, () => !exited))) {
      throw new GoshipError('EQEMU_START', `${binary} -machine none did not open its QMP socket: ${stderr.trim() || 'no output'}`);
    }
    const qmp = await QmpClient.connect(sock, { timeoutMs: 5000 });
    try {
      const v = await qmp.queryVersion();
      const q = v.qemu;
      await qmp.quit();
      return { binary, version: parsed.version, package: parsed.package, qmp: { version: `${q.major}.${q.minor}.${q.micro}`, package: v.package.trim() } };
    } finally {
      await qmp.close();
    }
  } finally {
    if (!exited) child.kill('SIGKILL');
    await rm(dir, { recursive: true, force: true });
  }
}
