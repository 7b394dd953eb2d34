/**
 * The agent's port loop (the code that serves the virtio-serial character
 * device) on a FIFO pair, which behaves like the port where it matters: once
 * open, `read()` blocks while a writer is connected and returns 0 at once
 * while none is (docs/agent-protocol.md, "Transports of the agent"). The host
 * side here disconnects and reconnects by closing and reopening its writer;
 * the agent must neither exit nor spin, and must start a fresh session at
 * each sync.
 */
import { Buffer } from 'node:buffer';
import { execFileSync } from 'node:child_process';
import { createReadStream, createWriteStream, type ReadStream } from 'node:fs';
import { join } from 'node:path';
import { Duplex, PassThrough, Writable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AgentClient } from '../../src/serial/index.ts';
import { cpuTicks, spawnAgent, tempDir, type RunningAgent } from '../helpers/agent-process.ts';

let dir: string;
let cleanup: () => Promise<void>;
let agent: RunningAgent;
let toAgent: string;
let fromAgent: string;
let reader: ReadStream;
let current: PassThrough | undefined;

beforeAll(async () => {
  ({ dir, cleanup } = await tempDir('gsf-'));
  toAgent = join(dir, 'to-agent');
  fromAgent = join(dir, 'from-agent');
  execFileSync('mkfifo', [toAgent, fromAgent]);
  agent = await spawnAgent(['--fifo', toAgent, fromAgent]);
  // One reader for the whole test, like QEMU's side of the port: whatever the
  // agent writes goes to the session that is current, stale bytes included.
  reader = createReadStream(fromAgent);
  reader.on('data', (c) => current?.write(c));
});

afterAll(async () => {
  await agent?.kill();
  reader?.destroy();
  await cleanup?.();
});

/** A host session: a fresh writer on the agent's input FIFO (closing it is the host disconnecting). */
async function hostSession(prelude?: Buffer): Promise<AgentClient> {
  current = new PassThrough();
  const writer = createWriteStream(toAgent);
  if (prelude) writer.write(prelude);
  const duplex = Duplex.from({ readable: current, writable: writer });
  return AgentClient.attach(duplex, { timeoutMs: 8000, syncIntervalMs: 200, name: 'fifo' });
}

function collector(): { w: Writable; text: () => string } {
  const parts: Buffer[] = [];
  return {
    w: new Writable({
      write(c: Buffer, _e, cb) {
        parts.push(c);
        cb();
      },
    }),
    text: () => Buffer.concat(parts).toString(),
  };
}

describe('agent port loop on a FIFO pair (character-device semantics)', () => {
  it('serves a session: hello, ping, exec', async () => {
    const c = await hostSession();
    expect(c.hello.protocol).toBe(1);
    await c.ping();
    const out = collector();
    expect((await c.exec(['echo', 'over the port'], { stdout: out.w })).exitCode).toBe(0);
    expect(out.text()).toBe('over the port\n');
    await c.close();
  });

  it('does not spin while no host is connected', async () => {
    await new Promise((r) => setTimeout(r, 300));
    const before = await cpuTicks(agent.pid);
    await new Promise((r) => setTimeout(r, 2000));
    const used = (await cpuTicks(agent.pid)) - before;
    // Clock ticks are 10 ms: a spinning loop would use ~200 in 2 s.
    expect(used).toBeLessThan(10);
    expect(agent.child.exitCode).toBeNull();
  });

  it('survives 10 disconnect / reconnect cycles, one session each', async () => {
    for (let i = 0; i < 10; i++) {
      const c = await hostSession();
      const out = collector();
      await c.exec(['echo', String(i)], { stdout: out.w });
      expect(out.text()).toBe(`${i}\n`);
      await c.close();
    }
    expect(agent.stderr()).toMatch(/host session ended: host disconnected \(read returned 0\)/);
  }, 60_000);

  it('recovers when the host left a data frame unfinished in the same stream', async () => {
    // A header promising 200000 bytes and only 1000 of them: the sync that follows
    // is swallowed as payload until a padded repeat completes the frame.
    const stale = Buffer.concat([Buffer.from('{"t":"data","id":9,"s":"stdin","n":200000}\n'), Buffer.alloc(1000, 0x7b)]);
    // The agent must be synced for the frame to be parsed: take a session, then inject.
    current = new PassThrough();
    const writer = createWriteStream(toAgent);
    writer.write('\n{"t":"sync","nonce":"first"}\n');
    writer.write(stale);
    const duplex = Duplex.from({ readable: current, writable: writer });
    const c = await AgentClient.attach(duplex, { timeoutMs: 8000, syncIntervalMs: 200, name: 'fifo' });
    await c.ping();
    await c.close();
  });

  it('a long transfer through the FIFO keeps its checksum', async () => {
    const c = await hostSession();
    const local = join(dir, 'x.bin');
    const { writeFile } = await import('node:fs/promises');
    const { randomBytes } = await import('node:crypto');
    await writeFile(local, randomBytes(5 * 1024 * 1024));
    const up = await c.upload(local, join(dir, 'y.bin'));
    const down = await c.download(join(dir, 'y.bin'), join(dir, 'z.bin'));
    expect(down.sha256).toBe(up.sha256);
    await c.close();
  });
});
