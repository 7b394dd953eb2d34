/**
 * QMP protocol tests against a scripted server on a real unix socket.
 * Timing assertions are deliberately loose ("within a few seconds, not hanging").
 */
import { execFileSync } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ValidationError } from '../../src/errors.ts';
import {
  MAX_LINE_BYTES,
  QmpClient,
  QmpClosedError,
  QmpCommandError,
  QmpConnectError,
  QmpError,
  hostfwdAddCommandLine,
  type QmpClientOptions,
  type QmpEvent,
  type QmpProtocolError,
} from '../../src/qmp/index.ts';
import { startQmpServer, TEST_QEMU_VERSION, type QmpPeer, type ScriptedQmpServer } from '../helpers/qmp-server.ts';
import { rejection as rejectionOf } from '../helpers/rejection.ts';

let server: ScriptedQmpServer;
const clients: QmpClient[] = [];

beforeEach(async () => {
  server = await startQmpServer();
});

afterEach(async () => {
  for (const client of clients.splice(0)) await client.close();
  await server.close();
});

/** Connect a client and complete the handshake; returns both ends. */
async function connected(options: QmpClientOptions = {}): Promise<{ client: QmpClient; peer: QmpPeer }> {
  const peerP = server.nextConnection();
  const clientP = QmpClient.connect(server.path, { timeoutMs: 5000, ...options });
  const peer = await peerP;
  await peer.handshake();
  const client = await clientP;
  clients.push(client);
  return { client, peer };
}

const rejection = (promise: Promise<unknown>) => rejectionOf<QmpError>(promise);

describe('greeting and negotiation', () => {
  it('captures the greeting and negotiates without oob by default', async () => {
    const client = new QmpClient();
    clients.push(client);
    expect(client.state).toBe('idle');
    const peerP = server.nextConnection();
    const connectP = client.connect(server.path, { timeoutMs: 5000 });
    const peer = await peerP;
    expect(client.state).toBe('connecting');
    const request = await peer.handshake(['oob']);
    const greeting = await connectP;

    expect(request).toEqual({ execute: 'qmp_capabilities', id: request.id });
    expect(greeting).toEqual({ version: TEST_QEMU_VERSION, capabilities: ['oob'] });
    expect(client.greeting).toEqual(greeting);
    expect(client.capabilities).toEqual([]);
    expect(client.state).toBe('running');

    await client.close();
    expect(client.state).toBe('closed');
  });

  it('asks for oob only when enabled and offered', async () => {
    const offered = await connected({ oob: true });
    expect(offered.peer.received[0]).toEqual({
      execute: 'qmp_capabilities',
      arguments: { enable: ['oob'] },
      id: offered.peer.received[0]!.id,
    });
    expect(offered.client.capabilities).toEqual(['oob']);

    const peerP = server.nextConnection();
    const clientP = QmpClient.connect(server.path, { oob: true });
    const peer = await peerP;
    const request = await peer.handshake([]);
    const client = await clientP;
    clients.push(client);
    expect(request.arguments).toBeUndefined();
    expect(client.capabilities).toEqual([]);
  });

  it('does not send commands before negotiation has finished', async () => {
    const client = new QmpClient();
    clients.push(client);
    const peerP = server.nextConnection();
    const connectP = client.connect(server.path);
    const peer = await peerP;

    const early = await rejection(client.execute('query-status'));
    expect(early.code).toBe('EQMP_STATE');
    expect(early.message).toBe("cannot send 'query-status': QMP capabilities negotiation has not finished");
    expect(early.hint).toBe('await connect() before sending commands');

    await peer.handshake();
    await connectP;
    const statusP = client.queryStatus();
    const request = await peer.expect('query-status');
    peer.reply(request, { running: false, status: 'prelaunch' });
    await expect(statusP).resolves.toEqual({ running: false, status: 'prelaunch' });
    expect(peer.received.map((m) => m.execute)).toEqual(['qmp_capabilities', 'query-status']);
  });

  it('delivers an event that arrives during negotiation', async () => {
    const seen: QmpEvent[] = [];
    const peerP = server.nextConnection();
    const clientP = QmpClient.connect(server.path, { onEvent: (e) => seen.push(e) });
    const peer = await peerP;
    peer.greet();
    const request = await peer.expect('qmp_capabilities');
    peer.event('RTC_CHANGE', { offset: 1 });
    peer.reply(request);
    const client = await clientP;
    clients.push(client);
    expect(seen.map((e) => [e.event, e.data])).toEqual([['RTC_CHANGE', { offset: 1 }]]);
  });

  it('refuses to connect twice', async () => {
    const { client } = await connected();
    const err = await rejection(client.connect(server.path));
    expect(err.code).toBe('EQMP_STATE');
    expect(err.message).toBe(`cannot connect to ${server.path}: the QMP client is running`);
  });
});

describe('connect failures', () => {
  it('says another client may hold the socket when no greeting comes', async () => {
    const peerP = server.nextConnection();
    const err = await rejection(QmpClient.connect(server.path, { timeoutMs: 300 }));
    await peerP;
    expect(err).toBeInstanceOf(QmpConnectError);
    expect(err.code).toBe('EQMP_CONNECT');
    expect(err.message).toBe(
      `connect to QMP socket ${server.path}: no QMP greeting within 300ms (another client may hold the socket)`,
    );
    expect(err.hint).toBe('a QMP socket serves one client at a time: close the other client, or retry when it is done');
  });

  it('names a missing socket', async () => {
    const path = join(tmpdir(), 'goship-no-such-dir', 'qmp.sock');
    const err = await rejection(QmpClient.connect(path));
    expect(err.code).toBe('EQMP_CONNECT');
    expect(err.message).toBe(`connect to QMP socket ${path}: no such file`);
    expect(err.hint).toBe('is QEMU running? The socket appears once QEMU has started');
  });

  it('names a refused connection (stale socket file)', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'qmp-'));
    const path = join(dir, 'stale.sock');
    try {
      // A process that listens and exits without unlinking leaves a stale socket file.
      execFileSync(process.execPath, [
        '-e',
        "require('node:net').createServer().listen(process.argv[1], () => process.exit(0))",
        path,
      ]);
      const err = await rejection(QmpClient.connect(path));
      expect(err.code).toBe('EQMP_CONNECT');
      expect(err.message).toBe(`connect to QMP socket ${path}: connection refused`);
      expect(err.hint).toBe('nothing listens on it: QEMU probably exited and left a stale socket file');
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('refuses a socket path longer than a unix socket allows', async () => {
    const path = `/tmp/${'x'.repeat(110)}/qmp.sock`;
    const err = await rejection(QmpClient.connect(path));
    expect(err.code).toBe('EQMP_CONNECT');
    expect(err.message).toBe(
      `connect to QMP socket ${path}: path is ${path.length} bytes, longer than the 107 a unix socket allows`,
    );
  });

  it('reports a server that hangs up before greeting', async () => {
    const peerP = server.nextConnection();
    const clientP = QmpClient.connect(server.path, { timeoutMs: 5000 });
    (await peerP).end();
    const err = await rejection(clientP);
    expect(err.code).toBe('EQMP_CONNECT');
    expect(err.message).toBe(`connect to QMP socket ${server.path}: connection closed before the QMP greeting`);
  });

  it('reports a failed negotiation with QEMU’s class and description', async () => {
    const peerP = server.nextConnection();
    const clientP = QmpClient.connect(server.path);
    const peer = await peerP;
    peer.greet();
    const request = await peer.expect('qmp_capabilities');
    peer.replyError(request, 'GenericError', 'Capability negotiation is already complete');
    const err = await rejection(clientP);
    expect(err.code).toBe('EQMP_CONNECT');
    expect(err.message).toBe(
      `connect to QMP socket ${server.path}: capabilities negotiation failed: GenericError: Capability negotiation is already complete`,
    );
  });
});

describe('commands and replies', () => {
  it('routes out-of-order replies by id', async () => {
    const { client, peer } = await connected();
    const a = client.execute('query-a');
    const b = client.execute('query-b', { x: 1 });
    const c = client.execute('query-c');
    const requests = [await peer.next(), await peer.next(), await peer.next()];
    expect(requests.map((r) => r.execute)).toEqual(['query-a', 'query-b', 'query-c']);
    expect(requests[1]!.arguments).toEqual({ x: 1 });
    expect(new Set(requests.map((r) => r.id)).size).toBe(3);
    for (const request of [...requests].reverse()) peer.reply(request, `answer to ${String(request.execute)}`);
    await expect(Promise.all([a, b, c])).resolves.toEqual([
      'answer to query-a',
      'answer to query-b',
      'answer to query-c',
    ]);
  });

  it('drops replies whose id matches no pending call', async () => {
    const { client, peer } = await connected();
    const statusP = client.queryStatus();
    const request = await peer.expect('query-status');
    peer.send({ return: { bogus: true }, id: 987654 });
    peer.send({ return: { bogus: true }, id: 'not-ours' });
    peer.send({ return: { bogus: true } });
    peer.reply(request, { running: true, status: 'running' });
    await expect(statusP).resolves.toEqual({ running: true, status: 'running' });
    expect(client.droppedReplies).toBe(3);
    expect(client.state).toBe('running');
  });

  it('turns an error reply into QmpCommandError with class and desc verbatim', async () => {
    const { client, peer } = await connected();
    const callP = client.execute('device_del', { id: 'nope' });
    const request = await peer.expect('device_del');
    peer.replyError(request, 'DeviceNotFound', "Device 'nope' not found");
    const err = await rejection(callP);
    expect(err).toBeInstanceOf(QmpCommandError);
    const commandError = err as QmpCommandError;
    expect(commandError.code).toBe('EQMP_COMMAND');
    expect(commandError.errorClass).toBe('DeviceNotFound');
    expect(commandError.desc).toBe("Device 'nope' not found");
    expect(commandError.command).toBe('device_del');
    expect(commandError.args).toEqual({ id: 'nope' });
    expect(commandError.message).toBe("QMP command 'device_del' failed: DeviceNotFound: Device 'nope' not found");
  });

  it('reports an error without id (QEMU parse error) and fails pending calls', async () => {
    const { client, peer } = await connected();
    const reported: QmpProtocolError[] = [];
    client.on('protocol-error', (e) => reported.push(e));
    const callP = client.queryStatus();
    await peer.expect('query-status');
    peer.send({ error: { class: 'GenericError', desc: 'JSON parse error, invalid keyword' } });
    const err = await rejection(callP);
    expect(err.code).toBe('EQMP_PROTOCOL');
    expect(err.message).toBe('QEMU could not parse a command: GenericError: JSON parse error, invalid keyword');
    expect(reported).toHaveLength(1);
    // The connection stays usable.
    const nextP = client.queryVersion();
    peer.reply(await peer.expect('query-version'), TEST_QEMU_VERSION);
    await expect(nextP).resolves.toEqual(TEST_QEMU_VERSION);
  });

  it('times out a call with EQMP_TIMEOUT, drops the late reply, and keeps working', async () => {
    const { client, peer } = await connected();
    const err = await rejection(client.execute('query-slow', undefined, { timeoutMs: 150 }));
    expect(err.code).toBe('EQMP_TIMEOUT');
    expect(err.message).toBe("QMP command 'query-slow' got no reply within 150ms");
    const late = await peer.expect('query-slow');
    peer.reply(late, 'too late');
    const nextP = client.queryStatus();
    peer.reply(await peer.expect('query-status'), { running: true, status: 'running' });
    await expect(nextP).resolves.toEqual({ running: true, status: 'running' });
    expect(client.droppedReplies).toBe(1);
  });

  it('parses a very large (2 MiB) reply', async () => {
    const { client, peer } = await connected();
    const big = 'x'.repeat(2 * 1024 * 1024);
    const callP = client.humanMonitorCommand({ commandLine: 'info big' });
    const request = await peer.expect('human-monitor-command');
    expect(request.arguments).toEqual({ 'command-line': 'info big' });
    peer.reply(request, big);
    const result = await callP;
    expect(result.length).toBe(big.length);
    expect(result).toBe(big);
  });

  it('rejects with EQMP_FRAME when a line exceeds the limit', async () => {
    const { client, peer } = await connected({ maxLineBytes: 1024 });
    const callP = client.queryStatus();
    const request = await peer.expect('query-status');
    peer.reply(request, 'y'.repeat(2048));
    const err = await rejection(callP);
    expect(err.code).toBe('EQMP_FRAME');
    expect(err.message).toBe('QMP line too long: more than 1024 bytes without a newline; connection closed');
    await client.closed;
    expect(client.state).toBe('closed');
    expect(client.closeReason).toBe(err);
  });

  it('enforces the default 16 MiB line limit', async () => {
    const { client, peer } = await connected();
    const callP = client.queryStatus();
    await peer.expect('query-status');
    peer.sendRaw(Buffer.alloc(MAX_LINE_BYTES + 1, 0x61)); // no newline at all
    const err = await rejection(callP);
    expect(err.code).toBe('EQMP_FRAME');
    expect(err.message).toBe(`QMP line too long: more than ${MAX_LINE_BYTES} bytes without a newline; connection closed`);
  });

  it('closes with EQMP_PROTOCOL on a line that is not JSON', async () => {
    const { client, peer } = await connected();
    const callP = client.queryStatus();
    await peer.expect('query-status');
    peer.sendRaw('this is not json\n');
    const err = await rejection(callP);
    expect(err.code).toBe('EQMP_PROTOCOL');
    expect(err.message).toBe('QMP sent a line that is not JSON: this is not json');
    await client.closed;
    expect(client.state).toBe('closed');
  });
});

describe('events', () => {
  it('delivers an event interleaved between a request and its reply', async () => {
    const { client, peer } = await connected();
    const viaCallback: QmpEvent[] = [];
    client.on('event', (e) => viaCallback.push(e));
    const stream = client.events(['STOP']);
    const stopP = client.stop();
    const request = await peer.expect('stop');
    peer.send({ event: 'STOP', timestamp: { seconds: 1700000000, microseconds: 123456 } });
    peer.reply(request);
    await expect(stopP).resolves.toBeUndefined();
    const first = await stream.next();
    expect(first).toEqual({
      done: false,
      value: { event: 'STOP', data: {}, timestamp: { seconds: 1700000000, microseconds: 123456 } },
    });
    expect(viaCallback.map((e) => e.event)).toEqual(['STOP']);
    await stream.close();
  });

  it('filters an event stream by name and passes data and timestamp through', async () => {
    const { client, peer } = await connected();
    const stream = client.events(['SHUTDOWN', 'POWERDOWN']);
    peer.event('RESUME');
    peer.event('POWERDOWN');
    peer.event('VSERPORT_CHANGE', { id: 'org.goship.agent.0', open: true });
    peer.event('GUEST_PANICKED', { action: 'pause' });
    peer.send({ event: 'SHUTDOWN', data: { guest: true, reason: 'guest-shutdown' }, timestamp: { seconds: 5, microseconds: 6 } });
    const names: string[] = [];
    for await (const event of stream) {
      names.push(event.event);
      if (event.event === 'SHUTDOWN') {
        expect(event).toEqual({
          event: 'SHUTDOWN',
          data: { guest: true, reason: 'guest-shutdown' },
          timestamp: { seconds: 5, microseconds: 6 },
        });
        break;
      }
    }
    expect(names).toEqual(['POWERDOWN', 'SHUTDOWN']);
  });

  it('waitForEvent resolves on a matching event and times out with EQMP_TIMEOUT', async () => {
    const { client, peer } = await connected();
    const vserP = client.waitForEvent('VSERPORT_CHANGE', {
      timeoutMs: 5000,
      match: (e) => e.data.id === 'port1',
    });
    peer.event('VSERPORT_CHANGE', { id: 'port0', open: true });
    peer.event('VSERPORT_CHANGE', { id: 'port1', open: false });
    await expect(vserP).resolves.toMatchObject({ event: 'VSERPORT_CHANGE', data: { id: 'port1', open: false } });

    const err = await rejection(client.waitForEvent(['RESET', 'STOP'], { timeoutMs: 100 }));
    expect(err.code).toBe('EQMP_TIMEOUT');
    expect(err.message).toBe('no RESET or STOP event within 100ms');
  });

  it('expectEvent subscribes before sending, so an event before the reply is not missed', async () => {
    const { client, peer } = await connected();
    const resultP = client.expectEvent('RESET', () => client.systemReset(), { timeoutMs: 5000 });
    const request = await peer.expect('system_reset');
    peer.event('RESET', { guest: false, reason: 'host-qmp-system-reset' });
    peer.reply(request);
    const { event } = await resultP;
    expect(event.data).toEqual({ guest: false, reason: 'host-qmp-system-reset' });
  });

  it('expectEvent propagates the command error and drops the subscription', async () => {
    const { client, peer } = await connected();
    const resultP = client.expectEvent('RESET', () => client.systemReset(), { timeoutMs: 5000 });
    peer.replyError(await peer.expect('system_reset'), 'GenericError', 'nope');
    const err = await rejection(resultP);
    expect(err.code).toBe('EQMP_COMMAND');
  });
});

describe('hang-up and close', () => {
  it('rejects every pending call promptly with EQMP_CLOSED when the server hangs up', async () => {
    const { client, peer } = await connected();
    const closes: Array<Error | undefined> = [];
    client.on('close', (reason) => closes.push(reason));
    const stream = client.events();
    const statusP = client.queryStatus({ timeoutMs: 60_000 });
    const contP = client.cont({ timeoutMs: 60_000 });
    const eventP = client.waitForEvent('SHUTDOWN', { timeoutMs: 60_000 });
    await peer.expect('query-status');
    await peer.expect('cont');
    peer.end();

    const [statusErr, contErr, eventErr] = await Promise.all([
      rejection(statusP),
      rejection(contP),
      rejection(eventP),
    ]);
    expect(statusErr).toBeInstanceOf(QmpClosedError);
    expect(statusErr.code).toBe('EQMP_CLOSED');
    expect(statusErr.message).toBe("QMP connection closed while 'query-status' was pending");
    expect(statusErr.hint).toBe('QEMU may have exited or crashed: read its log (qemu.log)');
    expect((statusErr as QmpClosedError).command).toBe('query-status');
    expect((statusErr as QmpClosedError).byClient).toBe(false);
    expect(contErr.message).toBe("QMP connection closed while 'cont' was pending");
    expect(eventErr.code).toBe('EQMP_CLOSED');
    expect(eventErr.message).toBe('QMP connection closed while waiting for the SHUTDOWN event');
    await expect(stream.next()).resolves.toEqual({ done: true, value: undefined });
    expect(client.state).toBe('closed');
    expect(closes).toEqual([undefined]);

    const after = await rejection(client.queryStatus());
    expect(after.code).toBe('EQMP_CLOSED');
    expect(after.message).toBe("cannot send 'query-status': the QMP connection is closed");
  });

  it('rejects on a reset connection with EQMP_CLOSED, not after the call timeout', async () => {
    const { client, peer } = await connected();
    const callP = client.execute('query-status', undefined, { timeoutMs: 120_000 });
    await peer.expect('query-status');
    peer.destroy();
    expect((await rejection(callP)).code).toBe('EQMP_CLOSED');
  });

  it('close() rejects pending calls with byClient', async () => {
    const { client, peer } = await connected();
    const callP = client.queryStatus();
    await peer.expect('query-status');
    const closeP = client.close();
    expect(client.state).toBe('disconnecting');
    const err = await rejection(callP);
    expect(err.message).toBe("QMP connection closed by the client while 'query-status' was pending");
    expect((err as QmpClosedError).byClient).toBe(true);
    expect(err.hint).toBeUndefined();
    await closeP;
    expect(client.state).toBe('closed');
    await peer.closed;
  });

  it('quit succeeds when QEMU closes the connection before replying', async () => {
    const { client, peer } = await connected();
    const quitP = client.expectEvent('SHUTDOWN', () => client.quit(), { timeoutMs: 5000 });
    await peer.expect('quit');
    peer.event('SHUTDOWN', { guest: false, reason: 'host-qmp-quit' });
    peer.end();
    const { event } = await quitP;
    expect(event.data.reason).toBe('host-qmp-quit');
  });
});

describe('typed commands', () => {
  it('sends camelCase arguments under their QMP names', async () => {
    const { client, peer } = await connected();
    const ringP = client.ringbufRead({ device: 'status0', size: 4096, format: 'utf8' });
    const ring = await peer.expect('ringbuf-read');
    expect(ring.arguments).toEqual({ device: 'status0', size: 4096, format: 'utf8' });
    peer.reply(ring, 'ready\n');
    await expect(ringP).resolves.toBe('ready\n');

    const hmpP = client.humanMonitorCommand({ commandLine: 'info registers', cpuIndex: 0 });
    const hmp = await peer.expect('human-monitor-command');
    expect(hmp.arguments).toEqual({ 'command-line': 'info registers', 'cpu-index': 0 });
    peer.reply(hmp, 'RAX=0');
    await expect(hmpP).resolves.toBe('RAX=0');

    const fwdP = client.hostfwdAdd({ netdevId: 'net0', hostAddr: '127.0.0.1', hostPort: 2222, guestPort: 22 });
    const fwd = await peer.expect('human-monitor-command');
    expect(fwd.arguments).toEqual({ 'command-line': 'hostfwd_add net0 tcp:127.0.0.1:2222-:22' });
    peer.reply(fwd, '');
    await expect(fwdP).resolves.toBeUndefined();

    const badP = client.hostfwdAdd({ hostPort: 2222, guestPort: 22 });
    peer.reply(await peer.expect('human-monitor-command'), "Could not set up host forwarding rule 'tcp::2222-:22'\r\n");
    const bad = await rejection(badP);
    expect(bad.code).toBe('EQMP_HMP');
    expect(bad.message).toBe(
      "HMP command 'hostfwd_add tcp::2222-:22' failed: Could not set up host forwarding rule 'tcp::2222-:22'",
    );

    const rmP = client.hostfwdRemove({ protocol: 'udp', hostPort: 5353 });
    const rmReq = await peer.expect('human-monitor-command');
    expect(rmReq.arguments).toEqual({ 'command-line': 'hostfwd_remove udp::5353' });
    peer.reply(rmReq, 'host forwarding rule for udp::5353 not found\r\n');
    expect((await rejection(rmP)).code).toBe('EQMP_HMP');
  });

  it('validates hostfwd arguments, reporting every problem at once', () => {
    let caught: unknown;
    try {
      hostfwdAddCommandLine({ netdevId: 'net 0; quit', hostAddr: 'localhost', hostPort: 0, guestPort: 70000 });
    } catch (err) {
      caught = err;
    }
    expect(caught).toBeInstanceOf(ValidationError);
    expect((caught as ValidationError).message).toBe(
      'invalid hostfwd_add rule: ' +
        "netdevId: expected a QEMU id (a letter, then letters, digits, '.', '_', '-'), got \"net 0; quit\"; " +
        'hostAddr: expected an IPv4 address, got "localhost"; ' +
        'hostPort: expected a port number 1-65535, got 0; ' +
        'guestPort: expected a port number 1-65535, got 70000',
    );
  });
});
