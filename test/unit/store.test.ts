import { mkdtemp, readFile, readdir, rm, stat, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Layout } from '../../src/layout.ts';
import { T0, projectRecord, vmRecord } from '../helpers/records.ts';
import {
  MIGRATIONS,
  NameTakenError,
  NotFoundError,
  SCHEMA_VERSION,
  Store,
  StoreCorruptError,
  StoreInvalidError,
  StoreLockError,
  StoreVersionError,
  appKey,
  assertNameFree,
  emptyState,
  ensureLocalNode,
  findRecord,
  requireRecord,
} from '../../src/store/index.ts';
import type { Image, State } from '../../src/store/index.ts';

const fixedNow = () => new Date(T0);
const STAMP = '2024-05-01T12-00-00-000Z';

const project = projectRecord;
const vm = vmRecord;

function image(name: string): Image {
  return { name, createdAt: T0, kind: 'built', dir: `/h/images/${name}`, packages: ['systemd'] };
}

let home: string;
let layout: Layout;

beforeEach(async () => {
  home = await mkdtemp(join(tmpdir(), 'goship-store-'));
  layout = new Layout(join(home, 'goship'), join(home, 'run'));
});
afterEach(async () => {
  await rm(home, { recursive: true, force: true });
});

async function mode(path: string): Promise<number> {
  return (await stat(path)).mode & 0o777;
}

async function openStore(): Promise<Store> {
  return Store.open(layout, { now: fixedNow });
}

describe('Store: reading and writing', () => {
  it('reads a missing file as the empty state and does not create it', async () => {
    const store = await openStore();
    expect(await store.read()).toEqual({ schemaVersion: 3, nodes: {}, projects: {}, vms: {}, images: {}, apps: {} });
    expect(await readdir(layout.home)).toEqual([]);
  });

  it('creates GOSHIP_HOME with mode 0700 and the state file with mode 0600', async () => {
    const store = await openStore();
    expect(await mode(layout.home)).toBe(0o700);
    expect(await mode(join(home, 'goship'))).toBe(0o700);
    await store.update((d) => {
      ensureLocalNode(d, T0);
    });
    expect(await mode(layout.stateFile)).toBe(0o600);
  });

  it('persists an update, returns what fn returned, and leaves no temporary or lock file', async () => {
    const store = await openStore();
    const result = await store.update((d) => {
      ensureLocalNode(d, T0);
      d.projects.web = project('web');
      d.vms['vm-web'] = vm('vm-web', { project: 'web' });
      d.images.bookworm = image('bookworm');
      d.apps[appKey('web', 'api')] = { project: 'web', name: 'api', kind: 'container', image: 'nginx', createdAt: T0, state: 'running' };
      return 42;
    });
    expect(result).toBe(42);

    const expected: State = {
      schemaVersion: 3,
      nodes: { local: { name: 'local', createdAt: T0 } },
      projects: { web: project('web') },
      vms: { 'vm-web': vm('vm-web', { project: 'web' }) },
      images: { bookworm: image('bookworm') },
      apps: { 'web/api': { project: 'web', name: 'api', kind: 'container', image: 'nginx', createdAt: T0, state: 'running' } },
    };
    expect(JSON.parse(await readFile(layout.stateFile, 'utf8'))).toEqual(expected);
    expect(await store.read()).toEqual(expected);
    expect(await (await Store.open(layout)).read()).toEqual(expected);
    expect(await readdir(layout.home)).toEqual(['state.json']);
  });

  it('accepts an async fn and sees the previous update inside the next one', async () => {
    const store = await openStore();
    await store.update((d) => {
      d.projects.a = project('a');
    });
    const seen = await store.update(async (d) => {
      await new Promise((r) => setTimeout(r, 10));
      d.projects.b = project('b');
      return Object.keys(d.projects);
    });
    expect(seen).toEqual(['a', 'b']);
    expect(Object.keys((await store.read()).projects)).toEqual(['a', 'b']);
  });

  it('serializes concurrent updates from one process', async () => {
    const store = await openStore();
    await Promise.all(
      Array.from({ length: 30 }, (_, i) =>
        store.update((d) => {
          d.images[`i${i}`] = image(`i${i}`);
          const counter = (d.vms.c ??= vm('c', { config: { n: 0 } }));
          counter.config.n = (counter.config.n as number) + 1;
        }),
      ),
    );
    const state = await store.read();
    expect(state.vms.c?.config.n).toBe(30);
    expect(Object.keys(state.images)).toHaveLength(30);
  });

  it('writes nothing when fn throws (sync or async), and rethrows the error', async () => {
    const store = await openStore();
    const boom = new Error('boom');
    await expect(
      store.update((d) => {
        d.projects.a = project('a');
        throw boom;
      }),
    ).rejects.toBe(boom);
    expect(await readdir(layout.home)).toEqual([]);

    await store.update((d) => {
      d.projects.a = project('a');
    });
    const before = await readFile(layout.stateFile);
    await expect(
      store.update(async (d) => {
        delete d.projects.a;
        d.projects.b = project('b');
        await Promise.resolve();
        throw boom;
      }),
    ).rejects.toBe(boom);
    expect(await readFile(layout.stateFile)).toEqual(before);
    // The lock was released: the next update goes through.
    await store.update((d) => {
      d.projects.c = project('c');
    });
    expect(Object.keys((await store.read()).projects)).toEqual(['a', 'c']);
  });

  it('refuses to write a state it would not read back (StoreInvalidError), and writes nothing', async () => {
    const store = await openStore();
    await store.update((d) => {
      d.projects.a = project('a');
    });
    const before = await readFile(layout.stateFile);
    const err = await store
      .update((d) => {
        d.projects.b = project('b', { state: 'weird' as never });
        d.projects.c = project('other');
      })
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(StoreInvalidError);
    expect((err as StoreInvalidError).code).toBe('ESTORE_INVALID');
    expect((err as StoreInvalidError).message).toBe(
      `refusing to write ${layout.stateFile}: projects.b.state: Invalid type: Expected ("creating" | "ready" | "stopped" | "suspended" | "crashed" | "deleting" | "broken") but received "weird"`,
    );
    expect(await readFile(layout.stateFile)).toEqual(before);

    const keyErr = await store.update((d) => void (d.projects.c = project('other'))).catch((e: unknown) => e);
    expect((keyErr as StoreInvalidError).message).toBe(
      `refusing to write ${layout.stateFile}: projects.c.name: record stored under "c" has name "other"`,
    );
  });

  it('refuses a nested update instead of waiting for itself', async () => {
    const store = await openStore();
    const err = await store.update(() => store.update(() => 1)).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(StoreLockError);
    expect((err as StoreLockError).code).toBe('ESTORE_LOCK');
    expect((err as StoreLockError).message).toBe(`cannot lock ${layout.stateFile}: already held by this update (nested store.update)`);
  });

  it('skips the write when fn changed nothing', async () => {
    const store = await openStore();
    await store.update((d) => void (d.projects.a = project('a')));
    const before = await stat(layout.stateFile);
    await new Promise((r) => setTimeout(r, 20));
    await store.update((d) => Object.keys(d.projects).length);
    expect((await stat(layout.stateFile)).ino).toBe(before.ino);
  });

  it('removes temporary files left by a dead writer, keeping those of live processes', async () => {
    const store = await openStore();
    const dead = join(layout.home, '.state.json.999999999.0123456789ab.tmp');
    const live = join(layout.home, `.state.json.${process.ppid}.0123456789ab.tmp`);
    await writeFile(dead, '{');
    await writeFile(live, '{');
    await store.update((d) => void (d.projects.a = project('a')));
    expect((await readdir(layout.home)).sort()).toEqual([`.state.json.${process.ppid}.0123456789ab.tmp`, 'state.json']);
  });
});

describe('Store: corrupt files', () => {
  const validText = JSON.stringify({ ...emptyState(), projects: { web: project('web') } }, null, 2);
  const cases: { what: string; content: () => Promise<void>; reason: string | RegExp }[] = [
    {
      what: 'invalid JSON',
      content: () => writeFile(layout.stateFile, '{"schemaVersion": 1, nodes: {}}'),
      reason: /^invalid JSON: .*JSON/,
    },
    {
      what: 'a truncated file',
      content: async () => {
        await writeFile(layout.stateFile, validText);
        await truncate(layout.stateFile, Math.floor(validText.length / 2));
      },
      reason: /^invalid JSON \(the file looks truncated\): /,
    },
    {
      what: 'an empty file',
      content: () => writeFile(layout.stateFile, ''),
      reason: 'the file is empty',
    },
    {
      what: 'a JSON array',
      content: () => writeFile(layout.stateFile, '[]'),
      reason: 'wrong shape: expected a JSON object, got an array',
    },
    {
      what: 'a collection of the wrong type',
      content: () => writeFile(layout.stateFile, JSON.stringify({ ...emptyState(), projects: [] })),
      reason: 'wrong shape: projects: Invalid type: Expected Object but received Array',
    },
    {
      what: 'a record of the wrong shape',
      content: () =>
        writeFile(
          layout.stateFile,
          JSON.stringify({ ...emptyState(), projects: { web: { ...project('web'), spec: { ...project('web').spec, cpus: '2' } } } }),
        ),
      reason: 'wrong shape: projects.web.spec.cpus: Invalid type: Expected number but received "2"',
    },
    {
      what: 'an unknown top-level key',
      content: () => writeFile(layout.stateFile, JSON.stringify({ ...emptyState(), volumes: {} })),
      reason: 'wrong shape: volumes: Invalid key: Expected never but received "volumes"',
    },
    {
      what: 'a bad schemaVersion',
      content: () => writeFile(layout.stateFile, JSON.stringify({ ...emptyState(), schemaVersion: '1' })),
      reason: 'wrong shape: schemaVersion: expected a non-negative integer, got "1"',
    },
  ];

  for (const c of cases) {
    it(`reports ${c.what} as StoreCorruptError, keeps a copy and leaves the original untouched`, async () => {
      const store = await openStore();
      await c.content();
      const original = await readFile(layout.stateFile);

      const err = await store.read().catch((e: unknown) => e);
      expect(err).toBeInstanceOf(StoreCorruptError);
      const e = err as StoreCorruptError;
      const backup = `${layout.stateFile}.corrupt-${STAMP}`;
      expect(e.code).toBe('ESTORE_CORRUPT');
      expect(e.file).toBe(layout.stateFile);
      expect(e.backup).toBe(backup);
      if (typeof c.reason === 'string') expect(e.reason).toBe(c.reason);
      else expect(e.reason).toMatch(c.reason);
      expect(e.message).toBe(`state file ${layout.stateFile} is corrupt: ${e.reason} (a copy was kept at ${backup})`);
      expect(e.hint).toBe(`Repair ${layout.stateFile} by hand, or move it away to start from an empty state; GoShip will not overwrite it.`);
      expect(await readFile(backup)).toEqual(original);
      expect(await mode(backup)).toBe(0o600);
      expect(await readFile(layout.stateFile)).toEqual(original);

      // An update refuses too and writes nothing; the same bytes reuse the same copy.
      const again = await store.update(() => 1).catch((x: unknown) => x);
      expect(again).toBeInstanceOf(StoreCorruptError);
      expect((again as StoreCorruptError).backup).toBe(backup);
      expect(await readFile(layout.stateFile)).toEqual(original);
      expect((await readdir(layout.home)).filter((n) => n.includes('.corrupt-'))).toEqual([`state.json.corrupt-${STAMP}`]);
    });
  }

  it('keeps a second copy under a new name when the corrupt content changed', async () => {
    const store = await openStore();
    await writeFile(layout.stateFile, '{');
    const first = (await store.read().catch((e: unknown) => e)) as StoreCorruptError;
    await writeFile(layout.stateFile, '{{');
    const second = (await store.read().catch((e: unknown) => e)) as StoreCorruptError;
    expect(first.backup).toBe(`${layout.stateFile}.corrupt-${STAMP}`);
    expect(second.backup).toBe(`${layout.stateFile}.corrupt-${STAMP}-1`);
    expect(await readFile(second.backup as string, 'utf8')).toBe('{{');
  });
});

describe('Store: schema versions', () => {
  it('refuses a file from a newer GoShip with a clear error, and does not touch it', async () => {
    const store = await openStore();
    const text = JSON.stringify({ ...emptyState(), schemaVersion: 4, clusters: {} });
    await writeFile(layout.stateFile, text);
    for (const attempt of [() => store.read(), () => store.update(() => 1)]) {
      const err = await attempt().catch((e: unknown) => e);
      expect(err).toBeInstanceOf(StoreVersionError);
      expect((err as StoreVersionError).code).toBe('ESTORE_VERSION');
      expect((err as StoreVersionError).message).toBe(
        `state file ${layout.stateFile} has schema version 4: this GoShip reads versions up to 3`,
      );
      expect((err as StoreVersionError).hint).toBe('Upgrade GoShip to the version that wrote this file.');
    }
    expect(await readFile(layout.stateFile, 'utf8')).toBe(text);
    expect(await readdir(layout.home)).toEqual(['state.json']);
  });

  it('has a migration for every version below the current one', () => {
    expect(SCHEMA_VERSION).toBe(3);
    for (let v = 0; v < SCHEMA_VERSION; v++) expect(MIGRATIONS[v]).toBeTypeOf('function');
  });

  const v0 = {
    nodes: [{ name: 'local', createdAt: T0 }],
    projects: [project('web')],
    vms: [vm('vm-web', { project: 'web' })],
    images: [image('bookworm')],
  };
  const current: State = {
    schemaVersion: 3,
    nodes: { local: { name: 'local', createdAt: T0 } },
    projects: { web: project('web') },
    vms: { 'vm-web': vm('vm-web', { project: 'web' }) },
    images: { bookworm: image('bookworm') },
    apps: {},
  };

  it('migrates a v0 file on read without writing it', async () => {
    const store = await openStore();
    const text = JSON.stringify(v0);
    await writeFile(layout.stateFile, text);
    expect(await store.read()).toEqual(current);
    expect(await readFile(layout.stateFile, 'utf8')).toBe(text);
  });

  it('saves a migrated v0 file at the current version on the next update and keeps a copy of the v0 file', async () => {
    const store = await openStore();
    const text = JSON.stringify({ schemaVersion: 0, ...v0 });
    await writeFile(layout.stateFile, text);
    await store.update((d) => void (d.projects.web!.state = 'ready'));
    expect(JSON.parse(await readFile(layout.stateFile, 'utf8'))).toEqual({ ...current, projects: { web: project('web', { state: 'ready' }) } });
    expect(await readFile(`${layout.stateFile}.v0-${STAMP}`, 'utf8')).toBe(text);
  });

  it('migrates a v1 file: the monitor\'s paths beside the old ones, crash and stopReason as one end record', async () => {
    const store = await openStore();
    const oldPaths = (id: string) => ({ dir: `/h/vms/${id}`, qmpSocket: `/r/${id}/qmp.sock`, agentSocket: `/r/${id}/agent.sock`, consoleLog: `/h/vms/${id}/console.log`, qemuLog: 'q', pidfile: 'p' });
    const base = { node: 'local', createdAt: T0, config: {} };
    const v1 = {
      schemaVersion: 1,
      nodes: {},
      projects: {},
      vms: {
        a: { ...base, id: 'a', name: 'a', state: 'crashed', stoppedAt: T0, paths: oldPaths('a'), crash: { at: T0, signal: 'SIGKILL', logTail: 'the end' } },
        b: { ...base, id: 'b', name: 'b', state: 'stopped', stoppedAt: T0, paths: oldPaths('b'), stopReason: 'stopped by acpi' },
        c: { ...base, id: 'c', name: 'c', state: 'defined', paths: oldPaths('c') },
      },
      images: {},
      apps: {},
    };
    await writeFile(layout.stateFile, JSON.stringify(v1));
    const s = await store.read();
    expect(s.schemaVersion).toBe(3);
    expect(s.vms.a!.paths).toEqual({
      ...oldPaths('a'),
      qmpUserSocket: '/r/a/qmp-user.sock',
      consoleSocket: '/r/a/console.sock',
      monitorSocket: '/r/a/monitor.sock',
      monitorLog: '/h/vms/a/monitor.log',
      pidfile: '/r/a/qemu.pid',
    });
    expect(s.vms.a!.end).toEqual({ at: T0, kind: 'crashed', summary: 'QEMU was gone when GoShip looked (recorded by an older version)', signal: 'SIGKILL', logTail: 'the end' });
    expect(s.vms.b!.end).toEqual({ at: T0, kind: 'stopped', summary: 'stopped by acpi' });
    expect(s.vms.c!.end).toBeUndefined();
    for (const vm of Object.values(s.vms)) expect(Object.keys(vm)).not.toContain('crash');
  });

  it('reads a v2 file as it is, and keeps a suspended VM\'s saved state once at v3', async () => {
    const store = await openStore();
    const v2 = { ...emptyState(), schemaVersion: 2, projects: { web: project('web', { state: 'stopped' }) }, vms: { 'vm-web': vm('vm-web', { project: 'web' }) } };
    await writeFile(layout.stateFile, JSON.stringify(v2));
    expect(await store.read()).toEqual({ ...v2, schemaVersion: 3 });
    const saved = { file: '/h/vms/vm-web/saved.state', bytes: 4096, at: T0, argvShape: ['qemu-system-x86_64', '-name', 'guest={name}'] };
    await store.update((d) => {
      d.projects.web!.state = 'suspended';
      d.vms['vm-web']!.state = 'suspended';
      d.vms['vm-web']!.saved = saved;
      d.vms['vm-web']!.op = { kind: 'suspend', pid: 1, startedAt: T0 };
    });
    const back = await (await Store.open(layout)).read();
    expect([back.schemaVersion, back.projects.web!.state, back.vms['vm-web']!.state, back.vms['vm-web']!.saved, back.vms['vm-web']!.op?.kind]).toEqual([3, 'suspended', 'suspended', saved, 'suspend']);
  });

  it('reports a v0 file that is not v0-shaped as corrupt', async () => {
    const store = await openStore();
    await writeFile(layout.stateFile, JSON.stringify({ projects: [{ name: 'a' }, { name: 'a' }] }));
    const err = (await store.read().catch((e: unknown) => e)) as StoreCorruptError;
    expect(err.reason).toBe('wrong shape: projects[1].name: "a" appears twice');
    await writeFile(layout.stateFile, JSON.stringify({ foo: 1 }));
    const err2 = (await store.read().catch((e: unknown) => e)) as StoreCorruptError;
    expect(err2.reason).toBe('wrong shape: unknown key "foo" in a version 0 file');
  });
});

describe('invariant helpers', () => {
  function sample(): State {
    const s = emptyState();
    s.projects.web = project('web');
    s.vms['vm-1'] = vm('vm-1', { name: 'web-vm' });
    s.apps[appKey('web', 'api')] = { project: 'web', name: 'api', kind: 'process', createdAt: T0, state: 'running' };
    return s;
  }

  it('assertNameFree throws EEXIST naming the kind and the name', () => {
    const s = sample();
    expect(() => assertNameFree(s, 'project', 'db')).not.toThrow();
    const err = (() => {
      try {
        assertNameFree(s, 'project', 'web');
      } catch (e) {
        return e;
      }
    })() as NameTakenError;
    expect(err).toBeInstanceOf(NameTakenError);
    expect(err.code).toBe('EEXIST');
    expect(err.message).toBe('project web already exists');
    expect(err.hint).toBe('Choose another name, or see `goshipctl project list`.');
    expect(() => assertNameFree(s, 'vm', 'vm-1')).toThrow('vm vm-1 already exists');
    expect(() => assertNameFree(s, 'vm', 'web-vm')).toThrow('vm web-vm already exists');
    expect(() => assertNameFree(s, 'app', appKey('web', 'api'))).toThrow('app web/api already exists');
    expect(() => assertNameFree(s, 'app', appKey('db', 'api'))).not.toThrow();
    expect(() => assertNameFree(s, 'project', 'toString')).not.toThrow();
  });

  it('requireRecord returns the record or throws ENOTFOUND; findRecord returns undefined', () => {
    const s = sample();
    expect(requireRecord(s, 'project', 'web')).toBe(s.projects.web);
    expect(findRecord(s, 'vm', 'vm-1')).toBe(s.vms['vm-1']);
    expect(findRecord(s, 'vm', 'nope')).toBeUndefined();
    expect(() => requireRecord(s, 'image', 'nope')).toThrow(NotFoundError);
    expect(() => requireRecord(s, 'image', 'nope')).toThrow('image nope does not exist');
  });

  it('ensureLocalNode adds the local node once', () => {
    const s = emptyState();
    expect(ensureLocalNode(s, T0)).toEqual({ name: 'local', createdAt: T0 });
    expect(ensureLocalNode(s, '2030-01-01T00:00:00.000Z')).toEqual({ name: 'local', createdAt: T0 });
  });
});
