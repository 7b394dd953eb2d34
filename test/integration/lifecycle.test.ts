/**
 * VM lifecycle against real QEMU and the fast test guest (kernel + busybox
 * initramfs, TCG): start, stop with the escalation, crash detection, PID
 * reuse, concurrency, bad input.
 */
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { readFile, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isOurProcess, processMarker, waitGone } from '../../src/qemu/index.ts';
import { withQmp } from '../../src/runtime/machine.ts';
import { Runtime } from '../../src/runtime/index.ts';
import { FASTGUEST_ACPI_IGNORE, fastGuest, type FastGuest } from '../helpers/fast-guest.ts';
import { testEnv, type TestEnv } from '../helpers/runtime-env.ts';

let env: TestEnv;
let rt: Runtime;
let guest: FastGuest;

function spec(name: string, extraCmdline = '') {
  return {
    name,
    memory: '256M',
    boot: { kernel: guest.kernel, initrd: guest.initrd, cmdline: `${guest.cmdline} ${extraCmdline}`.trim() },
    network: { mode: 'none' as const },
  };
}

/** Every QEMU process of this test's VMs (by marker), to prove nothing is left. */
async function ourQemus(): Promise<number[]> {
  const { stdout } = await execa('pgrep', ['-f', `process=goship-lc-`], { reject: false });
  return stdout.split('\n').filter(Boolean).map(Number);
}

/** Waits for a line on the guest's serial console (console.log). */
async function waitConsole(path: string, text: string, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (existsSync(path) && (await readFile(path, 'utf8')).includes(text)) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`no "${text}" in ${path} within ${timeoutMs} ms`);
}

beforeAll(async () => {
  guest = await fastGuest();
  env = await testEnv('lc');
  rt = await Runtime.open({ layout: env.layout });
}, 300_000);

afterAll(async () => {
  for (const pid of await ourQemus()) process.kill(pid, 'SIGKILL');
  await env.cleanup();
});

describe('VM lifecycle on real QEMU', () => {
  it('start → running (QMP query-status) → stop → no process left', async () => {
    await rt.vms.create({ spec: spec('lc-basic') });
    const vm = await rt.vms.start('lc-basic');
    expect(vm.state).toBe('running');
    expect(await isOurProcess(vm.pid!, processMarker('lc-basic'))).toBe(true);
    expect(await withQmp(vm.paths.qmpSocket, (q) => q.queryStatus())).toMatchObject({ status: 'running', running: true });
    // ACPI power-down only works once the guest listens for the power button.
    await waitConsole(vm.paths.consoleLog, 'acpid handles the power button');
    const stopped = await rt.vms.stop('lc-basic', { timeouts: { acpiMs: 30_000 } });
    expect(stopped.endedBy).toBe('acpi');
    expect(stopped.vm.state).toBe('stopped');
    expect(stopped.vm.stopReason).toBe('stopped by acpi');
    expect(await isOurProcess(vm.pid!, processMarker('lc-basic'))).toBe(false);
    expect(existsSync(vm.paths.qmpSocket)).toBe(false);
  }, 120_000);

  it('a guest that ignores ACPI power-down is still stopped by the escalation', async () => {
    await rt.vms.create({ spec: spec('lc-stubborn', FASTGUEST_ACPI_IGNORE) });
    const vm = await rt.vms.start('lc-stubborn');
    const r = await rt.vms.stop('lc-stubborn', { timeouts: { acpiMs: 1500, quitMs: 5000 } });
    expect(r.attempts.map((a) => [a.step, a.outcome])).toEqual([
      ['acpi', 'timeout'],
      ['quit', 'ended'],
    ]);
    expect(r.endedBy).toBe('quit');
    expect(await isOurProcess(vm.pid!, processMarker('lc-stubborn'))).toBe(false);
  }, 120_000);

  it('stop --force skips the graceful steps', async () => {
    await rt.vms.start('lc-stubborn');
    const r = await rt.vms.stop('lc-stubborn', { force: true });
    expect(r.attempts[0]).toEqual({ step: 'quit', outcome: 'ended' });
  }, 120_000);

  it('kill -9 of QEMU is detected as crashed by the next command, with the end of its log', async () => {
    const vm = await rt.vms.start('lc-basic');
    process.kill(vm.pid!, 'SIGKILL');
    expect(await waitGone(vm.pid!, processMarker('lc-basic'), 5000)).toBe(true);
    const changes = await rt.vms.reconcile();
    expect(changes).toEqual([{ vm: 'lc-basic', from: 'running', to: 'crashed', reason: 'process gone' }]);
    const rec = await rt.vms.get('lc-basic');
    expect(rec.state).toBe('crashed');
    expect(rec.crash?.logTail).toBeTypeOf('string');
    expect(rec.pid).toBeUndefined();
    // A crashed VM can be started again.
    expect((await rt.vms.start('lc-basic')).state).toBe('running');
    await rt.vms.stop('lc-basic', { force: true });
  }, 120_000);

  it('a guest that powers itself off is recorded as stopped, not crashed', async () => {
    const vm = await rt.vms.start('lc-basic');
    await waitConsole(vm.paths.consoleLog, 'acpid handles the power button');
    // The power button pressed from outside GoShip's stop: the guest shuts itself down.
    await withQmp(vm.paths.qmpSocket, (q) => q.systemPowerdown());
    expect(await waitGone(vm.pid!, processMarker('lc-basic'), 30_000)).toBe(true);
    expect(await rt.vms.reconcile()).toEqual([{ vm: 'lc-basic', from: 'running', to: 'stopped', reason: 'guest powered off' }]);
    const rec = await rt.vms.get('lc-basic');
    expect(rec.stopReason).toBe('the guest powered itself off');
    expect(rec.crash).toBeUndefined();
  }, 120_000);

  it('a QEMU left by a goshipctl killed between spawn and record is adopted through its pidfile', async () => {
    const vm = await rt.vms.start('lc-basic');
    // What a kill -9 right after spawn leaves: state starting, the op of a dead goshipctl, no PID recorded.
    const dead = spawn('true');
    await new Promise((r) => dead.once('exit', r));
    await rt.store.update((d) => {
      const rec = d.vms['lc-basic']!;
      rec.state = 'starting';
      rec.op = { kind: 'start', pid: dead.pid!, startedAt: new Date().toISOString() };
      delete rec.pid;
    });
    const changes = await rt.vms.reconcile();
    expect(changes).toEqual([
      { vm: 'lc-basic', from: 'starting', to: 'running', reason: `adopted running QEMU (pid ${vm.pid}) left by an interrupted start` },
    ]);
    const rec = await rt.vms.get('lc-basic');
    expect([rec.state, rec.pid, rec.op]).toEqual(['running', vm.pid, undefined]);
    expect((await rt.vms.stop('lc-basic', { force: true })).endedBy).toBe('quit');
  }, 120_000);

  it('a recorded PID reused by an unrelated process is not mistaken for the VM', async () => {
    const vm = await rt.vms.start('lc-basic');
    process.kill(vm.pid!, 'SIGKILL');
    await waitGone(vm.pid!, processMarker('lc-basic'), 5000);
    // An unrelated long-lived process now holds the PID the record points at.
    const impostor = spawn('sleep', ['60'], { stdio: 'ignore' });
    await rt.store.update((d) => {
      d.vms['lc-basic']!.pid = impostor.pid!;
    });
    await writeFile(vm.paths.pidfile, `${impostor.pid}\n`);
    await rt.vms.reconcile();
    expect((await rt.vms.get('lc-basic')).state).toBe('crashed');
    await expect(rt.vms.stop('lc-basic')).rejects.toMatchObject({ code: 'ESTATE', message: 'VM lc-basic is not running (state: crashed)' });
    // The impostor was left alone.
    expect(impostor.exitCode).toBeNull();
    expect(() => process.kill(impostor.pid!, 0)).not.toThrow();
    impostor.kill('SIGKILL');
  }, 120_000);

  it('5 VMs started and stopped concurrently leave no stray process, socket or file', async () => {
    const names = [1, 2, 3, 4, 5].map((i) => `lc-c${i}`);
    await Promise.all(names.map((n) => rt.vms.create({ spec: spec(n) })));
    const started = await Promise.all(names.map((n) => rt.vms.start(n)));
    expect(started.map((v) => v.state)).toEqual(names.map(() => 'running'));
    expect(new Set(started.map((v) => v.pid)).size).toBe(5);
    const stopped = await Promise.all(names.map((n) => rt.vms.stop(n, { force: true })));
    expect(stopped.map((s) => s.vm.state)).toEqual(names.map(() => 'stopped'));
    for (const v of started) expect(await isOurProcess(v.pid!, processMarker(v.id))).toBe(false);
    await Promise.all(names.map((n) => rt.vms.destroy(n)));
    for (const v of started) expect(existsSync(v.paths.dir)).toBe(false);
    const runLeft = existsSync(env.layout.run) ? (await readdir(env.layout.run)).filter((d) => d.startsWith('lc-c')) : [];
    expect(runLeft).toEqual([]);
    expect(Object.keys((await rt.store.read()).vms).filter((k) => k.startsWith('lc-c'))).toEqual([]);
  }, 180_000);

  it('QMP events arrive while commands are in flight, and a dead QEMU rejects promptly', async () => {
    const vm = await rt.vms.start('lc-basic');
    await withQmp(vm.paths.qmpSocket, async (q) => {
      const { event } = await q.expectEvent('STOP', () => q.stop());
      expect(event.event).toBe('STOP');
      const pending = q.queryStatus().then(
        () => 'resolved',
        (e: { code: string }) => e.code,
      );
      const resumed = q.waitForEvent('RESUME', { timeoutMs: 5000 });
      await q.cont();
      expect((await resumed).event).toBe('RESUME');
      expect(await pending).toBe('resolved');
      process.kill(vm.pid!, 'SIGSTOP');
      const hanging = q.queryStatus({ timeoutMs: 30_000 });
      process.kill(vm.pid!, 'SIGKILL');
      // Closed by the EOF, not by the 30 s timer (that would be EQMP_TIMEOUT).
      await expect(hanging).rejects.toMatchObject({ code: 'EQMP_CLOSED' });
    });
    await rt.vms.reconcile();
    expect((await rt.vms.get('lc-basic')).state).toBe('crashed');
  }, 120_000);

  describe('bad input: a clear error and no change to other VMs', () => {
    it('starting a running VM, stopping a stopped one, destroying an unknown name', async () => {
      const running = await rt.vms.start('lc-basic');
      const before = await rt.store.read();
      await expect(rt.vms.start('lc-basic')).rejects.toMatchObject({
        code: 'ESTATE',
        message: `VM lc-basic is already running (pid ${running.pid})`,
        hint: 'stop it first: goshipctl vm stop lc-basic',
      });
      await expect(rt.vms.stop('lc-stubborn')).rejects.toMatchObject({ code: 'ESTATE', message: 'VM lc-stubborn is not running (state: stopped)' });
      await expect(rt.vms.destroy('nope')).rejects.toMatchObject({ code: 'ENOTFOUND', message: 'vm nope does not exist' });
      await expect(rt.vms.destroy('lc-basic')).rejects.toMatchObject({ code: 'ESTATE', message: 'VM lc-basic is running' });
      expect(await rt.store.read()).toEqual(before);
      expect(await isOurProcess(running.pid!, processMarker('lc-basic'))).toBe(true);
      await rt.vms.stop('lc-basic', { force: true });
    }, 120_000);

    it('a base image that is missing or not qcow2/raw', async () => {
      const before = await rt.store.read();
      await expect(rt.vms.create({ spec: spec('lc-nobase'), base: { path: join(env.root, 'missing.qcow2') } })).rejects.toMatchObject({
        code: 'EIMAGE_MISSING',
      });
      const vdi = join(env.root, 'x.vdi');
      await execa('qemu-img', ['create', '-q', '-f', 'vdi', vdi, '16M']);
      await expect(rt.vms.create({ spec: spec('lc-vdi'), base: { path: vdi } })).rejects.toMatchObject({ code: 'EIMAGE_FORMAT' });
      expect(await rt.store.read()).toEqual(before);
      expect(existsSync(env.layout.vmDir('lc-vdi'))).toBe(false);
    });

    it('destroy removes the overlay, seed and sockets', async () => {
      const base = join(env.root, 'base.qcow2');
      await execa('qemu-img', ['create', '-q', '-f', 'qcow2', base, '64M']);
      const vm = await rt.vms.create({
        spec: spec('lc-disk'),
        base: { path: base },
        seed: { instanceId: 'iid-lc-disk', hostname: 'lc-disk', sshKeys: [] },
      });
      expect(existsSync(vm.paths.overlay!)).toBe(true);
      expect(existsSync(vm.paths.seed!)).toBe(true);
      // The backing chain, as `vm status` shows it: the overlay on the base.
      expect((await rt.vms.diskChain('lc-disk'))!.map((l) => [l.filename, l.format])).toEqual([
        [vm.paths.overlay!, 'qcow2'],
        [base, 'qcow2'],
      ]);
      await rt.vms.start('lc-disk');
      expect(existsSync(vm.paths.qmpSocket)).toBe(true);
      await rt.vms.destroy('lc-disk', { force: true });
      for (const p of [vm.paths.overlay!, vm.paths.seed!, vm.paths.qmpSocket, vm.paths.agentSocket, vm.paths.dir]) expect(existsSync(p)).toBe(false);
      expect(existsSync(base)).toBe(true);
    }, 120_000);
  });
});
