// A child process for test/integration/store-concurrency.test.ts.
// usage: node store-worker.mjs BUNDLE STATE_FILE MODE JSON_PARAMS
// BUNDLE is src/store/index.ts bundled by esbuild (the test builds it).
// Prints one JSON line with the outcome on stdout.
import { existsSync, writeFileSync } from 'node:fs';
import { pathToFileURL } from 'node:url';

const [bundle, file, mode, paramsJson] = process.argv.slice(2);
const params = JSON.parse(paramsJson ?? '{}');
const store = await import(pathToFileURL(bundle).href);
const db = await store.Store.openFile(file, params.options ?? {});
const now = () => new Date().toISOString();

function counterVm() {
  return {
    id: 'counter',
    name: 'counter',
    node: 'local',
    createdAt: now(),
    state: 'defined',
    paths: { dir: '/d', qmpSocket: '/q', qmpUserSocket: '/u', agentSocket: '/a', consoleSocket: '/cs', monitorSocket: '/m', consoleLog: '/c', qemuLog: '/l', monitorLog: '/ml', pidfile: '/p' },
    config: { count: 0 },
  };
}

async function count({ worker, n }) {
  for (let i = 0; i < n; i++) {
    await db.update((d) => {
      store.ensureLocalNode(d, now());
      d.vms.counter ??= counterVm();
      d.vms.counter.config.count += 1;
      const name = `w${worker}-${i}`;
      store.assertNameFree(d, 'image', name);
      d.images[name] = { name, createdAt: now(), kind: 'built', dir: `/images/${name}` };
    });
  }
  return { ok: true };
}

async function create({ name, startAt }) {
  // Start together: both processes wait for the same wall-clock moment.
  await new Promise((r) => setTimeout(r, Math.max(0, startAt - Date.now())));
  try {
    await db.update((d) => {
      store.assertNameFree(d, 'project', name);
      d.projects[name] = {
        name,
        createdAt: now(),
        node: 'local',
        vmId: `vm-${process.pid}`,
        spec: { cpus: 1, memoryBytes: 1 << 30, diskBytes: 1 << 30, image: 'base', ports: [], sshKeys: [] },
        state: 'creating',
      };
    });
    return { ok: true, pid: process.pid };
  } catch (err) {
    return { ok: false, code: err.code, message: err.message, pid: process.pid };
  }
}

async function hold({ marker }) {
  await db.update(async (d) => {
    d.nodes.held = { name: 'held', createdAt: now() };
    writeFileSync(marker, String(process.pid));
    // Hold the lock until killed (the interval keeps the event loop alive).
    await new Promise(() => setInterval(() => {}, 1000));
  });
  return { ok: false, message: 'hold returned' };
}

async function read({ stopFile }) {
  // Read without the lock, as every command does, until stopFile appears:
  // every snapshot must be whole and the counter must never go back.
  let reads = 0;
  let last = 0;
  for (;;) {
    const stop = existsSync(stopFile);
    const state = await db.read();
    const n = state.vms.counter?.config.count ?? 0;
    if (n < last) return { ok: false, message: `counter went back from ${last} to ${n}` };
    if (Object.keys(state.images).length !== n) return { ok: false, message: `counter ${n} but ${Object.keys(state.images).length} images` };
    last = n;
    reads++;
    if (stop) return { ok: true, reads, last };
    await new Promise((r) => setTimeout(r, 2));
  }
}

const modes = { count, create, hold, read };
let result;
try {
  result = await modes[mode](params);
} catch (err) {
  result = { ok: false, code: err.code, message: err.message, hint: err.hint };
}
process.stdout.write(`${JSON.stringify(result)}\n`);
