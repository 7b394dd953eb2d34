/** The monitor's pure parts: how a VM ended, the restart backoff, reset loops, usernet, the console cap. */
import { withExec } from '../../src/monitor/launch.ts';
import { jailedCommand } from '../../src/jail/index.ts';
import { describe, expect, it } from 'vitest';
import type { Happening, Phase } from '../../src/monitor/index.ts';
import {
  MALLOC_MARK,
  PACED_PIECE,
  RestartBackoff,
  ResetWatch,
  SHARED_IN_FLIGHT,
  StreamPacer,
  afterEnd,
  classifyEnd,
  fitting,
  isMonitorCmdline,
  nextPhase,
  monitorEnv,
  parseUsernet,
  restoreEnv,
} from '../../src/monitor/index.ts';
import { MAX_CHUNK, OWN_LIMITS, STREAM_WINDOW, UNANNOUNCED_LIMITS, type FlowLimits } from '../../src/protocol/index.ts';

const at = '2026-12-01T00:00:00.000Z';

describe('classifyEnd', () => {
  it('a stop by GoShip is `stopped`, whatever the guest did on the way, with the step', () => {
    expect(classifyEnd({ at, shutdownReason: 'guest-shutdown', stopStep: 'agent', exit: { code: 0, signal: null }, logTail: '' })).toEqual({
      at,
      kind: 'stopped',
      step: 'agent',
      shutdownReason: 'guest-shutdown',
      exitCode: 0,
      summary: 'stopped by GoShip (agent)',
    });
    expect(classifyEnd({ at, stopStep: 'sigkill', exit: { code: null, signal: 'SIGKILL' }, logTail: 'x' })).toMatchObject({ kind: 'stopped', step: 'sigkill', signal: 'SIGKILL' });
  });

  it('the guest powering itself off is SHUTDOWN guest-shutdown, nothing else', () => {
    expect(classifyEnd({ at, shutdownReason: 'guest-shutdown', exit: { code: 0, signal: null }, logTail: 'reboot: Power down' })).toEqual({
      at,
      kind: 'poweroff',
      shutdownReason: 'guest-shutdown',
      exitCode: 0,
      summary: 'the guest powered itself off',
    });
    // Console text alone decides nothing: a QEMU killed right after the guest printed it crashed.
    expect(classifyEnd({ at, exit: { code: null, signal: 'SIGKILL' }, logTail: '[ 12.3] reboot: Power down' }).kind).toBe('crashed');
  });

  it('quit over QMP by someone else, and a signal from outside, are told apart from a crash', () => {
    expect(classifyEnd({ at, shutdownReason: 'host-qmp-quit', exit: { code: 0, signal: null }, logTail: '' }).kind).toBe('quit');
    expect(classifyEnd({ at, shutdownReason: 'host-signal', exit: { code: 0, signal: null }, logTail: '' })).toMatchObject({
      kind: 'killed',
      summary: 'QEMU was asked to end by a signal from outside GoShip (SHUTDOWN host-signal)',
    });
    expect(classifyEnd({ at, shutdownReason: 'host-ui', exit: { code: 0, signal: null }, logTail: '' })).toMatchObject({ kind: 'quit', summary: 'QEMU shut down (SHUTDOWN host-ui)' });
  });

  it('a SIGKILL while the memory cgroup counted an OOM kill is the memory limit, said with its size; any other signal is not', () => {
    expect(classifyEnd({ at, exit: { code: null, signal: 'SIGKILL' }, memoryLimit: 264 * 1024 * 1024, logTail: '' })).toEqual({
      at,
      kind: 'crashed',
      signal: 'SIGKILL',
      memoryLimit: 264 * 1024 * 1024,
      summary: "QEMU was killed by the memory limit of its cgroup (264 MiB: the guest's memory and QEMU's overhead)",
      logTail: '',
    });
    expect(classifyEnd({ at, exit: { code: null, signal: 'SIGSEGV' }, memoryLimit: 264 * 1024 * 1024, logTail: '' })).toMatchObject({ kind: 'crashed', summary: 'QEMU was killed by SIGSEGV' });
    expect(classifyEnd({ at, exit: { code: null, signal: 'SIGKILL' }, logTail: '' })).toMatchObject({ kind: 'crashed', summary: 'QEMU was killed by SIGKILL' });
  });

  it('a panic, from GUEST_PANICKED or the guest-panic reason', () => {
    expect(classifyEnd({ at, panicked: true, exit: { code: 0, signal: null }, logTail: 'tail' })).toMatchObject({ kind: 'panic', logTail: 'tail' });
    expect(classifyEnd({ at, shutdownReason: 'guest-panic', exit: { code: 0, signal: null }, logTail: '' }).kind).toBe('panic');
  });

  it('a reset loop the monitor stopped', () => {
    expect(classifyEnd({ at, resetLoop: { resets: 6, withinMs: 60_000 }, shutdownReason: 'host-qmp-quit', exit: { code: 0, signal: null }, logTail: '' })).toMatchObject({
      kind: 'reset-loop',
      summary: 'the guest reset 6 times within 60 s; the monitor stopped it',
    });
  });

  it('a reboot under -no-reboot (the guest, or system_reset over QMP) ends one QEMU, not the VM', () => {
    expect(classifyEnd({ at, shutdownReason: 'guest-reset', exit: { code: 0, signal: null }, logTail: '' })).toEqual({
      at,
      kind: 'reboot',
      shutdownReason: 'guest-reset',
      exitCode: 0,
      summary: 'the guest rebooted; its monitor starts QEMU again',
    });
    expect(classifyEnd({ at, shutdownReason: 'host-qmp-system-reset', exit: { code: 0, signal: null }, logTail: '' })).toMatchObject({
      kind: 'reboot',
      summary: 'QEMU was reset over QMP (system_reset); its monitor starts QEMU again',
    });
    // GoShip's stop and a reset loop win over the reboot.
    expect(classifyEnd({ at, shutdownReason: 'guest-reset', stopStep: 'agent', logTail: '' }).kind).toBe('stopped');
    expect(classifyEnd({ at, shutdownReason: 'guest-reset', resetLoop: { resets: 6, withinMs: 60_000 }, logTail: '' }).kind).toBe('reset-loop');
  });

  it('after an end: a reboot starts QEMU at once, a crash restarts by policy, a stop GoShip asked for is final', () => {
    const no = { restart: 'no' as const, stopRequested: false };
    const onCrash = { restart: 'on-crash' as const, stopRequested: false };
    expect(afterEnd({ kind: 'reboot' }, no)).toBe('reboot');
    expect(afterEnd({ kind: 'reboot' }, { ...onCrash, stopRequested: true })).toBe('final');
    expect(afterEnd({ kind: 'crashed' }, no)).toBe('final');
    expect(afterEnd({ kind: 'crashed' }, onCrash)).toBe('restart');
    expect(afterEnd({ kind: 'panic' }, onCrash)).toBe('restart');
    expect(afterEnd({ kind: 'crashed' }, { ...onCrash, stopRequested: true })).toBe('final');
    for (const kind of ['poweroff', 'stopped', 'quit', 'killed', 'reset-loop', 'lost'] as const) expect(afterEnd({ kind }, onCrash)).toBe('final');
  });

  it('QEMU dying without SHUTDOWN is a crash, with the signal or the exit code and its last words', () => {
    expect(classifyEnd({ at, exit: { code: null, signal: 'SIGSEGV' }, logTail: 'a\nqemu: fatal: bad\n' })).toEqual({
      at,
      kind: 'crashed',
      signal: 'SIGSEGV',
      summary: 'QEMU was killed by SIGSEGV: qemu: fatal: bad',
      logTail: 'a\nqemu: fatal: bad\n',
    });
    expect(classifyEnd({ at, exit: { code: 1, signal: null }, logTail: '' })).toMatchObject({ kind: 'crashed', exitCode: 1, summary: 'QEMU exited with code 1 without shutting down' });
  });

  it('an adopted QEMU gone without a SHUTDOWN: nobody saw how', () => {
    expect(classifyEnd({ at, logTail: '' })).toMatchObject({ kind: 'lost', summary: 'QEMU is gone and no monitor saw how it ended' });
    // With the SHUTDOWN seen, an adopting monitor knows.
    expect(classifyEnd({ at, shutdownReason: 'guest-shutdown', logTail: '' }).kind).toBe('poweroff');
  });
});

describe('RestartBackoff', () => {
  it('1 s, doubling to 60 s, back to 1 s after 5 minutes up', () => {
    const b = new RestartBackoff();
    expect([1, 2, 3, 4, 5, 6, 7, 8].map(() => b.delayAfter(1000))).toEqual([1000, 2000, 4000, 8000, 16_000, 32_000, 60_000, 60_000]);
    expect(b.delayAfter(5 * 60_000)).toBe(1000);
    expect(b.delayAfter(10)).toBe(2000);
  });
});

describe('ResetWatch', () => {
  it('more than 5 resets within 60 s is a loop; older ones fall out of the window', () => {
    const w = new ResetWatch();
    expect([0, 10, 20, 30, 40].map((t) => w.reset(t * 1000))).toEqual([false, false, false, false, false]);
    expect(w.reset(50_000)).toBe(true);
    const slow = new ResetWatch();
    expect([0, 20, 40, 60, 80, 100, 120].map((t) => slow.reset(t * 1000)).includes(true)).toBe(false);
  });

  it('the RESET events of one reboot (QEMU gives two or three) count once: reboots in a row are no loop', () => {
    const w = new ResetWatch();
    for (const reboot of [0, 25_000, 50_000]) for (const dt of [0, 45, 47]) expect(w.reset(reboot + dt)).toBe(false);
    expect(w.count).toBe(3);
    // Reboots that each ended a QEMU are not coalesced, however close.
    const fast = new ResetWatch();
    expect([0, 300, 600, 900, 1200, 1500].map((t) => fast.reset(t, false)).at(-1)).toBe(true);
    // A guest that resets every 2.5 s is still a loop.
    const loop = new ResetWatch();
    expect([0, 2.5, 5, 7.5, 10, 12.5].map((t) => loop.reset(t * 1000)).at(-1)).toBe(true);
  });
});

describe('parseUsernet', () => {
  it('reads the host forwards of `info usernet` (QEMU 7.2), sorted', () => {
    const text =
      'Hub -1 (net0):\r\n  Protocol[State]    FD  Source Address  Port   Dest. Address  Port RecvQ SendQ\r\n' +
      '  TCP[HOST_FORWARD]   8       127.0.0.1 18023       10.0.2.15    23     0     0\r\n' +
      '  UDP[HOST_FORWARD]   7       127.0.0.1 15353       10.0.2.15    53     0     0\r\n' +
      '  TCP[ESTABLISHED]   12       10.0.2.15 43210   93.184.216.34    80     0     0\r\n' +
      '  TCP[HOST_FORWARD]   9         0.0.0.0 18022       10.0.2.15    22     0     0\r\n';
    expect(parseUsernet(text)).toEqual([
      { proto: 'tcp', hostAddr: '0.0.0.0', host: 18022, guest: 22 },
      { proto: 'tcp', hostAddr: '127.0.0.1', host: 18023, guest: 23 },
      { proto: 'udp', hostAddr: '127.0.0.1', host: 15353, guest: 53 },
    ]);
    expect(parseUsernet('Hub -1 (net0):\r\n  Protocol[State]    FD  Source Address  Port   Dest. Address  Port RecvQ SendQ\r\n')).toEqual([]);
  });
});

describe('the console cap', () => {
  it('fitting: what still fits before the rotation', () => {
    expect(fitting(0, 10, 100)).toBe(10);
    expect(fitting(95, 10, 100)).toBe(5);
    expect(fitting(100, 10, 100)).toBe(0);
  });
});

describe('isMonitorCmdline', () => {
  const cmd = (...a: string[]) => `${a.join('\0')}\0`;
  it('matches the monitor of this VM under this GOSHIP_HOME only', () => {
    const c = cmd('/usr/bin/node', '--max-semi-space-size=1', '/opt/goship/dist/goship-monitor.cjs', '--vm', 'web', '--home', '/var/lib/goship', '--run', '/run/goship');
    expect(isMonitorCmdline(c, 'web', '/var/lib/goship')).toBe(true);
    // A monitor started before the entries became CommonJS is still one (it is adopted, not duplicated).
    expect(isMonitorCmdline(c.replace('goship-monitor.cjs', 'goship-monitor.mjs'), 'web', '/var/lib/goship')).toBe(true);
    expect(isMonitorCmdline(c.replace('goship-monitor.cjs', 'not-goship-monitor.cjs'), 'web', '/var/lib/goship')).toBe(false);
    expect(isMonitorCmdline(c, 'web2', '/var/lib/goship')).toBe(false);
    expect(isMonitorCmdline(c, 'web', '/tmp/other')).toBe(false);
    expect(isMonitorCmdline(cmd('/usr/bin/sleep', '--vm', 'web', '--home', '/var/lib/goship'), 'web', '/var/lib/goship')).toBe(false);
  });
  it('a monitor started by the launcher (--qemu-pid) is one too', () => {
    const c = cmd('/usr/bin/node', '--max-semi-space-size=1', '--max-old-space-size=48', '/opt/goship/dist/goship-monitor.cjs', '--vm', 'web', '--home', '/var/lib/goship', '--run', '/run/goship', '--qemu-pid', '42');
    expect(isMonitorCmdline(c, 'web', '/var/lib/goship')).toBe(true);
  });
});

describe('nextPhase: what the monitor does next', () => {
  const crash = { at, kind: 'crashed', summary: 'QEMU was killed by SIGKILL' } as const;
  const reboot = { at, kind: 'reboot', summary: 'the guest rebooted; its monitor starts QEMU again' } as const;
  const poweroff = { at, kind: 'poweroff', summary: 'the guest powered itself off' } as const;
  const stopped = { at, kind: 'stopped', step: 'acpi', summary: 'stopped by GoShip (acpi)' } as const;
  const failure = { code: 'EQEMU_EXIT', message: 'QEMU exited with code 1 during start' };
  const rows: Array<[string, Phase, Happening, { restart?: 'no' | 'on-crash'; stop?: boolean }, Phase]> = [
    ['a first start that runs', { name: 'starting', cause: 'first' }, { what: 'started' }, {}, { name: 'running' }],
    ['an adoption that holds', { name: 'adopting' }, { what: 'started' }, {}, { name: 'running' }],
    ['a first start that fails: the starter is told', { name: 'starting', cause: 'first' }, { what: 'start-failed', failure }, {}, { name: 'failed', failure }],
    ['an adoption that fails: the starter is told', { name: 'adopting' }, { what: 'start-failed', failure }, {}, { name: 'failed', failure }],
    ['a guest reboot: a fresh QEMU', { name: 'running' }, { what: 'qemu-ended', end: reboot }, {}, { name: 'starting', cause: 'reboot' }],
    ['a reboot during a stop: the end', { name: 'running' }, { what: 'qemu-ended', end: reboot }, { stop: true }, { name: 'ended', end: reboot, exitCode: 0 }],
    ['a crash, policy no: the end', { name: 'running' }, { what: 'qemu-ended', end: crash }, {}, { name: 'ended', end: crash, exitCode: 0 }],
    ['a crash, policy on-crash: backoff', { name: 'running' }, { what: 'qemu-ended', end: crash }, { restart: 'on-crash' }, { name: 'backoff', end: crash }],
    ['a crash during a stop, policy on-crash: the end', { name: 'running' }, { what: 'qemu-ended', end: crash }, { restart: 'on-crash', stop: true }, { name: 'ended', end: crash, exitCode: 0 }],
    ['a power-off, policy on-crash: the end', { name: 'running' }, { what: 'qemu-ended', end: poweroff }, { restart: 'on-crash' }, { name: 'ended', end: poweroff, exitCode: 0 }],
    ['GoShip\'s stop: the end', { name: 'running' }, { what: 'qemu-ended', end: stopped }, { restart: 'on-crash' }, { name: 'ended', end: stopped, exitCode: 0 }],
    ['the backoff over: a restart', { name: 'backoff', end: crash }, { what: 'backoff-over' }, { restart: 'on-crash' }, { name: 'starting', cause: 'restart' }],
    [
      'a stop during the backoff: stopped, no restart',
      { name: 'backoff', end: crash },
      { what: 'backoff-over' },
      { restart: 'on-crash', stop: true },
      { name: 'ended', exitCode: 0, end: { at, kind: 'stopped', summary: 'stopped by GoShip while waiting to restart' } },
    ],
    [
      'a reboot whose QEMU does not start: crashed, exit 1',
      { name: 'starting', cause: 'reboot' },
      { what: 'start-failed', failure },
      {},
      { name: 'ended', exitCode: 1, end: { at, kind: 'crashed', summary: 'the guest rebooted and QEMU did not start again: QEMU exited with code 1 during start' } },
    ],
    [
      'a restart whose QEMU does not start: crashed, exit 1',
      { name: 'starting', cause: 'restart' },
      { what: 'start-failed', failure },
      { restart: 'on-crash' },
      { name: 'ended', exitCode: 1, end: { at, kind: 'crashed', summary: 'restart failed: QEMU exited with code 1 during start' } },
    ],
  ];
  it.each(rows)('%s', (_what, phase, happened, c, want) => {
    expect(nextPhase(phase, happened, { restart: c.restart ?? 'no', stopRequested: c.stop ?? false, at })).toEqual(want);
  });

  it('a happening a phase cannot see is a bug, said as one', () => {
    expect(() => nextPhase({ name: 'running' }, { what: 'started' }, { restart: 'no', stopRequested: false, at })).toThrow('monitor lifecycle: started cannot happen while running');
    expect(() => nextPhase({ name: 'ended', end: crash, exitCode: 0 }, { what: 'backoff-over' }, { restart: 'no', stopRequested: false, at })).toThrow('backoff-over cannot happen while ended');
  });
});

describe('withExec: a launch.json written before the jail', () => {
  it('gets the jailed command of its argv and its QEMU user, so every QEMU starts the one way', () => {
    const base = { argv: ['/q', '-S'], restart: 'no' as const, console: { maxBytes: 65536, keep: 1 } };
    expect(withExec({ ...base, user: { uid: 999, gid: 995 } }).exec).toEqual(jailedCommand({ qemuArgv: ['/q', '-S'], identity: { uid: 999, gid: 995 } }));
    expect(withExec(base).exec).toEqual(jailedCommand({ qemuArgv: ['/q', '-S'] }));
    expect(withExec({ ...base, exec: ['/x'] }).exec).toEqual(['/x']);
  });
});

describe('monitorEnv / restoreEnv', () => {
  it('the monitor gets one malloc arena and a fixed mmap threshold, and its children get the starter\'s environment back', () => {
    const starter = { PATH: '/usr/bin', HOME: '/root' };
    const env = monitorEnv(starter);
    expect(env).toEqual({ PATH: '/usr/bin', HOME: '/root', MALLOC_ARENA_MAX: '1', MALLOC_MMAP_THRESHOLD_: '32768', [MALLOC_MARK]: 'MALLOC_ARENA_MAX MALLOC_MMAP_THRESHOLD_' });
    expect(starter).toEqual({ PATH: '/usr/bin', HOME: '/root' });
    restoreEnv(env);
    expect(env).toEqual(starter);
  });

  it('a setting the user made is kept, in the monitor and in QEMU; the other is still added and taken out', () => {
    const env = monitorEnv({ PATH: '/usr/bin', MALLOC_ARENA_MAX: '4' });
    expect(env).toEqual({ PATH: '/usr/bin', MALLOC_ARENA_MAX: '4', MALLOC_MMAP_THRESHOLD_: '32768', [MALLOC_MARK]: 'MALLOC_MMAP_THRESHOLD_' });
    restoreEnv(env);
    expect(env).toEqual({ PATH: '/usr/bin', MALLOC_ARENA_MAX: '4' });
    const both = { MALLOC_ARENA_MAX: '2', MALLOC_MMAP_THRESHOLD_: '131072' };
    expect(monitorEnv(both)).toEqual(both);
  });

  it('restoreEnv takes out only the malloc names, whatever the mark says', () => {
    const env = { PATH: '/usr/bin', [MALLOC_MARK]: 'PATH MALLOC_ARENA_MAX', MALLOC_ARENA_MAX: '1' };
    restoreEnv(env);
    expect(env).toEqual({ PATH: '/usr/bin' });
  });
});

describe('StreamPacer', () => {
  const KiB = 1024;
  function pacer(contended: { now: boolean }, limits: FlowLimits = OWN_LIMITS) {
    const sent: number[] = [];
    const p = new StreamPacer((piece) => sent.push(piece.length), () => contended.now, limits);
    return { p, sent };
  }

  it('alone, frames go at once and whole, up to the agent\'s whole window', () => {
    const { p, sent } = pacer({ now: false });
    for (let i = 0; i < 5; i++) p.data(Buffer.alloc(MAX_CHUNK));
    expect(sent).toEqual([MAX_CHUNK, MAX_CHUNK, MAX_CHUNK, MAX_CHUNK]);
    expect(p.inFlight).toBe(STREAM_WINDOW);
    expect(p.held).toBe(MAX_CHUNK);
  });

  it('keeps to the limits of the agent it relays to: an older agent\'s window, and its frame size', () => {
    // A client that synced before the agent's first hello was granted the host's limits; this agent is older.
    const { p, sent } = pacer({ now: false }, UNANNOUNCED_LIMITS);
    p.data(Buffer.alloc(MAX_CHUNK + 10));
    expect(sent).toEqual([256 * KiB, 256 * KiB, 256 * KiB, 256 * KiB]);
    expect(p.inFlight).toBe(UNANNOUNCED_LIMITS.window);
    expect(p.held).toBe(10);
    p.acked(256 * KiB);
    expect(sent.at(-1)).toBe(10);
  });

  it('while others are busy, only SHARED_IN_FLIGHT is in flight, in pieces; acks release the rest', () => {
    const { p, sent } = pacer({ now: true });
    p.data(Buffer.alloc(256 * KiB));
    expect(sent).toEqual(Array(SHARED_IN_FLIGHT / PACED_PIECE).fill(PACED_PIECE));
    expect(p.inFlight).toBe(SHARED_IN_FLIGHT);
    expect(p.held).toBe(256 * KiB - SHARED_IN_FLIGHT);
    p.acked(64 * KiB);
    expect(p.inFlight).toBe(SHARED_IN_FLIGHT);
    expect(p.held).toBe(256 * KiB - SHARED_IN_FLIGHT - 64 * KiB);
    expect(sent.reduce((a, b) => a + b, 0)).toBe(SHARED_IN_FLIGHT + 64 * KiB);
  });

  it('when the contention ends, the next ack sends the held frames whole', () => {
    const c = { now: true };
    const { p, sent } = pacer(c);
    p.data(Buffer.alloc(256 * KiB));
    sent.length = 0;
    c.now = false;
    p.acked(32 * KiB);
    expect(sent).toEqual([256 * KiB - SHARED_IN_FLIGHT]);
    expect(p.held).toBe(0);
  });

  it('the eof waits for the held frames before it', () => {
    const c = { now: true };
    const events: string[] = [];
    const p = new StreamPacer((piece) => events.push(`data ${piece.length}`), () => c.now, OWN_LIMITS);
    p.data(Buffer.alloc(SHARED_IN_FLIGHT + 1));
    p.eof(() => events.push('eof'));
    expect(events.at(-1)).not.toBe('eof');
    p.acked(SHARED_IN_FLIGHT);
    expect(events.slice(-2)).toEqual(['data 1', 'eof']);
  });

  it('a lent payload (a view of the read buffer) goes as it is when it can; what must wait is copied', () => {
    const c = { now: true };
    const sent: Buffer[] = [];
    const p = new StreamPacer((piece) => sent.push(piece), () => c.now, OWN_LIMITS);
    const read = Buffer.alloc(SHARED_IN_FLIGHT + 3 * PACED_PIECE, 0x11);
    p.data(read, true);
    for (const piece of sent) expect(piece.buffer).toBe(read.buffer);
    read.fill(0xee); // the next read lands in the same buffer
    c.now = false;
    p.acked(SHARED_IN_FLIGHT);
    const late = sent.slice(SHARED_IN_FLIGHT / PACED_PIECE);
    expect(late.reduce((a, b) => a + b.length, 0)).toBe(3 * PACED_PIECE);
    for (const piece of late) {
      expect(piece.buffer).not.toBe(read.buffer);
      expect(piece.every((b) => b === 0x11)).toBe(true);
    }
  });

  it('an ack for more than is in flight does not make credit out of nothing', () => {
    const { p } = pacer({ now: true });
    p.data(Buffer.alloc(16 * KiB));
    p.acked(1024 * KiB);
    expect(p.inFlight).toBe(0);
  });
});
