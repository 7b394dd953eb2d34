/** Process apps, the pure part: unit text, quoting, systemd and journal output, user names. */
import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { ttyArgv } from '../../guest-agent/src/exec.ts';
import {
  appOfUnit,
  journalArgv,
  journalLine,
  mainOf,
  ownUser,
  parseBtime,
  parseProcStat,
  parsePasswd,
  parseShow,
  procState,
  renderEnvFile,
  renderUnit,
  restartSettings,
  unitPathValue,
  unitCgroupProcs,
  unitQuote,
  unixTimestamp,
  type ProcMeta,
} from '../../guest-agent/src/procs/unit.ts';
import { checkAppOptions } from '../../src/runtime/index.ts';

const sha = (t: string) => createHash('sha256').update(t).digest('hex');
const spec = {
  app: 'files',
  generation: 3,
  argv: ['/var/lib/goship/apps/files/3/busybox', 'httpd', '-f', '-p', '8080'],
  env: ['GREETING=100% "real" $HOME'],
  restart: { name: 'always' as const },
  settleMs: 1500,
  readyPorts: [],
};

describe('the unit of a process app', () => {
  it('is exactly this for a busybox httpd with its own user, limits and an environment', () => {
    const text = renderUnit({ ...spec, memoryBytes: 64 * 1024 * 1024, cpus: 0.5 }, spec.argv[0]!, { user: 'goship-files', ownUser: true, workdir: '/var/lib/goship/apps/files/data' });
    expect(text).toBe(
      [
        '# Written by goship-agent for the app files, generation 3.',
        '# goshipctl app deploy replaces it and app remove deletes it: do not edit.',
        '[Unit]',
        'Description=GoShip app files',
        'Wants=network-online.target',
        'After=network-online.target',
        'StartLimitIntervalSec=60',
        'StartLimitBurst=5',
        '',
        '[Service]',
        'Type=exec',
        'ExecStart="/var/lib/goship/apps/files/3/busybox" "httpd" "-f" "-p" "8080"',
        'User=goship-files',
        'WorkingDirectory=/var/lib/goship/apps/files/data',
        // The values are in a root-only file, not in the world-readable unit.
        'EnvironmentFile=/var/lib/goship/apps/files/3/app.env',
        'Restart=always',
        'RestartSec=1',
        'TimeoutStopSec=10',
        'SyslogIdentifier=files',
        'NoNewPrivileges=yes',
        'PrivateTmp=yes',
        'MemoryMax=67108864',
        'CPUQuota=50%',
        '',
        '[Install]',
        'WantedBy=multi-user.target',
        '',
      ].join('\n'),
    );
  });

  it('its environment file: KEY="VALUE" lines, nothing in them expands, a newline stays', () => {
    expect(renderEnvFile(['GREETING=100% "real" $HOME', 'PATHLIKE=a\\b`c`', 'MULTI=one\ntwo', 'EMPTY='])).toBe(
      ['GREETING="100% \\"real\\" \\$HOME"', 'PATHLIKE="a\\\\b\\`c\\`"', 'MULTI="one\ntwo"', 'EMPTY=""', ''].join('\n'),
    );
    expect(renderUnit({ ...spec, env: [] }, spec.argv[0]!, { user: 'goship-files', ownUser: true, workdir: '/w' })).not.toContain('Environment');
  });

  it('a given user gets no hardening of GoShip\'s; no limits when none are asked', () => {
    const text = renderUnit({ ...spec, restart: { name: 'no' } }, '/usr/bin/python3', { user: 'www-data', ownUser: false, workdir: '/srv' });
    expect(text).toContain('ExecStart="/usr/bin/python3" "httpd" "-f" "-p" "8080"\nUser=www-data\nWorkingDirectory=/srv\n');
    expect(text).toContain('\nRestart=no\nTimeoutStopSec=10\nSyslogIdentifier=files\n\n[Install]');
    expect(text).not.toMatch(/NoNewPrivileges|MemoryMax|CPUQuota|StartLimit|RestartSec/);
  });

  it('maps each restart policy to Restart= and start limits (no tight crash loop)', () => {
    expect(restartSettings({ name: 'no' })).toEqual({ unit: [], service: ['Restart=no'] });
    expect(restartSettings({ name: 'on-failure' })).toEqual({ unit: ['StartLimitIntervalSec=60', 'StartLimitBurst=5'], service: ['Restart=on-failure', 'RestartSec=1'] });
    expect(restartSettings({ name: 'on-failure', maxRetries: 3 })).toEqual({ unit: ['StartLimitIntervalSec=infinity', 'StartLimitBurst=4'], service: ['Restart=on-failure', 'RestartSec=1'] });
    expect(restartSettings({ name: 'always' })).toEqual({ unit: ['StartLimitIntervalSec=60', 'StartLimitBurst=5'], service: ['Restart=always', 'RestartSec=1'] });
  });

  it('quotes every word so systemd reads back exactly the argument: specifiers, variables, quotes, newlines, control bytes', () => {
    expect(unitQuote('plain', true)).toBe('"plain"');
    expect(unitQuote('a b', true)).toBe('"a b"');
    expect(unitQuote('%n $HOME ${X}', true)).toBe('"%%n $$HOME $${X}"');
    expect(unitQuote('%n $HOME', false)).toBe('"%%n $HOME"');
    expect(unitQuote('say "hi"\\now', true)).toBe('"say \\"hi\\"\\\\now"');
    expect(unitQuote('line1\nline2\tx\x01\x7f', true)).toBe('"line1\\nline2\\tx\\x01\\x7f"');
    expect(unitQuote('', true)).toBe('""');
    expect(unitQuote('ünï', true)).toBe('"ünï"');
  });

  it('a path setting is not unquoted by systemd: only % is doubled, control characters are refused', () => {
    expect(unitPathValue('/srv/my app/100%')).toBe('/srv/my app/100%%');
    expect(unitPathValue('/srv/"x"')).toBe('/srv/"x"');
    expect(() => unitPathValue('/srv/a\nExecStartPre=/bin/evil')).toThrow('expected an absolute path without control characters');
    expect(() => unitPathValue('srv')).toThrow('expected an absolute path');
  });

  it('names: the unit back to its app; a user of its own within 32 bytes', () => {
    expect(appOfUnit('goship-app-files.service')).toBe('files');
    expect(appOfUnit('goship-app-../x.service')).toBeUndefined();
    expect(appOfUnit('goship-app-files.service.d')).toBeUndefined();
    expect(appOfUnit('docker.service')).toBeUndefined();
    expect(ownUser('files', sha)).toBe('goship-files');
    const long = 'a-very-long-application-name-indeed';
    const u = ownUser(long, sha);
    expect(u).toBe(`goship-a-very-long-appl-${sha(long).slice(0, 8)}`);
    expect(u.length).toBeLessThanOrEqual(32);
    expect(ownUser('a-very-long-application-name-indeex', sha)).not.toBe(u);
  });
});

const meta: ProcMeta = { app: 'files', generation: 3, argv: spec.argv, env: [], user: 'goship-files', ownUser: true, workdir: '/var/lib/goship/apps/files/data' };
const sig = (n: number) => ({ 9: 'SIGKILL', 15: 'SIGTERM' })[n] ?? null;

describe('what systemd says, as the host sees it', () => {
  it('parses systemctl show blocks of several units', () => {
    expect(parseShow('Id=a.service\nActiveState=active\n\nId=b.service\nActiveState=failed\nExecStart={ path=/x ; argv[]=/x a=b }\n')).toEqual([
      { Id: 'a.service', ActiveState: 'active' },
      { Id: 'b.service', ActiveState: 'failed', ExecStart: '{ path=/x ; argv[]=/x a=b }' },
    ]);
    expect(parseShow('')).toEqual([]);
  });

  it('running: pid and start time', () => {
    const props = { ActiveState: 'active', SubState: 'running', MainPID: '812', ExecMainStartTimestamp: '@1764630000', ExecMainCode: '0', ExecMainStatus: '0', NRestarts: '2', Result: 'success' };
    expect(procState(props, meta, sig)).toEqual({
      app: 'files',
      generation: 3,
      unit: 'goship-app-files.service',
      state: 'running',
      activeState: 'active',
      subState: 'running',
      pid: 812,
      startedAt: '2025-12-01T23:00:00.000Z',
      restarts: 2,
      exitCode: null,
      signal: null,
      result: 'success',
      user: 'goship-files',
      argv: spec.argv,
    });
  });

  it('restarting after a kill -9: the count and the signal', () => {
    const s = procState({ ActiveState: 'activating', SubState: 'auto-restart', MainPID: '0', ExecMainCode: '2', ExecMainStatus: '9', NRestarts: '1', Result: 'signal' }, meta, sig);
    expect([s.state, s.pid, s.restarts, s.exitCode, s.signal, s.startedAt]).toEqual(['restarting', null, 1, null, 'SIGKILL', null]);
  });

  it('failed when the policy gave up: the exit code and the reason', () => {
    const s = procState({ ActiveState: 'failed', SubState: 'failed', MainPID: '0', ExecMainCode: '1', ExecMainStatus: '1', NRestarts: '4', Result: 'start-limit-hit' }, meta, sig);
    expect([s.state, s.exitCode, s.signal, s.result, s.restarts]).toEqual(['failed', 1, null, 'start-limit-hit', 4]);
  });

  it('stopped, and states in between', () => {
    expect(procState({ ActiveState: 'inactive', SubState: 'dead', ExecMainCode: '1', ExecMainStatus: '0', Result: 'success' }, meta, sig)).toMatchObject({ state: 'stopped', exitCode: 0 });
    expect(procState({ ActiveState: 'deactivating', SubState: 'stop-sigterm' }, meta, sig).state).toBe('stopping');
    expect(procState({ ActiveState: 'activating', SubState: 'start' }, meta, sig).state).toBe('starting');
    expect(procState({}, meta, sig)).toMatchObject({ state: 'unknown', restarts: 0, pid: null });
  });

  it('unix timestamps', () => {
    expect(unixTimestamp('@0')).toBe('1970-01-01T00:00:00.000Z');
    expect(unixTimestamp('')).toBeNull();
    expect(unixTimestamp('n/a')).toBeNull();
    expect(unixTimestamp(undefined)).toBeNull();
  });
});

describe('the journal of a process app', () => {
  it('prints the message, with its microsecond time when asked', () => {
    const e = { MESSAGE: 'GET /index.html', __REALTIME_TIMESTAMP: '1764630000123456' };
    expect(journalLine(e, false)).toBe('GET /index.html');
    expect(journalLine(e, true)).toBe('2025-12-01T23:00:00.123456Z GET /index.html');
    // journald stores a line that is not UTF-8 as an array of bytes.
    expect(journalLine({ MESSAGE: [104, 105, 0xff] }, false)).toBe('hi\ufffd');
    expect(journalLine({ MESSAGE: null }, false)).toBeUndefined();
    expect(journalLine({ MESSAGE: ['x'] }, false)).toBeUndefined();
  });

  it('reads only the program\'s own lines, with follow, tail and since', () => {
    expect(journalArgv('files', { follow: false })).toEqual(['journalctl', '_SYSTEMD_UNIT=goship-app-files.service', '--output=json', '--no-pager', '--quiet']);
    expect(journalArgv('files', { follow: true, tail: 10, since: 1764630000.7 })).toEqual([
      'journalctl',
      '_SYSTEMD_UNIT=goship-app-files.service',
      '--output=json',
      '--no-pager',
      '--quiet',
      '--follow',
      '--lines=10',
      '--since=@1764630000',
    ]);
  });

  it('reads a passwd line', () => {
    expect(parsePasswd('goship-files:x:998:997:GoShip app files:/var/lib/goship/apps/files/data:/usr/sbin/nologin\n')).toEqual({ name: 'goship-files', uid: 998, gid: 997, home: '/var/lib/goship/apps/files/data' });
    expect(parsePasswd('broken')).toBeUndefined();
    expect(parsePasswd('a:x:y:1:::')).toBeUndefined();
  });

  it('a terminal for exec: script(1) with the size set before the command', () => {
    expect(ttyArgv(['sh', '-c', "echo 'hi'"], 31, 97)).toEqual(['script', '--quiet', '--return', '--command', `stty rows 31 cols 97 2>/dev/null; exec 'sh' '-c' 'echo '\\''hi'\\'''`, '/dev/null']);
    expect(ttyArgv(['tty'])).toEqual(['script', '--quiet', '--return', '--command', "exec 'tty'", '/dev/null']);
  });
});

describe('process app options', () => {
  const base = { project: 'web', app: 'files', source: { kind: 'binary' as const, file: '/tmp/busybox' }, cmd: ['httpd'] };
  const issuesOf = (o: Partial<Parameters<typeof checkAppOptions>[0]>) => checkAppOptions({ ...base, ...o }).issues;

  it('takes the process options and refuses the container ones', () => {
    expect(issuesOf({ workdir: '/srv', user: 'www-data', restart: 'on-failure:3' })).toEqual([]);
    expect(issuesOf({ restart: 'unless-stopped' })).toEqual([{ path: '--restart', message: 'unless-stopped is a container policy: a process app takes no, on-failure[:N] or always' }]);
    expect(issuesOf({ volumes: ['data:/data'] })).toEqual([{ path: '--volume', message: 'volumes are for containers: a process app uses its directory in the guest (or --workdir)' }]);
    expect(issuesOf({ workdir: '/srv/../etc' })).toEqual([{ path: '--workdir', message: 'expected an absolute path without .., got "/srv/../etc"' }]);
    expect(issuesOf({ source: { kind: 'binary', file: '/tmp/my prog' } })[0]?.path).toBe('--binary');
    expect(issuesOf({ source: { kind: 'command' }, cmd: [] })).toEqual([{ path: '--command', message: 'give the program and its arguments after --' }]);
  });

  it('a container takes no --workdir or --user', () => {
    expect(checkAppOptions({ project: 'web', app: 'api', source: { kind: 'image', ref: 'web:1' }, workdir: '/srv', user: 'www-data' }).issues.map((i) => i.path)).toEqual(['--workdir', '--user']);
  });
});

describe('a unit\'s main process from its cgroup and /proc', () => {
  it('reads the parent and the start time of /proc/PID/stat, whatever the name holds', () => {
    const stat = (comm: string) => `597 (${comm}) S 1 597 597 0 -1 4194560 171 0 0 0 0 0 0 0 20 0 1 0 123456 2297856 166 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0`;
    expect(parseProcStat(stat('busybox'))).toEqual({ ppid: 1, startTicks: 123456 });
    expect(parseProcStat(stat('a) S 99 (b'))).toEqual({ ppid: 1, startTicks: 123456 });
    expect(parseProcStat('')).toBeUndefined();
    expect(parseProcStat('12 (x) S 1 2')).toBeUndefined();
  });

  it('the boot time of /proc/stat', () => {
    expect(parseBtime('cpu  1 2 3\nintr 5\nbtime 1764690000\nprocesses 9\n')).toBe(1764690000);
    expect(parseBtime('cpu 1\n')).toBeUndefined();
  });

  it('the main process is the one child of PID 1; none or two: not judged', () => {
    expect(mainOf([{ pid: 700, ppid: 597 }, { pid: 597, ppid: 1 }])).toBe(597);
    expect(mainOf([])).toBeUndefined();
    expect(mainOf([{ pid: 5, ppid: 1 }, { pid: 6, ppid: 1 }])).toBeUndefined();
    expect(unitCgroupProcs('web')).toBe('/sys/fs/cgroup/system.slice/goship-app-web.service/cgroup.procs');
  });
});
