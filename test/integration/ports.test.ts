/** takenPorts on real sockets: a port another program holds, a port GoShip forwards for someone else, a port of one's own. */
import { createServer, type Server } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { takenPorts } from '../../src/runtime/ports.ts';
import { emptyState, type State, type Vm } from '../../src/store/index.ts';

let held: Server;
let port: number;

beforeAll(async () => {
  held = createServer();
  await new Promise<void>((r) => held.listen(0, '127.0.0.1', r));
  port = (held.address() as { port: number }).port;
});
afterAll(() => new Promise<void>((r) => held.close(() => r())));

const owning = (project: string): State => ({
  ...emptyState(),
  vms: { v: { id: 'v', name: project, project, config: { network: { mode: 'user', forwards: [{ proto: 'tcp', host: port, guest: 80 }] } } } as unknown as Vm },
});

describe('takenPorts', () => {
  it('a port another program has bound is refused with that reason', async () => {
    expect(await takenPorts(emptyState(), [{ proto: 'tcp', host: port }])).toEqual([{ path: '--port[0]', message: `host port tcp:${port} is in use by another program on this host` }]);
    // UDP on the same number is another port.
    expect(await takenPorts(emptyState(), [{ proto: 'udp', host: port }])).toEqual([]);
  });

  it('a port GoShip forwards for another owner gives one reason, not two', async () => {
    expect(await takenPorts(owning('api'), [{ proto: 'tcp', host: port }], 'app web/site')).toEqual([{ path: '--port[0]', message: `host port tcp:${port} is already forwarded by project api` }]);
  });

  it('a port the caller itself forwards (its QEMU holds it) is its own', async () => {
    expect(await takenPorts(owning('api'), [{ proto: 'tcp', host: port }], 'project api')).toEqual([]);
  });
});
