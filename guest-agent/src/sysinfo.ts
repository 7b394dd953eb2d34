/** `ping`, `info` and `shutdown`: facts about the guest, and powering it off. */
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { readFile, statfs } from 'node:fs/promises';
import { hostname, loadavg, release, totalmem, freemem, uptime } from 'node:os';
import { PingParamsSchema, type InfoResult, type PingResult, type ShutdownResult } from '../../src/protocol/index.ts';
import { AGENT_VERSION } from './version.ts';
import { parseParams, type AgentContext, type Call } from './session.ts';

/** The kernel's boot id: changes at every boot, so the host can tell a reboot from a reconnect. */
export function readBootId(): string {
  try {
    return readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim().slice(0, 64);
  } catch {
    return '';
  }
}

export async function pingMethod(_call: Call, rawParams: unknown): Promise<PingResult> {
  const p = parseParams(PingParamsSchema, rawParams, 'ping');
  return p.data === undefined ? { time: Date.now() } : { data: p.data, time: Date.now() };
}

/** MemAvailable (what can be used without swapping) when the kernel reports it, else MemFree. */
async function memAvailable(): Promise<number> {
  try {
    const text = await readFile('/proc/meminfo', 'utf8');
    const m = /^MemAvailable:\s+(\d+) kB$/m.exec(text);
    if (m) return Number(m[1]) * 1024;
  } catch {
    // not Linux
  }
  return freemem();
}

export async function infoMethod(_call: Call, _params: unknown, ctx: AgentContext): Promise<InfoResult> {
  const fs = await statfs('/');
  const [l1, l5, l15] = loadavg();
  return {
    hostname: hostname().slice(0, 255),
    kernel: release().slice(0, 255),
    uptimeSec: uptime(),
    memTotal: totalmem(),
    memFree: await memAvailable(),
    diskTotal: fs.blocks * fs.bsize,
    diskFree: fs.bavail * fs.bsize,
    loadavg: [l1 ?? 0, l5 ?? 0, l15 ?? 0],
    agent: AGENT_VERSION,
    bootId: ctx.bootId(),
  };
}

/** The argv that powers the guest off. Never a shell string. */
export const POWEROFF_ARGV = ['systemctl', 'poweroff'] as const;
/** Time for the reply to reach the host before the power-off starts. */
export const POWEROFF_DELAY_MS = 500;

export async function shutdownMethod(_call: Call, _params: unknown, ctx: AgentContext): Promise<ShutdownResult> {
  if (ctx.dryRunShutdown) {
    ctx.log(`shutdown requested (test mode: not running ${POWEROFF_ARGV.join(' ')})`);
    return { accepted: true, dryRun: true };
  }
  setTimeout(() => {
    ctx.log(`shutdown requested: running ${POWEROFF_ARGV.join(' ')}`);
    const child = spawn(POWEROFF_ARGV[0], POWEROFF_ARGV.slice(1), { stdio: 'ignore', detached: true });
    child.on('error', (err) => ctx.log(`${POWEROFF_ARGV.join(' ')} failed: ${err.message}`));
    child.on('exit', (code) => {
      if (code !== 0) ctx.log(`${POWEROFF_ARGV.join(' ')} exited with ${code}`);
    });
  }, POWEROFF_DELAY_MS);
  return { accepted: true, dryRun: false };
}
