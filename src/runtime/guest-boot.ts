/**
 * When a project is ready: its guest agent answers early in the guest's boot
 * (before sysinit.target), long before the network is up or cloud-init has
 * provisioned the guest. `project create/start` wait (by default) for both:
 * `network-online.target` active, then cloud-init's `result.json` of this
 * boot. Everything is asked through the agent with fixed argv and paths; what
 * the guest answers is bounded and validated.
 */
import * as v from 'valibot';
import { setTimeout as sleep } from 'node:timers/promises';
import type { AgentClient } from '../serial/index.ts';
import { failureLine, tailCollector } from './bounded.ts';
import { RuntimeError } from './errors.ts';

/** What `project create/start` wait for: `agent` (its hello) or `boot` (also network online and cloud-init done). */
export const WAIT_LEVELS = ['boot', 'agent'] as const;
export type WaitLevel = (typeof WAIT_LEVELS)[number];

export type BootStepName = 'qemu' | 'agent' | 'identity' | 'disk' | 'clock' | 'network' | 'cloud-init';

/** One step of a start, `atMs` after the command began; `skipped` says why a step did not apply to this guest. */
export interface BootStep {
  step: BootStepName;
  atMs: number;
  skipped?: string;
}

/** A step that begins (`waiting`) or is reached (`done`). */
export type BootProgress = { step: BootStepName; state: 'waiting' | 'done'; atMs: number; skipped?: string };

/**
 * Returns once network-online.target is reached (systemd-networkd-wait-online,
 * or whatever the image orders before it): the job the boot queued for it is
 * joined, so the guest spends no CPU on the wait; at once when it is reached.
 */
export const NETWORK_ONLINE_ARGV = ['systemctl', 'start', 'network-online.target'] as const;
/** Written by cloud-init at the end of its last stage of this boot (/run is a tmpfs: never a file of an earlier boot). */
export const CLOUD_INIT_RESULT = '/run/cloud-init/result.json';
/** Written by cloud-init's generator (before any unit starts) when cloud-init runs in this boot. */
export const CLOUD_INIT_ENABLED = '/run/cloud-init/enabled';
/** The most of result.json read: cloud-init writes a few hundred bytes. */
export const RESULT_MAX_BYTES = 64 * 1024;
/** Errors kept from result.json, and characters of each. */
const MAX_ERRORS = 10;
const MAX_ERROR_CHARS = 500;

const ResultSchema = v.object({
  v1: v.object({
    datasource: v.optional(v.nullable(v.string())),
    errors: v.array(v.unknown()),
  }),
});

/** Pure: cloud-init's result.json → its errors (at most 10, each cut at 500 characters), or why the text is not such a file. */
export function parseCloudInitResult(text: string): { errors: string[] } | { invalid: string } {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    return { invalid: 'not JSON' };
  }
  const r = v.safeParse(ResultSchema, json);
  if (!r.success) return { invalid: 'no v1.errors list' };
  const all = r.output.v1.errors;
  const errors = all.slice(0, MAX_ERRORS).map((e) => {
    const s = typeof e === 'string' ? e : JSON.stringify(e);
    return s.length > MAX_ERROR_CHARS ? `${s.slice(0, MAX_ERROR_CHARS)}…` : s;
  });
  if (all.length > MAX_ERRORS) errors.push(`… and ${all.length - MAX_ERRORS} more`);
  return { errors };
}

/** Pure: "agent 18.2 s, network 57.0 s, cloud-init 82.3 s" (skipped steps say so). */
export function bootStepsText(steps: readonly BootStep[]): string {
  return steps.map((s) => `${s.step} ${s.skipped ? `skipped (${s.skipped})` : `${(s.atMs / 1000).toFixed(1)} s`}`).join(', ');
}

/** The steps of one start, timed from `began`; each is told to `onProgress` as it begins and as it is reached. */
export interface BootTrack {
  began: number;
  steps: BootStep[];
  waiting(step: BootStepName): void;
  reach(step: BootStepName, skipped?: string): void;
}

export function bootTrack(began: number, onProgress?: (p: BootProgress) => void): BootTrack {
  const steps: BootStep[] = [];
  const at = (): number => Date.now() - began;
  return {
    began,
    steps,
    waiting: (step) => onProgress?.({ step, state: 'waiting', atMs: at() }),
    reach: (step, skipped) => {
      const s: BootStep = { step, atMs: at(), ...(skipped ? { skipped } : {}) };
      steps.push(s);
      onProgress?.({ ...s, state: 'done' });
    },
  };
}

export interface GuestBootOptions {
  /** The VM's name, for messages. */
  name: string;
  /** `Date.now()` after which the wait fails. */
  deadline: number;
  /** Where the steps go. */
  track: BootTrack;
  /** Between two looks. Default 1 s. */
  pollMs?: number;
}

type Probe = Pick<AgentClient, 'exec' | 'stat'>;

const remoteCode = (err: unknown): string | undefined => (err as { remoteCode?: string }).remoteCode;

async function exists(agent: Probe, path: string): Promise<boolean> {
  try {
    await agent.stat(path);
    return true;
  } catch (err) {
    if (remoteCode(err) === 'ENOENT') return false;
    throw err;
  }
}

/** Waits for network-online.target, then for cloud-init's result of this boot; each step goes to `o.track`. */
export async function waitGuestBoot(agent: Probe, o: GuestBootOptions): Promise<void> {
  const pollMs = o.pollMs ?? 1000;
  const { track } = o;
  const late = (what: string, hint: string): RuntimeError =>
    new RuntimeError('EGUEST_BOOT', `VM ${o.name}: ${what} within ${Math.round((o.deadline - track.began) / 1000)} s of the start`, { hint });
  const poll = async (what: string, hint: string): Promise<void> => {
    if (Date.now() + pollMs > o.deadline) throw late(what, hint);
    await sleep(pollMs);
  };

  track.waiting('network');
  const networkHint = `read the guest's console: goshipctl vm console ${o.name}; --timeout S waits longer, --wait agent does not wait for the network`;
  const said = tailCollector(4096);
  try {
    const r = await agent.exec(NETWORK_ONLINE_ARGV, { stdout: said.stream, stderr: said.stream, timeoutMs: Math.max(1000, o.deadline - Date.now()) });
    if (r.timedOut) throw late('its network is not online (network-online.target)', networkHint);
    if (r.exitCode !== 0) {
      const why = failureLine(said.bytes(), r);
      throw new RuntimeError('EGUEST_BOOT', `VM ${o.name}: network-online.target cannot be reached: ${why}`, { hint: networkHint });
    }
    track.reach('network');
  } catch (err) {
    if (remoteCode(err) !== 'ENOENT') throw err;
    track.reach('network', 'no systemctl in the guest');
  }

  track.waiting('cloud-init');
  if (!(await exists(agent, CLOUD_INIT_ENABLED))) {
    track.reach('cloud-init', 'not run in this guest');
    return;
  }
  // The agent's stat: no process in the guest per look.
  while (!(await exists(agent, CLOUD_INIT_RESULT))) {
    await poll('cloud-init has not finished', `see where it is: goshipctl vm exec ${o.name} -- cloud-init status --long; --timeout S waits longer`);
  }
  const out = tailCollector(RESULT_MAX_BYTES);
  const r = await agent.exec(['cat', CLOUD_INIT_RESULT], { stdout: out.stream, timeoutMs: 10_000 });
  const parsed = r.exitCode === 0 ? parseCloudInitResult(out.bytes().toString('utf8')) : { invalid: `cat exited with ${r.exitCode ?? r.signal}` };
  const hint = `see what cloud-init did: goshipctl vm exec ${o.name} -- cloud-init status --long (and /var/log/cloud-init.log in the guest)`;
  if ('invalid' in parsed) throw new RuntimeError('EGUEST_BOOT', `VM ${o.name}: cloud-init's ${CLOUD_INIT_RESULT} cannot be read: ${parsed.invalid}`, { hint });
  if (parsed.errors.length > 0) {
    throw new RuntimeError('EGUEST_BOOT', `VM ${o.name}: cloud-init reported ${parsed.errors.length === 1 ? 'an error' : 'errors'}: ${parsed.errors.join('; ')}`, { hint });
  }
  track.reach('cloud-init');
}
