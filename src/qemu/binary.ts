/**
 * The QEMU binary: its version as printed by `--version`, its machine-type
 * aliases, and a bare QEMU (`-machine none -nodefaults -S`) with only a QMP
 * socket, which the runtime asks for `query-version` (proving QMP works here).
 */
import { spawn } from 'node:child_process';
import { mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { QemuError } from './errors.ts';

export const QEMU_BINARY = 'qemu-system-x86_64';

/** Pure: `QEMU emulator version 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)` → parts. */
export function parseQemuVersionText(text: string): { version: string; package: string | undefined } | undefined {
  const m = /QEMU emulator version (\d+\.\d+\.\d+)(?:\s*\(([^)]*)\))?/.exec(text);
  return m ? { version: m[1]!, package: m[2] || undefined } : undefined;
}

function notInstalled(binary: string, cause: unknown): QemuError {
  return new QemuError('EQEMU_MISSING', `${binary} is not installed or not executable`, {
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

/** `BINARY --version`, parsed. */
export async function readQemuVersion(binary = QEMU_BINARY): Promise<{ version: string; package: string | undefined }> {
  let text: string;
  try {
    const { execa } = await import('execa');
    text = (await execa(binary, ['--version'])).stdout;
  } catch (cause) {
    throw notInstalled(binary, cause);
  }
  const parsed = parseQemuVersionText(text);
  if (!parsed) throw new QemuError('EQEMU_VERSION', `cannot read the version from '${binary} --version': ${text.split('\n')[0]}`);
  return parsed;
}

/** A QEMU with no machine (`-machine none -S`), only a QMP socket: for asking QEMU about itself. */
export interface BareQemu {
  /** Its QMP socket, already created. */
  socket: string;
  /** Kills it and removes its socket directory. */
  dispose(): Promise<void>;
}

/** Starts `BINARY -machine none -nodefaults -S` with a QMP socket in a private temporary directory. */
export async function startBareQemu(binary = QEMU_BINARY): Promise<BareQemu> {
  const dir = await mkdtemp(join(tmpdir(), 'goship-v-'));
  const socket = join(dir, 'qmp.sock');
  const child = spawn(binary, ['-machine', 'none', '-nodefaults', '-no-user-config', '-display', 'none', '-S', '-qmp', `unix:${socket},server=on,wait=off`], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  let exited = false;
  const gone = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  void gone.then(() => (exited = true));
  child.once('error', () => (exited = true));
  const dispose = async (): Promise<void> => {
    if (!exited) {
      child.kill('SIGKILL');
      await gone;
    }
    await rm(dir, { recursive: true, force: true });
  };
  if (!(await waitForPath(socket, 10_000, () => !exited))) {
    await dispose();
    throw new QemuError('EQEMU_START', `${binary} -machine none did not open its QMP socket: ${stderr.trim() || 'no output'}`, {
      hint: 'run it by hand to see why: ' + `${binary} -machine none -nodefaults -display none -S -qmp stdio`,
    });
  }
  return { socket, dispose };
}

/** Pure: `-machine help` → each alias and the versioned type it stands for (`q35` → `pc-q35-7.2`). */
export function parseMachineAliases(text: string): Map<string, string> {
  const aliases = new Map<string, string>();
  for (const line of text.split('\n')) {
    const m = /^(\S+)\s.*\(alias of (\S+)\)/.exec(line);
    if (m) aliases.set(m[1]!, m[2]!);
  }
  return aliases;
}

/** The versioned machine type an alias stands for on this QEMU (`-machine help`). */
export async function machineAliases(binary = QEMU_BINARY): Promise<Map<string, string>> {
  let text: string;
  try {
    const { execa } = await import('execa');
    text = (await execa(binary, ['-machine', 'help'])).stdout;
  } catch (cause) {
    throw notInstalled(binary, cause);
  }
  return parseMachineAliases(text);
}
