import { chmod, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GoshipError, ValidationError } from '../../src/errors.ts';
import { buildSeed, SeedError, seedEntries, writeSeedIso } from '../../src/cloudinit/index.ts';
import type { SeedEntry, SeedOptions } from '../../src/cloudinit/index.ts';

const ED25519 = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPPx9gJJ/+Mw2jThY4jRCenm2eWThJNxBivYvkc2XGMU lead@goship';

const OPTS: SeedOptions = {
  instanceId: 'iid-seed-test-0001',
  hostname: 'seed-test',
  sshKeys: [ED25519],
  user: { name: 'goship' },
  writeFiles: [{ path: '/etc/motd', content: 'hello from the seed\n' }],
  runcmd: [['touch', '/var/lib/goship-seeded']],
  agent: {
    bundle: new TextEncoder().encode('console.log("agent");\n'),
    unit: '[Unit]\nDescription=agent\n\n[Service]\nExecStart=/bin/sh /usr/local/lib/goship/agent-start\n',
    start: '#!/bin/sh\nexec /usr/bin/node /usr/local/lib/goship/goship-agent.mjs\n',
    setup: '#!/bin/sh\n',
  },
  network: {},
};

let work: string;

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'goship-seed-test-'));
});

afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

/** Runs a reader and returns its stdout and stderr together (xorriso reports on both). */
async function read(file: string, args: string[]): Promise<string> {
  const result = await execa(file, args, { all: true, env: { LC_ALL: 'C' } });
  return result.all ?? '';
}

async function hasProgram(name: string): Promise<boolean> {
  const result = await execa('sh', ['-c', 'command -v "$1"', 'sh', name], { reject: false });
  return result.exitCode === 0;
}

async function caught(promise: Promise<unknown>): Promise<unknown> {
  try {
    await promise;
  } catch (error) {
    return error;
  }
  throw new Error('expected a rejection');
}

describe('writeSeedIso with the real xorriso', () => {
  let iso: string;
  let entries: SeedEntry[];

  beforeAll(async () => {
    iso = join(work, 'seed.iso');
    entries = await buildSeed(OPTS, iso);
  });

  it('writes the ISO and leaves no temporary file', async () => {
    expect(entries).toEqual(seedEntries(OPTS));
    expect((await stat(iso)).size).toBeGreaterThan(0);
    expect(await readdir(work)).toEqual(['seed.iso']);
  });

  it('labels the volume cidata (xorriso -pvd_info)', async () => {
    const info = await read('xorriso', ['-indev', iso, '-pvd_info']);
    expect(info).toMatch(/^Volume Id\s*: cidata$/m);
  });

  it('holds exactly the rendered files, long names intact (xorriso -osirrox extract)', async () => {
    const out = join(work, 'extracted');
    await read('xorriso', ['-osirrox', 'on', '-indev', iso, '-extract', '/', out]);
    expect((await readdir(out)).sort()).toEqual(['meta-data', 'network-config', 'user-data']);
    for (const entry of entries) {
      expect(new Uint8Array(await readFile(join(out, entry.path))), entry.path).toEqual(entry.bytes);
    }
    await rm(out, { recursive: true, force: true });
  });

  it('has a Joliet tree with the long names, next to the 8.3 names of plain ISO 9660 (xorriso -read_fs)', async () => {
    const list = async (readFs: string): Promise<string[]> => {
      const result = await execa('xorriso', ['-read_fs', readFs, '-indev', iso, '-ls', '/'], { env: { LC_ALL: 'C' } });
      return result.stdout.split('\n').filter(Boolean).sort();
    };
    // norock: the Joliet tree when there is one, plain ISO 9660 otherwise.
    expect(await list('norock')).toEqual(["'meta-data'", "'network-config'", "'user-data'"]);
    expect(await list('ecma119')).toEqual(["'META_DAT'", "'NETWORK_'", "'USER_DAT'"]);
  });

  it('has Joliet and Rock Ridge trees with the long names (isoinfo from genisoimage, a second reader)', async () => {
    expect(await hasProgram('isoinfo')).toBe(true);
    const description = await read('isoinfo', ['-d', '-i', iso]);
    expect(description).toMatch(/^Volume id: cidata$/m);
    expect(description).toMatch(/^Joliet with UCS level \d found$/m);
    expect(description).toMatch(/^Rock Ridge signatures version \d found$/m);
    const names = ['/meta-data', '/network-config', '/user-data'];
    expect((await read('isoinfo', ['-J', '-f', '-i', iso])).split('\n').filter(Boolean).sort()).toEqual(names);
    expect((await read('isoinfo', ['-R', '-f', '-i', iso])).split('\n').filter(Boolean).sort()).toEqual(names);
  });

  it('replaces an existing ISO with the new content', async () => {
    const next = await buildSeed({ ...OPTS, instanceId: 'iid-seed-test-0002', network: undefined }, iso);
    const out = join(work, 'extracted-2');
    await read('xorriso', ['-osirrox', 'on', '-indev', iso, '-extract', '/', out]);
    expect((await readdir(out)).sort()).toEqual(['meta-data', 'user-data']);
    expect(await readFile(join(out, 'meta-data'), 'utf8')).toBe(new TextDecoder().decode(next[0]!.bytes));
    expect(await readFile(join(out, 'meta-data'), 'utf8')).toContain('instance-id: iid-seed-test-0002\n');
    await rm(out, { recursive: true, force: true });
    expect((await readdir(work)).sort()).toEqual(['seed.iso']);
  });
});

describe('writeSeedIso around xorriso', () => {
  it('runs xorriso with an argv array from an owner-only directory of owner-only files', async () => {
    const dir = await mkdtemp(join(work, 'fake-'));
    const log = join(dir, 'log');
    const fake = join(dir, 'xorriso');
    // Records its working directory, the modes of what is in it and its argv, then "writes" the ISO.
    await writeFile(
      fake,
      `#!/bin/sh\nstat -c '%a %n' . * > '${log}'\nprintf '%s\\n' "$@" >> '${log}'\nprintf 'ISO' > "$4"\n`,
    );
    await chmod(fake, 0o755);
    const iso = join(dir, 'seed.iso');
    await writeSeedIso(seedEntries(OPTS), iso, { xorriso: fake });
    expect(await readFile(iso, 'utf8')).toBe('ISO');
    expect((await readFile(log, 'utf8')).split('\n')).toEqual([
      '700 .',
      '600 meta-data',
      '600 network-config',
      '600 user-data',
      '-as',
      'mkisofs',
      '-output',
      `${iso}.tmp`,
      '-volid',
      'cidata',
      '-joliet',
      '-rock',
      'meta-data',
      'user-data',
      'network-config',
      '',
    ]);
  });

  // A crash of xorriso cannot be provoked on demand (1 in hundreds of runs, while it shuts its library down): fakes stand in for it.
  it('runs a xorriso that crashed once more (its own UNIX-SIGNAL report, or a real signal); one that crashes again is the error', async () => {
    const dir = await mkdtemp(join(work, 'crash-'));
    const runs = join(dir, 'runs');
    /** A fake xorriso whose first `crashes` runs fail as `how` says, then writes the ISO. */
    const fake = async (name: string, crashes: number, how: string) => {
      const path = join(dir, name);
      await writeFile(
        path,
        `#!/bin/sh
echo run >> '${runs}-${name}'
if [ "$(wc -l < '${runs}-${name}')" -le ${crashes} ]; then ${how}; fi
printf 'ISO' > "$4"
`,
      );
      await chmod(path, 0o755);
      return path;
    };
    const reported = "printf 'Writing completed successfully.\\nUNIX-SIGNAL:  SIGSEGV  errno= 0\\nxorriso : ABORT : Program done.\\n' >&2; exit 1";
    const runsOf = async (name: string) => (await readFile(`${runs}-${name}`, 'utf8')).split('\n').filter(Boolean).length;

    await writeSeedIso(seedEntries(OPTS), join(dir, 'a.iso'), { xorriso: await fake('once', 1, reported) });
    expect([await readFile(join(dir, 'a.iso'), 'utf8'), await runsOf('once')]).toEqual(['ISO', 2]);
    await writeSeedIso(seedEntries(OPTS), join(dir, 'b.iso'), { xorriso: await fake('killed', 1, 'kill -SEGV $$') });
    expect([await readFile(join(dir, 'b.iso'), 'utf8'), await runsOf('killed')]).toEqual(['ISO', 2]);

    const error = (await caught(writeSeedIso(seedEntries(OPTS), join(dir, 'c.iso'), { xorriso: await fake('twice', 2, reported) }))) as SeedError;
    expect([error.code, error.exitCode, await runsOf('twice')]).toEqual(['ESEED', 1, 2]);
    expect(error.message).toContain('UNIX-SIGNAL:  SIGSEGV');
    // A refusal is not a crash: run once.
    const refused = (await caught(writeSeedIso(seedEntries(OPTS), join(dir, 'd.iso'), { xorriso: await fake('refuses', 9, "echo 'xorriso : FAILURE : no' >&2; exit 5") }))) as SeedError;
    expect([refused.exitCode, await runsOf('refuses')]).toEqual([5, 1]);
    expect(await readdir(dir)).not.toContain('c.iso');
  });

  it('says how to install xorriso when it is missing', async () => {
    const iso = join(work, 'missing.iso');
    const error = await caught(writeSeedIso(seedEntries(OPTS), iso, { xorriso: '/nonexistent/xorriso' }));
    expect(error).toBeInstanceOf(SeedError);
    expect(error).toBeInstanceOf(GoshipError);
    const seedError = error as SeedError;
    expect(seedError.code).toBe('ESEED');
    expect(seedError.message).toBe(
      `writing the cloud-init seed ISO ${iso} failed: /nonexistent/xorriso was not found`,
    );
    expect(seedError.hint).toBe('install xorriso: apt-get install xorriso (or run `npm run bootstrap` as root)');
    expect(seedError.argv[0]).toBe('/nonexistent/xorriso');
    expect(await readdir(work)).not.toContain('missing.iso');
    expect(await readdir(work)).not.toContain('missing.iso.tmp');
  });

  it('quotes xorriso’s complaint when it fails', async () => {
    const iso = join(work, 'no-such-dir', 'seed.iso');
    const error = (await caught(writeSeedIso(seedEntries(OPTS), iso))) as SeedError;
    expect(error).toBeInstanceOf(SeedError);
    expect(error.code).toBe('ESEED');
    expect(error.exitCode).toBe(5);
    expect(error.message.startsWith(`writing the cloud-init seed ISO ${iso} failed: xorriso exited with code 5:\n`)).toBe(
      true,
    );
    expect(error.message).toContain(`xorriso : FAILURE : Cannot acquire drive 'stdio:${iso}.tmp'`);
    expect(error.stderr).toContain('FAILURE');
    expect(error.argv).toEqual([
      'xorriso',
      '-as',
      'mkisofs',
      '-output',
      `${iso}.tmp`,
      '-volid',
      'cidata',
      '-joliet',
      '-rock',
      'meta-data',
      'user-data',
      'network-config',
    ]);
  });

  it('refuses entries that are not plain names at the root, before running anything', async () => {
    const error = (await caught(
      writeSeedIso(
        [
          { path: '../user-data', bytes: new Uint8Array() },
          { path: '-o', bytes: new Uint8Array() },
          { path: 'meta-data', bytes: new Uint8Array() },
          { path: 'meta-data', bytes: new Uint8Array() },
        ],
        join(work, 'bad.iso'),
      ),
    )) as ValidationError;
    expect(error).toBeInstanceOf(ValidationError);
    expect(error.issues).toEqual([
      {
        path: 'entries[0].path',
        message: 'expected a file name at the root of the volume (letters, digits, ".", "_", "-"), got "../user-data"',
      },
      {
        path: 'entries[1].path',
        message: 'expected a file name at the root of the volume (letters, digits, ".", "_", "-"), got "-o"',
      },
      { path: 'entries[3].path', message: 'expected each name once, got "meta-data" again' },
    ]);
  });
});
