/**
 * VM lifecycle against real QEMU and the fast test guest (kernel + busybox
 * initramfs, TCG), through the per-VM monitor: start, stop with the
 * escalation, how a VM ended (from QMP evidence and the exit status, never
 * from the console), the people's QMP socket, kill -9 of QEMU and of the
 * monitor, adoption, the restart policy, PID reuse, concurrency, bad input.
 */
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { copyFile, mkdir, readFile, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { pidAlive } from '../../src/proc.ts';
import { isOurProcess, processMarker, waitGone } from '../../src/qemu/index.ts';
import { QmpClient } from '../../src/qmp/index.ts';
import { JAIL_ID_BASE, Runtime } from '../../src/runtime/index.ts';
import { readLaunch, startMonitor } from '../../src/monitor/index.ts';
import type { Vm } from '../../src/store/index.ts';
import { FASTGUEST_ACPI_IGNORE, fastGuest, type FastGuest } from '../helpers/fast-guest.ts';
import { testEnv, type TestEnv } from '../helpers/runtime-env.ts';
import { until } from '../helpers/net.ts';

let env: TestEnv;
let rt: Runtime;
let guest: FastGuest;

function spec(name: string, extra: { cmdline?: string; restart?: 'no' | 'on-crash' } = {}) {
  return {
    name,
    memory: '256M',
    boot: { kernel: guest.kernel, initrd: guest.initrd, cmdline: `${guest.cmdline} ${extra.cmdline ?? ''}`.trim() },
    network: { mode: 'none' as const },
    ...(extra.restart ? { restart: extra.restart } : {}),
  };
}

/** Every QEMU and monitor process of this test's VMs, to prove nothing is left. */
async function ours(): Promise<number[]> {
  const q = await execa('pgrep', ['-f', 'process=goship-lc-'], { reject: false });
  const m = await execa('pgrep', ['-f', `goship-monitor.cjs --vm lc-.* --home ${env.layout.home}`], { reject: false });
  return [...q.stdout.split('\n'), ...m.stdout.split('\n')].filter(Boolean).map(Number);
}

/** Waits for a line on the guest's serial console (console.log, written by the monitor). */
async function waitConsole(path: string, text: string, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (existsSync(path) && (await readFile(path, 'utf8')).includes(text)) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`no "${text}" in ${path} within ${timeoutMs} ms`);
}

/** The record once the VM's monitor has recorded its end and exited. */
async function ended(name: string, monitorPid: number): Promise<Vm> {
  await until(`the monitor of ${name} to exit`, async () => (pidAlive(monitorPid) ? undefined : true));
  return rt.vms.get(name);
}

beforeAll(async () => {
  guest = await fastGuest();
  env = await testEnv('lc');
  rt = await Runtime.open({ layout: env.layout });
}, 300_000);

afterAll(async () => {
  for (const pid of await ours()) process.kill(pid, 'SIGKILL');
  await env.cleanup();
});

describe('VM lifecycle through the monitor', () => {
  it('start → running (QMP through the monitor) → stop by ACPI → the end recorded, nothing left', async () => {
    await rt.vms.create({ spec: spec('lc-basic') });
    const vm = await rt.vms.start('lc-basic');
    expect(vm.state).toBe('running');
    expect(await isOurProcess(vm.pid!, processMarker('lc-basic'))).toBe(true);
    expect(vm.monitor?.pid).toBeTypeOf('number');
    expect(pidAlive(vm.monitor!.pid)).toBe(true);
    // QEMU is the monitor's child (spawned by it, paused), in a session of its own.
    const stat = (await readFile(`/proc/${vm.pid}/stat`, 'latin1')).split(') ')[1]!.split(' ');
    expect(Number(stat[1])).toBe(vm.monitor!.pid);
    expect(Number(stat[3])).toBe(vm.pid);
    // The monitor runs with one malloc arena and a fixed mmap threshold; QEMU, its child, inherits neither.
    const environ = async (pid: number) => (await readFile(`/proc/${pid}/environ`, 'utf8')).split('\0');
    if (process.env.MALLOC_ARENA_MAX === undefined && process.env.MALLOC_MMAP_THRESHOLD_ === undefined) {
      expect(await environ(vm.monitor!.pid)).toEqual(expect.arrayContaining(['MALLOC_ARENA_MAX=1', 'MALLOC_MMAP_THRESHOLD_=32768']));
      expect((await environ(vm.pid!)).filter((e) => /^(MALLOC_ARENA_MAX|MALLOC_MMAP_THRESHOLD_|GOSHIP_MONITOR_MALLOC)=/.test(e))).toEqual([]);
    }
    // As root, QEMU runs as the VM's own identity (src/jail), with its seccomp sandbox on; the monitor stays root.
    const uidOf = async (pid: number) => Number(/^Uid:\s+(\d+)/m.exec(await readFile(`/proc/${pid}/status`, 'utf8'))![1]);
    if (process.getuid?.() === 0) {
      expect(vm.jail?.uid).toBeGreaterThanOrEqual(JAIL_ID_BASE);
      expect(await uidOf(vm.pid!)).toBe(vm.jail!.uid);
      expect(await uidOf(vm.monitor!.pid)).toBe(0);
      expect(JSON.parse(await readFile(join(vm.paths.dir, 'argv.json'), 'utf8'))).toContain('on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny');
    }
    expect(await rt.vms.qmpStatus('lc-basic')).toEqual({ status: 'running', running: true });
    // One start path: QEMU spawned paused by the monitor, QMP, the console and monitor.sock, then `cont` and the record.
    await until('the monitor to record the run', async () => ((await readFile(vm.paths.monitorLog, 'utf8')).includes('QEMU running') ? true : undefined), 30_000);
    expect(await readFile(vm.paths.monitorLog, 'utf8')).toMatch(/QEMU running \(pid \d+\); ms since the monitor started: spawned \d+, QMP \d+, console and socket \d+, cont \d+, recorded \d+\n/);
    // ACPI power-down only works once the guest listens for the power button.
    await waitConsole(vm.paths.consoleLog, 'acpid handles the power button');
    const stopped = await rt.vms.stop('lc-basic', { timeouts: { acpiMs: 30_000 } });
    expect(stopped.endedBy).toBe('acpi');
    expect(stopped.vm.state).toBe('stopped');
    expect(stopped.vm.end).toMatchObject({ kind: 'stopped', step: 'acpi', shutdownReason: 'guest-shutdown', summary: 'stopped by GoShip (acpi)' });
    expect(await isOurProcess(vm.pid!, processMarker('lc-basic'))).toBe(false);
    const rec = await ended('lc-basic', vm.monitor!.pid);
    expect(rec.monitor).toBeUndefined();
    for (const s of [vm.paths.qmpSocket, vm.paths.qmpUserSocket, vm.paths.agentSocket, vm.paths.consoleSocket, vm.paths.monitorSocket]) expect(existsSync(s)).toBe(false);
  }, 120_000);

  it('a guest that ignores ACPI power-down is still stopped by the escalation', async () => {
    await rt.vms.create({ spec: spec('lc-stubborn', { cmdline: FASTGUEST_ACPI_IGNORE }) });
    const vm = await rt.vms.start('lc-stubborn');
    const r = await rt.vms.stop('lc-stubborn', { timeouts: { acpiMs: 1500, quitMs: 5000 } });
    expect(r.attempts.map((a) => [a.step, a.outcome])).toEqual([
      ['acpi', 'timeout'],
      ['quit', 'ended'],
    ]);
    expect(r.endedBy).toBe('quit');
    expect(r.vm.end).toMatchObject({ kind: 'stopped', step: 'quit', shutdownReason: 'host-qmp-quit' });
    expect(await isOurProcess(vm.pid!, processMarker('lc-stubborn'))).toBe(false);
  }, 120_000);

  it('stop --force skips the graceful steps', async () => {
    await rt.vms.start('lc-stubborn');
    const r = await rt.vms.stop('lc-stubborn', { force: true });
    expect(r.attempts[0]).toEqual({ step: 'quit', outcome: 'ended' });
  }, 120_000);

  it('a monitor that dies before it reports takes the QEMU it spawned along', async () => {
    // Its files as a start leaves them (launch.json, the run directory QEMU's user may enter), then no process of it.
    const vm = await rt.vms.start('lc-stubborn');
    process.kill(vm.monitor!.pid, 'SIGKILL');
    process.kill(vm.pid!, 'SIGKILL');
    expect(await waitGone(vm.pid!, processMarker('lc-stubborn'), 5000)).toBe(true);
    // A stand-in for the monitor's bundle: it spawns the VM's QEMU (paused, by its jailed command) as the monitor does, says `forked`, and dies before its report.
    const bogus = join(env.root, 'goship-monitor.cjs');
    await writeFile(
      bogus,
      [
        "const { spawn } = require('node:child_process');",
        "const fs = require('node:fs');",
        `const launch = JSON.parse(fs.readFileSync(${JSON.stringify(join(vm.paths.dir, 'launch.json'))}, 'utf8'));`,
        "const q = spawn(launch.exec[0], launch.exec.slice(1), { stdio: 'ignore' });",
        "q.unref();",
        "fs.writeSync(3, JSON.stringify({ t: 'forked', pid: q.pid }) + '\\n');",
        "process.stderr.write('stand-in monitor: exiting before the report\\n');",
        "setTimeout(() => process.exit(3), 300);",
      ].join('\n'),
    );
    const err = await startMonitor({ layout: env.layout, vm, launch: await readLaunch(vm.paths.dir), bundle: bogus }).then(
      () => undefined,
      (e: { code: string; message: string }) => e,
    );
    expect(err).toMatchObject({ code: 'EMONITOR', message: expect.stringMatching(/^the monitor of VM lc-stubborn exited with code 3 before it reported: .*stand-in monitor: exiting before the report/) });
    // The stand-in's QEMU (paused, it would wait forever) outlived it; the starter killed it.
    await until('the forked QEMU to be gone', async () => ((await execa('pgrep', ['-f', 'process=goship-lc-stubborn'], { reject: false })).stdout === '' ? true : undefined), 10_000);
    expect((await rt.vms.start('lc-stubborn')).state).toBe('running');
    await rt.vms.stop('lc-stubborn', { force: true });
  }, 60_000);

  it('kill -9 of QEMU: the monitor records a crash with the signal, at once, and exits', async () => {
    const vm = await rt.vms.start('lc-basic');
    process.kill(vm.pid!, 'SIGKILL');
    const rec = await ended('lc-basic', vm.monitor!.pid);
    expect(rec.state).toBe('crashed');
    expect(rec.end).toMatchObject({ kind: 'crashed', signal: 'SIGKILL', summary: expect.stringMatching(/^QEMU was killed by SIGKILL/) });
    expect(rec.end?.logTail).toBeTypeOf('string');
    expect(rec.pid).toBeUndefined();
    // Nothing was left for reconcile to guess.
    expect(await rt.vms.reconcile()).toEqual([]);
    // A crashed VM can be started again.
    expect((await rt.vms.start('lc-basic')).state).toBe('running');
    await rt.vms.stop('lc-basic', { force: true });
  }, 120_000);

  it('a guest that powers itself off is recorded as a power-off: SHUTDOWN guest-shutdown, not the console', async () => {
    const vm = await rt.vms.start('lc-basic');
    await waitConsole(vm.paths.consoleLog, 'acpid handles the power button');
    // The power button pressed by a person on the people's QMP socket: the guest shuts itself down.
    const people = await QmpClient.connect(vm.paths.qmpUserSocket, { timeoutMs: 5000 });
    await people.systemPowerdown();
    await people.close();
    const rec = await ended('lc-basic', vm.monitor!.pid);
    expect(rec.state).toBe('stopped');
    expect(rec.end).toMatchObject({ kind: 'poweroff', shutdownReason: 'guest-shutdown', summary: 'the guest powered itself off' });
  }, 120_000);

  it('quit typed on the people\'s QMP socket is told apart from GoShip\'s stop', async () => {
    const vm = await rt.vms.start('lc-basic');
    const people = await QmpClient.connect(vm.paths.qmpUserSocket, { timeoutMs: 5000 });
    await people.quit();
    await people.close();
    const rec = await ended('lc-basic', vm.monitor!.pid);
    expect([rec.state, rec.end?.kind, rec.end?.shutdownReason]).toEqual(['stopped', 'quit', 'host-qmp-quit']);
  }, 120_000);

  it('a foreign client holding the people\'s QMP socket does not block vm stop', async () => {
    const vm = await rt.vms.start('lc-stubborn');
    const holder = await QmpClient.connect(vm.paths.qmpUserSocket, { timeoutMs: 5000 });
    // A second client on that socket waits behind the first, as QEMU serves one at a time…
    const second = await QmpClient.connect(vm.paths.qmpUserSocket, { timeoutMs: 500 }).catch((e: { code: string }) => e.code);
    expect(second).toBe('EQMP_CONNECT');
    // …but GoShip's monitor has its own.
    const r = await rt.vms.stop('lc-stubborn', { force: true });
    expect(r.endedBy).toBe('quit');
    await holder.close();
  }, 120_000);

  it('kill -9 of the monitor: QEMU keeps running; the next command adopts it with a new monitor', async () => {
    const vm = await rt.vms.start('lc-basic');
    process.kill(vm.monitor!.pid, 'SIGKILL');
    await until('the monitor to die', async () => (pidAlive(vm.monitor!.pid) ? undefined : true));
    expect(await isOurProcess(vm.pid!, processMarker('lc-basic'))).toBe(true);
    const changes = await rt.vms.reconcile();
    expect(changes).toEqual([{ vm: 'lc-basic', from: 'running', to: 'running', reason: `a new monitor adopted its running QEMU (pid ${vm.pid})` }]);
    const rec = await rt.vms.get('lc-basic');
    expect(rec.monitor).toMatchObject({ adopted: true });
    expect(rec.monitor!.pid).not.toBe(vm.monitor!.pid);
    expect(rec.pid).toBe(vm.pid);
    expect(await rt.vms.qmpStatus('lc-basic')).toEqual({ status: 'running', running: true });
    // The adopting monitor records the end too; it cannot wait for QEMU, so the evidence is QMP's.
    const r = await rt.vms.stop('lc-basic', { force: true });
    expect(r.vm.end).toMatchObject({ kind: 'stopped', step: 'quit', shutdownReason: 'host-qmp-quit' });
    await ended('lc-basic', rec.monitor!.pid);
  }, 120_000);

  it('a QEMU whose monitor died before recording it is adopted, even while the record says starting', async () => {
    const vm = await rt.vms.start('lc-basic');
    process.kill(vm.monitor!.pid, 'SIGKILL');
    await until('the monitor to die', async () => (pidAlive(vm.monitor!.pid) ? undefined : true));
    // What a kill -9 of goshipctl and its fresh monitor right after spawn leaves: starting, a dead op, no PID.
    const dead = spawn('true');
    await new Promise((r) => dead.once('exit', r));
    await rt.store.update((d) => {
      const rec = d.vms['lc-basic']!;
      rec.state = 'starting';
      rec.op = { kind: 'start', pid: dead.pid!, startedAt: new Date().toISOString() };
      delete rec.pid;
    });
    const changes = await rt.vms.reconcile();
    expect(changes.map((c) => c.reason)).toEqual([`a new monitor adopted its running QEMU (pid ${vm.pid})`]);
    const rec = await rt.vms.get('lc-basic');
    expect([rec.state, rec.pid, rec.op]).toEqual(['running', vm.pid, undefined]);
    expect((await rt.vms.stop('lc-basic', { force: true })).endedBy).toBe('quit');
  }, 120_000);

  it('QEMU and its monitor both killed: nothing saw the end, and the record says so', async () => {
    const vm = await rt.vms.start('lc-basic');
    process.kill(vm.monitor!.pid, 'SIGKILL');
    process.kill(vm.pid!, 'SIGKILL');
    await waitGone(vm.pid!, processMarker('lc-basic'), 5000);
    await until('the monitor to die', async () => (pidAlive(vm.monitor!.pid) ? undefined : true));
    const changes = await rt.vms.reconcile();
    expect(changes).toEqual([{ vm: 'lc-basic', from: 'running', to: 'crashed', reason: 'QEMU and its monitor are gone: nothing saw how the VM ended' }]);
    expect((await rt.vms.get('lc-basic')).end).toMatchObject({ kind: 'lost' });
  }, 120_000);

  it('a recorded PID reused by an unrelated process is not mistaken for the VM', async () => {
    const vm = await rt.vms.start('lc-basic');
    process.kill(vm.monitor!.pid, 'SIGKILL');
    process.kill(vm.pid!, 'SIGKILL');
    await waitGone(vm.pid!, processMarker('lc-basic'), 5000);
    await until('the monitor to die', async () => (pidAlive(vm.monitor!.pid) ? undefined : true));
    // An unrelated long-lived process now holds the PIDs the record points at.
    const impostor = spawn('sleep', ['60'], { stdio: 'ignore' });
    await rt.store.update((d) => {
      d.vms['lc-basic']!.pid = impostor.pid!;
      d.vms['lc-basic']!.monitor = { pid: impostor.pid!, startedAt: new Date().toISOString() };
    });
    await writeFile(vm.paths.pidfile, `${impostor.pid}\n`);
    await rt.vms.reconcile();
    expect((await rt.vms.get('lc-basic')).state).toBe('crashed');
    await expect(rt.vms.stop('lc-basic')).rejects.toMatchObject({ code: 'ESTATE', message: 'VM lc-basic is not running (state: crashed)' });
    // The impostor was left alone.
    expect(impostor.exitCode).toBeNull();
    expect(pidAlive(impostor.pid!)).toBe(true);
    impostor.kill('SIGKILL');
  }, 120_000);

  it('restart: on-crash starts a crashed QEMU again, after 1 s, then 2 s, and counts the restarts', async () => {
    await rt.vms.create({ spec: spec('lc-phoenix', { restart: 'on-crash' }) });
    const first = await rt.vms.start('lc-phoenix');
    const monitor = first.monitor!.pid;
    const running = async (notPid: number) =>
      until('a new QEMU', async () => {
        const r = await rt.vms.get('lc-phoenix');
        return r.state === 'running' && r.pid !== undefined && r.pid !== notPid ? r : undefined;
      });
    process.kill(first.pid!, 'SIGKILL');
    const killedAt1 = Date.now();
    const second = await running(first.pid!);
    expect(Date.now() - killedAt1).toBeGreaterThanOrEqual(1000);
    expect(second.restarts).toMatchObject({ count: 1, lastReason: expect.stringMatching(/^QEMU was killed by SIGKILL/) });
    expect(second.monitor!.pid).toBe(monitor);
    process.kill(second.pid!, 'SIGKILL');
    const killedAt2 = Date.now();
    const third = await running(second.pid!);
    expect(Date.now() - killedAt2).toBeGreaterThanOrEqual(2000);
    expect(third.restarts?.count).toBe(2);
    // A stop by GoShip is not a crash: no restart.
    const r = await rt.vms.stop('lc-phoenix', { force: true });
    expect(r.vm.state).toBe('stopped');
    await ended('lc-phoenix', monitor);
    expect((await rt.vms.get('lc-phoenix')).state).toBe('stopped');
  }, 120_000);

  it('a guest reboot is a fresh QEMU under the same monitor; more than 5 within 60 s end the VM as a reset loop', async () => {
    // init exits at once → the kernel panics → panic=-1 reboots → -no-reboot ends QEMU (SHUTDOWN guest-reset).
    await rt.vms.create({ spec: spec('lc-looper', { cmdline: 'rdinit=/bin/false' }) });
    const first = await rt.vms.start('lc-looper');
    const monitor = first.monitor!.pid;
    const pids = new Set<number>([first.pid!]);
    const watch = setInterval(() => {
      void rt.vms.get('lc-looper').then((r) => r.pid !== undefined && pids.add(r.pid), () => undefined);
    }, 20);
    let end: Vm;
    try {
      end = await ended('lc-looper', monitor);
    } finally {
      clearInterval(watch);
    }
    expect(end.state).toBe('crashed');
    expect(end.end).toMatchObject({ kind: 'reset-loop', shutdownReason: 'guest-reset', summary: expect.stringMatching(/^the guest reset 6 times within 60 s/) });
    // Five reboots were followed, each by a new QEMU process; the sixth ended it.
    expect(end.reboots?.count).toBe(5);
    expect(pids.size).toBeGreaterThanOrEqual(2);
    const log = await readFile(end.paths.monitorLog, 'utf8');
    expect(log.match(/^.*reboot \d: the guest rebooted; its monitor starts QEMU again$/gm)).toHaveLength(5);
    expect(new Set([...log.matchAll(/QEMU running \(pid (\d+)\)/g)].map((m) => m[1])).size).toBe(6);
    for (const pid of pids) expect(await isOurProcess(pid, processMarker(end.id))).toBe(false);
  }, 180_000);

  it('a stop asked for between the two QEMUs of a reboot stops the new one and answers', async () => {
    await rt.vms.create({ spec: spec('lc-between', { cmdline: 'rdinit=/bin/false' }) });
    const first = await rt.vms.start('lc-between');
    // The record says starting, with no PID, from the reboot until the new QEMU runs.
    await until(
      'the gap of a reboot',
      async () => {
        const r = await rt.vms.get('lc-between');
        return r.state === 'starting' && r.pid === undefined && (r.reboots?.count ?? 0) >= 1 ? r : undefined;
      },
      60_000,
      5,
    );
    const r = await rt.vms.stop('lc-between', { force: true });
    expect(r.vm.state).toBe('stopped');
    const end = await ended('lc-between', first.monitor!.pid);
    expect(end.end).toMatchObject({ kind: 'stopped' });
  }, 180_000);

  it('5 VMs started and stopped concurrently leave no stray process, socket or file', async () => {
    const names = [1, 2, 3, 4, 5].map((i) => `lc-c${i}`);
    await Promise.all(names.map((n) => rt.vms.create({ spec: spec(n) })));
    const started = await Promise.all(names.map((n) => rt.vms.start(n)));
    expect(started.map((v) => v.state)).toEqual(names.map(() => 'running'));
    expect(new Set(started.map((v) => v.pid)).size).toBe(5);
    expect(new Set(started.map((v) => v.monitor?.pid)).size).toBe(5);
    const stopped = await Promise.all(names.map((n) => rt.vms.stop(n, { force: true })));
    expect(stopped.map((s) => s.vm.state)).toEqual(names.map(() => 'stopped'));
    for (const v of started) expect(await isOurProcess(v.pid!, processMarker(v.id))).toBe(false);
    for (const v of started) await ended(v.name, v.monitor!.pid);
    await Promise.all(names.map((n) => rt.vms.destroy(n)));
    for (const v of started) expect(existsSync(v.paths.dir)).toBe(false);
    const runLeft = existsSync(env.layout.run) ? (await readdir(env.layout.run)).filter((d) => d.startsWith('lc-c')) : [];
    expect(runLeft).toEqual([]);
    expect(Object.keys((await rt.store.read()).vms).filter((k) => k.startsWith('lc-c'))).toEqual([]);
  }, 180_000);

  it('QMP events on the people\'s socket while commands are in flight; a dead QEMU rejects its pending calls', async () => {
    const vm = await rt.vms.start('lc-basic');
    const q = await QmpClient.connect(vm.paths.qmpUserSocket, { timeoutMs: 5000 });
    try {
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
    } finally {
      await q.close();
    }
    expect((await ended('lc-basic', vm.monitor!.pid)).state).toBe('crashed');
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

    it('a QEMU that cannot start: the error quotes its log, the VM is stopped, no monitor stays', async () => {
      await rt.vms.create({ spec: { ...spec('lc-bad'), cpu: { model: 'no-such-cpu' } } });
      const err = (await rt.vms.start('lc-bad').catch((e: unknown) => e)) as { code: string; message: string; hint: string };
      expect(err.code).toBe('EQEMU_EXIT');
      expect(err.message).toMatch(/^QEMU exited with code 1 during start: .*no-such-cpu/);
      const rec = await rt.vms.get('lc-bad');
      expect([rec.state, rec.monitor, rec.op]).toEqual(['stopped', undefined, undefined]);
      // Its monitor reported the failure and is gone.
      await until('the monitor of lc-bad to exit', async () =>
        (await execa('pgrep', ['-f', `goship-monitor.cjs --vm lc-bad --home ${env.layout.home}`], { reject: false })).stdout === '' ? true : undefined,
      );
      await rt.vms.destroy('lc-bad');
    }, 60_000);

    it('a kernel QEMU\'s user cannot reach is refused before QEMU starts, naming the directory', async () => {
      const closed = join(env.root, 'closed');
      await mkdir(closed, { mode: 0o700 });
      await copyFile(guest.kernel, join(closed, 'vmlinuz'));
      await rt.vms.create({ spec: { ...spec('lc-closed'), boot: { kernel: join(closed, 'vmlinuz'), initrd: guest.initrd, cmdline: guest.cmdline } } });
      const r = await rt.vms.start('lc-closed').then(
        (vm) => ({ state: vm.state }),
        (e: { code: string; message: string; hint: string }) => e,
      );
      if (process.getuid?.() === 0) {
        const uid = (await rt.vms.get('lc-closed')).jail!.uid!;
        expect(r).toMatchObject({
          code: 'EJAIL',
          message: `VM lc-closed: its QEMU runs as uid ${uid} and could not open what it needs: boot.kernel: VM lc-closed's QEMU (uid ${uid}) cannot reach ${join(closed, 'vmlinuz')}: ${closed} is mode 0700 (0:0) and lets it not pass`,
          hint: "let others reach what the spec names outside GoShip's directories (chmod o+x on each directory named, o+r on files QEMU reads, o+rw on disks it writes), or keep it under GoShip (project create, image import)",
        });
        expect((await rt.vms.get('lc-closed')).state).toBe('stopped');
      } else {
        // Not root: QEMU runs as this user, who owns the directory.
        expect(r).toEqual({ state: 'running' });
        await rt.vms.stop('lc-closed', { force: true });
      }
      await rt.vms.destroy('lc-closed');
    }, 60_000);

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

    it('destroy removes the overlay, seed, sockets and the monitor', async () => {
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
      const running = await rt.vms.start('lc-disk');
      expect(existsSync(vm.paths.qmpSocket)).toBe(true);
      await rt.vms.destroy('lc-disk', { force: true });
      for (const p of [vm.paths.overlay!, vm.paths.seed!, vm.paths.qmpSocket, vm.paths.agentSocket, vm.paths.monitorSocket, vm.paths.dir]) expect(existsSync(p)).toBe(false);
      await until('the monitor to exit', async () => (pidAlive(running.monitor!.pid) ? undefined : true));
      expect(existsSync(base)).toBe(true);
    }, 120_000);
  });
});
