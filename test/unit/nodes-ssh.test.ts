/** Nodes over SSH, the pure part: addresses, the ssh argv, the remote command line, ssh's failures. */
import { execFileSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { nodeUrl, parseNodeUrl, remoteCommand, shQuote, sshArgv, sshFailure, sshForwardArgv } from '../../src/nodes/ssh.ts';

describe('node addresses', () => {
  it('parses ssh://USER@HOST[:PORT] with names, IPv4 and [IPv6]', () => {
    expect(parseNodeUrl('ssh://root@lab.example.org')).toEqual({ user: 'root', host: 'lab.example.org', port: 22 });
    expect(parseNodeUrl('ssh://gs@127.0.0.1:2222')).toEqual({ user: 'gs', host: '127.0.0.1', port: 2222 });
    expect(parseNodeUrl('ssh://gs@[::1]:2222')).toEqual({ user: 'gs', host: '::1', port: 2222 });
    expect(nodeUrl({ user: 'gs', host: '::1', port: 2222 })).toBe('ssh://gs@[::1]:2222');
    expect(nodeUrl({ user: 'root', host: 'vps', port: 22 })).toBe('ssh://root@vps');
  });

  it('refuses what is not one, naming why', () => {
    expect(parseNodeUrl('root@vps')).toEqual({ path: 'url', message: 'not an ssh:// address; expected ssh://USER@HOST[:PORT], got "root@vps"' });
    expect(parseNodeUrl('ssh://vps')).toMatchObject({ message: /not an ssh:\/\/ address/ });
    expect(parseNodeUrl('ssh://-oProxyCommand=x@vps')).toMatchObject({ message: /the user "-oProxyCommand=x" is not a user name/ });
    expect(parseNodeUrl('ssh://root@-oProxyCommand=x')).toMatchObject({ message: /is not a host name or address/ });
    expect(parseNodeUrl('ssh://root@vps:0')).toMatchObject({ message: /port 0 is out of range/ });
    expect(parseNodeUrl('ssh://root@vps:70000')).toMatchObject({ message: /port 70000 is out of range/ });
    expect(parseNodeUrl('ssh://root@[zz]')).toMatchObject({ message: /is not a host name or address/ });
  });
});

describe('the remote command line', () => {
  it('quotes every word so the remote shell gives back exactly the argv', () => {
    expect(shQuote('plain-word_1.txt')).toBe('plain-word_1.txt');
    expect(shQuote('')).toBe("''");
    expect(shQuote("it's $HOME; rm -rf /")).toBe(`'it'\\''s $HOME; rm -rf /'`);
    const argv = ['goshipctl', 'vm', 'exec', 'web', '--', 'sh', '-c', 'echo "$1" `id` $(id); exit 3', "a'b", '', 'two words', '\n', '*'];
    // The real round trip: sh parses the line back into the same words.
    const back = execFileSync('sh', ['-c', `printf '%s\\0' ${remoteCommand(argv)}`]).toString().split('\0').slice(0, -1);
    expect(back).toEqual(argv);
    expect(() => remoteCommand([])).toThrow(/empty argv/);
  });

  it('is exactly this ssh argv: batch mode, bounded connect, keep-alives, connection reuse, no TTY', () => {
    expect(sshArgv({ user: 'gs', host: '127.0.0.1', port: 2222 }, { controlPath: '/run/goship/ssh/%C', identity: '/k/id', knownHosts: '/k/known' }, ['goshipctl', 'version', '--json'])).toEqual([
      'ssh', '-T',
      '-o', 'BatchMode=yes',
      '-o', 'ConnectTimeout=10',
      '-o', 'ServerAliveInterval=5',
      '-o', 'ServerAliveCountMax=3',
      '-o', 'ControlMaster=auto',
      '-o', 'ControlPath=/run/goship/ssh/%C',
      '-o', 'ControlPersist=60',
      '-o', 'IdentityFile=/k/id',
      '-o', 'IdentitiesOnly=yes',
      '-o', 'UserKnownHostsFile=/k/known',
      '-p', '2222',
      '-l', 'gs',
      '127.0.0.1',
      '--',
      'goshipctl version --json',
    ]);
    // A check of a node's key and login makes its own connection.
    const own = sshArgv({ user: 'gs', host: 'h', port: 22 }, { controlPath: '/c/%C', share: false }, ['true']);
    expect(own.slice(10, 14)).toEqual(['-o', 'ControlMaster=no', '-o', 'ControlPath=none']);
    expect(own).not.toContain('ControlPersist=60');
    // First contact into GoShip's own known_hosts: an unknown key is recorded (a changed one is still refused); otherwise ssh's default.
    const first = sshArgv({ user: 'gs', host: 'h', port: 22 }, { controlPath: '/c/%C', knownHosts: '/h/nodes/box.known_hosts', acceptNewHostKey: true }, ['true']);
    expect(first.join(' ')).toContain('-o UserKnownHostsFile=/h/nodes/box.known_hosts -o StrictHostKeyChecking=accept-new -p 22');
    expect(own.join(' ')).not.toContain('StrictHostKeyChecking');
  });
});

describe("a unix socket forwarded over the shared connection", () => {
  const a = { user: 'gs', host: 'box.example', port: 2222 };
  it('asks the master (-O forward / cancel), with the local and the remote path joined by ":"', () => {
    expect(sshForwardArgv(a, { controlPath: '/run/goship/ssh-%C' }, '/run/goship/nodes/box-1.sock', '/run/user/1000/goship/far/monitor.sock')).toEqual([
      'ssh', '-o', 'BatchMode=yes', '-o', 'ControlPath=/run/goship/ssh-%C', '-O', 'forward',
      '-L', '/run/goship/nodes/box-1.sock:/run/user/1000/goship/far/monitor.sock', '-p', '2222', '-l', 'gs', 'box.example',
    ]);
    expect(sshForwardArgv(a, { controlPath: '/c' }, '/l', '/r', 'cancel')).toContain('cancel');
  });

  it('refuses a path with ":" (it would split the forward elsewhere)', () => {
    expect(() => sshForwardArgv(a, { controlPath: '/c' }, '/l', '/run/a:b/monitor.sock')).toThrow(/holds ":"/);
  });
});

describe("ssh's own failures", () => {
  it('tells an unreachable node, a refused login and a wrong host key apart', () => {
    expect(sshFailure('ssh: connect to host 127.0.0.1 port 2222: Connection refused\r\n')).toEqual({ kind: 'unreachable', text: 'ssh: connect to host 127.0.0.1 port 2222: Connection refused' });
    expect(sshFailure('gs@127.0.0.1: Permission denied (publickey).').kind).toBe('auth');
    expect(sshFailure('No ED25519 host key is known for [127.0.0.1]:2222 and you have requested strict checking.\nHost key verification failed.').kind).toBe('hostkey');
    expect(sshFailure('@@@@@@@@@@@\n@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @\n@@@@@@@@@@@\nHost key verification failed.').kind).toBe('hostkey-changed');
    expect(sshFailure("Warning: Permanently added '[127.0.0.1]:2222' (ED25519) to the list of known hosts.\nsomething else")).toEqual({ kind: 'other', text: 'something else' });
  });
});
