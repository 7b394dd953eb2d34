/**
 * Test mode: `goship-agent --listen SOCKET` serves the same protocol on a unix
 * socket server, one session per connection, so the host client can be tested
 * without a VM. The real transport is the virtio-serial character device
 * (port.ts); this mode exists for tests and never powers anything off.
 */
import { unlink } from 'node:fs/promises';
import { createServer, type Server } from 'node:net';
import { SocketLink } from './link.ts';
import { AgentSession, type AgentContext, type Handler } from './session.ts';

export async function serveUnixSocket(path: string, ctx: AgentContext, handlers: Record<string, Handler>): Promise<Server> {
  await unlink(path).catch(() => undefined);
  const server = createServer((socket) => {
    const session = new AgentSession(new SocketLink(socket), ctx, handlers);
    socket.on('data', (chunk: Buffer) => session.push(chunk));
    socket.on('error', () => undefined);
    socket.on('close', () => session.end('connection closed'));
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(path, () => {
      server.off('error', reject);
      resolve();
    });
  });
  return server;
}
