/**
 * `tunnel`: one connection to a socket inside the guest (a loopback TCP port,
 * or a unix socket such as dockerd's), relayed over the agent channel. The
 * host's `stdin` frames are written to the socket and what the socket sends
 * goes back as `stdout`, each under flow control; an eof either way is a half
 * close (`shutdown(SHUT_WR)`), which Docker's hijacked connections rely on.
 * The request ends when the socket has closed both ways; a cancel or the end
 * of the session destroys it.
 */
import { connect, type Socket } from 'node:net';
import { REMOTE_CODES, TunnelParamsSchema, whenWritable, type TunnelParams, type TunnelResult } from '../../src/protocol/index.ts';
import { RemoteError, parseParams, type Call } from './session.ts';

/** Pure: what the error messages call the target. */
export function tunnelTarget(p: TunnelParams): string {
  return p.to === 'tcp' ? `127.0.0.1:${p.port}` : p.path;
}

export async function tunnelMethod(call: Call, rawParams: unknown): Promise<TunnelResult> {
  const p = parseParams(TunnelParamsSchema, rawParams, 'tunnel');
  const target = tunnelTarget(p);
  const sock = connect({ ...(p.to === 'tcp' ? { host: '127.0.0.1', port: p.port } : { path: p.path }), allowHalfOpen: true });
  await new Promise<void>((resolve, reject) => {
    sock.once('connect', resolve);
    sock.once('error', (err: NodeJS.ErrnoException) => reject(new RemoteError(err.code ?? REMOTE_CODES.internal, `tunnel to ${target}: ${err.message}`)));
  });
  const closed = new Promise<void>((resolve) => sock.once('close', () => resolve()));
  sock.on('error', () => undefined); // a reset ends it through 'close'
  const onAbort = (): void => void sock.destroy();
  call.signal.addEventListener('abort', onAbort, { once: true });
  let sent = 0;
  const inbound = feed(call, sock, (n) => (sent += n));
  inbound.catch(() => sock.destroy());
  try {
    // Not the socket itself: its iterator destroys it at the end of what it sends, and the host may still write.
    const received = await call.sendStream('stdout', sock.iterator({ destroyOnReturn: false }) as AsyncIterable<Buffer>);
    await closed;
    return { sent, received };
  } finally {
    call.signal.removeEventListener('abort', onAbort);
    sock.destroy();
  }
}

/** The host's bytes into the socket, then its half close. */
async function feed(call: Call, sock: Socket, count: (n: number) => void): Promise<void> {
  for await (const chunk of call.inbound('stdin')) {
    if (sock.destroyed || sock.writableEnded) continue;
    count(chunk.length);
    if (!sock.write(chunk)) await whenWritable(sock);
  }
  if (!sock.destroyed) sock.end();
}
