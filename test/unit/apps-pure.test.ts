/** The app layer's pure parts: options, the Engine API's framings and bodies, the version negotiation. */
import { Buffer } from 'node:buffer';
import { describe, expect, it } from 'vitest';
import { containerInfo, createBody, unreachableRegistry } from '../../guest-agent/src/apps.ts';
import { RemoteError } from '../../guest-agent/src/session.ts';
import { CLIENT_API_MAX, compareApi, negotiate } from '../../guest-agent/src/docker/engine.ts';
import { JsonLines, MuxDecoder, muxFrame } from '../../guest-agent/src/docker/frames.ts';
import { checkAppOptions, containerSpec, parseAppPort, parseEnvFile, parseRestart } from '../../src/runtime/index.ts';

describe('app options', () => {
  it('ports, restart policies, env files', () => {
    expect(parseAppPort('8080:80', 'p')).toEqual({ proto: 'tcp', host: 8080, container: 80 });
    expect(parseAppPort('udp:5353:53', 'p')).toEqual({ proto: 'udp', host: 5353, container: 53 });
    expect(parseAppPort('80', '--port[0]')).toEqual({ path: '--port[0]', message: 'not a port mapping; expected [udp:]HOST:CONTAINER with ports 1-65535, got "80"' });
    expect(parseAppPort('0:80', 'p')).toMatchObject({ message: expect.stringMatching(/^host port 0 is out of range/) });
    expect(parseRestart('on-failure:3')).toEqual({ name: 'on-failure', maxRetries: 3 });
    expect(parseRestart('always')).toEqual({ name: 'always' });
    expect(parseRestart('sometimes')).toEqual({ path: '--restart', message: 'expected no, on-failure[:N], always or unless-stopped, got "sometimes"' });
    expect(parseEnvFile('# comment\nA=1\n\nB=two words\r\nbad line\n')).toEqual({
      env: ['A=1', 'B=two words'],
      issues: [{ path: '--env-file:5', message: 'expected KEY=VALUE, got "bad line"' }],
    });
  });

  it('reports every problem at once, each naming its flag', () => {
    const { issues } = checkAppOptions({
      project: 'Web',
      app: '-x',
      source: { kind: 'image', ref: 'bad ref' },
      ports: ['8080:80', 'udp:8080:80', '8080:81', 'nope'],
      env: ['=1', 'OK=1'],
      volumes: ['data:/var/lib/data', 'noslash'],
      restart: 'sometimes',
      memory: '1K',
      cpus: 'lots',
      workdir: 'rel',
      user: 'Root',
    });
    expect(issues.map((i) => i.path)).toEqual(['project', 'app', '--image', '--port[2]', '--port[3]', '--env[0]', '--volume[1]', '--restart', '--memory', '--cpus', '--workdir', '--user']);
    expect(issues.find((i) => i.path === '--port[2]')?.message).toBe('host port tcp:8080 is given twice');
  });

  it('the container spec of a deploy: ports published on the guest port that equals the host port, labels, limits', () => {
    const { app } = checkAppOptions({ project: 'web', app: 'api', source: { kind: 'image', ref: 'x' }, ports: ['18080:80'], env: ['A=1'], restart: 'on-failure:2', memory: '64M', cpus: '0.5', cmd: ['serve'] });
    expect(containerSpec('web', app, 'sha256:abc', 3)).toEqual({
      name: 'goship-api-3',
      image: 'sha256:abc',
      cmd: ['serve'],
      env: ['A=1'],
      ports: [{ proto: 'tcp', guest: 18080, container: 80 }],
      volumes: [],
      restart: { name: 'on-failure', maxRetries: 2 },
      memory: 64 * 1024 * 1024,
      cpus: 0.5,
      labels: { 'org.goship.app': 'api', 'org.goship.project': 'web', 'org.goship.generation': '3' },
    });
  });
});

describe('the Engine API', () => {
  it('negotiates the version: the daemon\'s, capped at the newest this client knows', () => {
    expect(negotiate('1.41')).toBe('1.41');
    expect(negotiate('1.99')).toBe(CLIENT_API_MAX);
    expect(negotiate(undefined)).toBe('1.41');
    expect(compareApi('1.41', '1.47')).toBeLessThan(0);
    expect(compareApi('1.100', '1.47')).toBeGreaterThan(0);
  });

  it('demultiplexes 8-byte framed streams in pieces, across any chunking, skipping stdin frames', () => {
    const wire = Buffer.concat([muxFrame(1, Buffer.from('out one\n')), muxFrame(2, Buffer.from('err\n')), muxFrame(0, Buffer.from('in')), muxFrame(1, Buffer.from('out two\n'))]);
    for (const size of [1, 3, 7, 64]) {
      const got: Record<string, string> = { stdout: '', stderr: '' };
      const d = new MuxDecoder((s, piece) => (got[s] += piece.toString()));
      for (let i = 0; i < wire.length; i += size) d.push(wire.subarray(i, i + size));
      expect(got).toEqual({ stdout: 'out one\nout two\n', stderr: 'err\n' });
      expect(d.idle).toBe(true);
    }
  });

  it('splits JSON progress lines; drops what is not JSON or too long', () => {
    const seen: unknown[] = [];
    const bad: string[] = [];
    const j = new JsonLines((o) => seen.push(o), (w) => bad.push(w), 32);
    j.push(Buffer.from('{"stream":"Step 1/2"}\n{"err'));
    j.push(Buffer.from('or":"boom"}\nnot json\n'));
    j.push(Buffer.from(`{"x":"${'y'.repeat(50)}"}\n{"last":true}`));
    j.end();
    expect(seen).toEqual([{ stream: 'Step 1/2' }, { error: 'boom' }, { last: true }]);
    expect(bad).toEqual(['a line that is not JSON', 'a line longer than 32 bytes']);
  });

  it('a container spec becomes the create body; an inspect reply becomes what the host sees', () => {
    const body = createBody({ name: 'c', image: 'i', env: [], ports: [{ proto: 'udp', guest: 5353, container: 53 }], volumes: [{ name: 'data', path: '/d' }], restart: { name: 'no' }, labels: {} }, false);
    expect(body).toMatchObject({
      ExposedPorts: { '53/udp': {} },
      HostConfig: { PortBindings: { '53/udp': [{ HostIp: '', HostPort: '5353' }] }, RestartPolicy: { Name: '' }, Mounts: [{ Type: 'volume', Source: 'data', Target: '/d' }], SecurityOpt: ['apparmor=unconfined'] },
    });
    expect((createBody({ name: 'c', image: 'i', env: [], ports: [], volumes: [], restart: { name: 'always' }, labels: {} }, true).HostConfig as Record<string, unknown>).SecurityOpt).toBeUndefined();
    expect(
      containerInfo({
        Id: 'abc',
        Name: '/goship-api-1',
        Image: 'sha256:1',
        RestartCount: 2,
        State: { Status: 'running', ExitCode: 0, StartedAt: '2026-12-01T10:00:00Z', FinishedAt: '0001-01-01T00:00:00Z', Error: '' },
        Config: { Image: 'goship/api:1', Labels: { 'org.goship.app': 'api' } },
        HostConfig: { PortBindings: { '80/tcp': [{ HostPort: '18080' }] } },
      }),
    ).toEqual({
      id: 'abc',
      name: 'goship-api-1',
      image: 'goship/api:1',
      imageId: 'sha256:1',
      state: 'running',
      exitCode: null,
      restartCount: 2,
      startedAt: '2026-12-01T10:00:00Z',
      finishedAt: null,
      error: '',
      labels: { 'org.goship.app': 'api' },
      ports: [{ proto: 'tcp', container: 80, guest: 18080 }],
    });
  });
});

describe('a pull the VM cannot make', () => {
  it('names the registry it cannot reach and keeps dockerd\'s words', () => {
    const words = 'Get "http://localhost:5999/v2/": dial tcp [::1]:5999: connect: connection refused';
    const e = unreachableRegistry('localhost:5999/none:1', new RemoteError('EDOCKER', words)) as RemoteError;
    expect([e.code, e.message]).toEqual(['EDOCKER', `the VM cannot reach the registry localhost:5999 to pull localhost:5999/none:1: ${words}`]);
    const hub = unreachableRegistry('busybox:1.36', new RemoteError('EDOCKER', 'Get "https://registry-1.docker.io/v2/": dial tcp: lookup registry-1.docker.io: no such host')) as RemoteError;
    expect(hub.message).toMatch(/^the VM cannot reach the registry docker\.io to pull busybox:1\.36: /);
    const lib = unreachableRegistry('library/busybox', new RemoteError('EDOCKER', 'dial tcp: i/o timeout')) as RemoteError;
    expect(lib.message).toBe('the VM cannot reach the registry docker.io to pull library/busybox: dial tcp: i/o timeout');
  });

  it('leaves other failures as they are', () => {
    const other = new RemoteError('EDOCKER', 'manifest for localhost:5000/site:9 not found: manifest unknown');
    expect(unreachableRegistry('localhost:5000/site:9', other)).toBe(other);
    const plain = new Error('boom');
    expect(unreachableRegistry('a', plain)).toBe(plain);
  });
});
