/**
 * The image builder: the pure parts (key, mmdebstrap argv, validation), the
 * real default image (built once and cached by test/helpers/debian-image.ts)
 * inspected without booting it (debugfs reads the ext4 inside the qcow2),
 * the cache (a second build is a no-op) and a killed build (no half image).
 */
import { execa } from 'execa';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GoshipError } from '../../src/errors.ts';
import { AGENT_UNIT, AGENT_UNIT_NAME } from '../../src/image/agent-unit.ts';
import { AGENT_START_SCRIPT } from '../../src/image/agent-start.ts';
import { buildImage, sweepStaleBuilds } from '../../src/image/build.ts';
import {
  CLOUD_CFG,
  DEFAULT_CMDLINE,
  DEFAULT_PACKAGES,
  DPKG_EXCLUDES,
  MASKED_UNITS,
  MODPROBE_CONF,
  customisationTexts,
  fsSizeFor,
  imageCacheKey,
  mirrorsFor,
  mmdebstrapArgs,
  validateBuildInputs,
} from '../../src/image/recipe.ts';
import type { ImageInfo } from '../../src/image/catalog.ts';
import { imageInfo } from '../../src/image/catalog.ts';
import type { BuildProgress } from '../../src/image/progress.ts';
import { ensureTestImage, testAgentBundle, testImagesDir } from '../helpers/debian-image.ts';

const keyInputs = {
  builderVersion: 1,
  suite: 'bookworm',
  mirrors: mirrorsFor('bookworm'),
  packages: ['b', 'a'],
  agentSha256: 'f'.repeat(64),
  texts: customisationTexts(),
};

describe('pure parts', () => {
  it('the key ignores package order and duplicates, and changes with every input', () => {
    const k = imageCacheKey(keyInputs);
    expect(k).toMatch(/^[0-9a-f]{64}$/);
    expect(imageCacheKey({ ...keyInputs, packages: ['a', 'b', 'a'] })).toBe(k);
    for (const change of [
      { builderVersion: 2 },
      { suite: 'trixie' },
      { mirrors: mirrorsFor('bookworm', 'http://mirror.example/debian') },
      { packages: ['a', 'b', 'c'] },
      { agentSha256: 'e'.repeat(64) },
      { texts: customisationTexts(DEFAULT_CMDLINE, true) },
      { texts: customisationTexts(`${DEFAULT_CMDLINE} quiet`) },
    ]) {
      expect(imageCacheKey({ ...keyInputs, ...change })).not.toBe(k);
    }
  });

  it('mmdebstrap argv: minbase, sorted packages, hooks that take paths from the environment', () => {
    expect(mmdebstrapArgs({ suite: 'bookworm', packages: ['zstd', 'dbus', 'zstd'], mirrors: ['deb http://m/debian bookworm main'], tree: '/t/tree', debCache: false })).toEqual([
      '--variant=minbase',
      '--mode=root',
      '--format=directory',
      '--include=dbus,zstd',
      ...DPKG_EXCLUDES.map((d) => `--dpkgopt=${d}`),
      '--customize-hook="$GOSHIP_STAGE/customize.sh" "$1"',
      'bookworm',
      '/t/tree',
      'deb http://m/debian bookworm main',
    ]);
    const withCache = mmdebstrapArgs({ suite: 'bookworm', packages: ['dbus'], mirrors: [], tree: '/t', debCache: true, bootProbe: true });
    expect(withCache).toContain('--skip=download/empty');
    expect(withCache).toContain('--customize-hook="$GOSHIP_STAGE/probe-hook.sh" "$1"');
    expect(withCache.filter((a) => a.includes('$GOSHIP_DEB_CACHE'))).toHaveLength(2);
  });

  it('mirrors: main, updates and security for the default mirror', () => {
    expect(mirrorsFor('bookworm')).toEqual([
      'deb http://deb.debian.org/debian bookworm main',
      'deb http://deb.debian.org/debian bookworm-updates main',
      'deb http://deb.debian.org/debian-security bookworm-security main',
    ]);
  });

  it('validation reports every bad input', () => {
    expect(validateBuildInputs({ suite: 'bookworm', packages: DEFAULT_PACKAGES, mirror: 'http://deb.debian.org/debian' })).toEqual([]);
    expect(validateBuildInputs({ suite: 'Book worm', packages: ['ok', 'a,b', '--x'], mirror: 'ftp://x' })).toEqual([
      { path: 'suite', message: 'expected a Debian suite name like bookworm, got "Book worm"' },
      { path: 'mirror', message: 'expected an http(s) URL, got "ftp://x"' },
      { path: 'packages[1]', message: 'not a Debian package name: "a,b"' },
      { path: 'packages[2]', message: 'not a Debian package name: "--x"' },
    ]);
  });

  it('the file system has room to grow', () => {
    expect(fsSizeFor(1024 * 1024 * 1024)).toBe(1536 * 1024 * 1024);
  });

  it('refuses bad inputs before running anything', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'goship-imgb-'));
    try {
      await expect(buildImage({ agentBundle: testAgentBundle(), imagesDir: dir, extraPackages: ['bad,name'] })).rejects.toThrow(
        'cannot build image: extraPackages[0]: not a Debian package name: "bad,name"',
      );
      const err = await buildImage({ agentBundle: join(dir, 'nope.mjs'), imagesDir: dir }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(GoshipError);
      expect((err as GoshipError).code).toBe('EAGENT_BUNDLE');
      expect((err as GoshipError).hint).toBe('build it: npm run build (writes dist/goship-agent.mjs)');
      expect(await readdir(dir)).toEqual([]);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe('the default image', () => {
  let image: ImageInfo;
  let raw: string;
  let tmp: string;
  const debugfs = async (request: string): Promise<string> => (await execa('debugfs', ['-R', request, raw])).stdout;

  beforeAll(async () => {
    image = await ensureTestImage({ log: (l) => console.info(l) });
    tmp = await mkdtemp(join(tmpdir(), 'goship-imgb-'));
    raw = join(tmp, 'root.raw');
    await execa('qemu-img', ['convert', '-O', 'raw', image.base, raw]);
  }, 900_000);

  afterAll(async () => {
    if (tmp) await rm(tmp, { recursive: true, force: true });
  });

  it('has a manifest that matches its files', async () => {
    const checked = await imageInfo(testImagesDir(), 'default', { verify: true });
    expect(checked.sha256).toBe(image.sha256);
    expect(image.manifest).toMatchObject({ source: 'built', suite: 'bookworm', agentBaked: true, kernel: 'vmlinuz', initrd: 'initrd.img', cmdline: DEFAULT_CMDLINE });
    // The generic kernel (it has CONFIG_VMGENID), not the cloud one.
    expect(image.manifest.kernelVersion).toMatch(/^\d+\.\d+\.\d+-\d+-amd64$/);
    expect(existsSync(image.kernel!)).toBe(true);
    expect(existsSync(image.initrd!)).toBe(true);
    const info = JSON.parse((await execa('qemu-img', ['info', '--output=json', image.base])).stdout) as { format: string; 'virtual-size': number };
    expect(info.format).toBe('qcow2');
    expect(info['virtual-size']).toBe(image.manifest.base.virtualSizeBytes);
  });

  it('is an ext4 file system labelled goship-root', async () => {
    const { stdout } = await execa('dumpe2fs', ['-h', raw]);
    expect(stdout).toMatch(/Filesystem volume name:\s+goship-root/);
  });

  it('bakes the agent and its unit, enabled early', async () => {
    expect(await debugfs('cat /etc/systemd/system/goship-agent.service')).toBe(AGENT_UNIT.trimEnd());
    expect(await debugfs('stat /usr/local/lib/goship/goship-agent.mjs')).toMatch(/Mode:\s+0755/);
    expect(await debugfs('cat /usr/local/lib/goship/agent-start')).toBe(AGENT_START_SCRIPT.trimEnd());
    expect(await debugfs('stat /usr/local/lib/goship/agent-start')).toMatch(/Mode:\s+0755/);
    expect(await debugfs(`ls -l /etc/systemd/system/sysinit.target.wants`)).toContain(AGENT_UNIT_NAME);
  });

  it('keeps udev from loading modules for CPU features a VM has no use for', async () => {
    expect(await debugfs('cat /etc/modprobe.d/goship.conf')).toBe(MODPROBE_CONF.trimEnd());
  });

  it('restricts cloud-init to NoCloud and leaves per-VM identity to first boot', async () => {
    expect(await debugfs('cat /etc/cloud/cloud.cfg.d/90-goship.cfg')).toBe(CLOUD_CFG.trimEnd());
    expect(await debugfs('stat /etc/machine-id')).toMatch(/Size: 0\b/);
    expect(await debugfs('ls /etc/ssh')).not.toMatch(/ssh_host_\w+_key/);
    expect(await debugfs('cat /etc/fstab')).toBe('LABEL=goship-root / ext4 rw,errors=remount-ro 0 0');
  });

  it('masks the units that slow boot and socket-activates docker', async () => {
    for (const unit of MASKED_UNITS) {
      const stat = await debugfs(`stat /etc/systemd/system/${unit}`);
      expect(stat, unit).toMatch(/Type: symlink/);
      expect(stat, unit).toContain('Fast link dest: "/dev/null"');
    }
    expect(await debugfs('ls /etc/systemd/system/multi-user.target.wants')).not.toMatch(/docker\.service|containerd\.service/);
    expect(await debugfs('ls /etc/systemd/system/sockets.target.wants')).toContain('docker.socket');
  });

  it('a second build with the same inputs is a no-op', async () => {
    const before = await stat(image.base);
    const phases: BuildProgress[] = [];
    const again = await buildImage({
      agentBundle: testAgentBundle(),
      imagesDir: testImagesDir(),
      bootProbe: true,
      onProgress: (p) => phases.push(p),
    });
    const after = await stat(again.base);
    expect(again.manifest.key).toBe(image.manifest.key);
    expect([after.ino, after.mtimeMs]).toEqual([before.ino, before.mtimeMs]);
    expect(phases.map((p) => p.phase)).toEqual(['check', 'cached']);
  });
});

describe('a killed build', () => {
  it('leaves no image, and its directory is swept by the next build', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'goship-imgk-'));
    try {
      // A child process builds and kills itself (SIGKILL, no cleanup) once its work directory is made,
      // as mmdebstrap is about to start (killed at mkfs instead, it took two minutes of bootstrap first).
      const script = join(dir, 'kill.mjs');
      const build = join(process.cwd(), 'src/image/build.ts');
      await writeFile(
        script,
        `const { buildImage } = await import(${JSON.stringify(build)});\n` +
          `await buildImage({ agentBundle: ${JSON.stringify(testAgentBundle())}, imagesDir: ${JSON.stringify(join(dir, 'images'))}, debCacheDir: ${JSON.stringify(join(testImagesDir(), '..', 'debs'))},\n` +
          `  onProgress: (p) => { if (p.phase === 'bootstrap') process.kill(process.pid, 'SIGKILL'); } });\n`,
      );
      const bundle = join(dir, 'kill.bundle.mjs');
      await execa('npx', ['esbuild', script, '--bundle', '--platform=node', '--format=esm', `--outfile=${bundle}`, '--log-level=error', '--banner:js=import { createRequire as __cr } from "node:module"; const require = __cr(import.meta.url);']);
      const child = spawn(process.execPath, [bundle], { stdio: 'ignore' });
      const signal = await new Promise<NodeJS.Signals | null>((resolve) => child.once('exit', (_c, s) => resolve(s)));
      expect(signal).toBe('SIGKILL');
      const left = await readdir(join(dir, 'images'));
      expect(left).not.toContain('default');
      expect(left.filter((e) => e.startsWith('.build-'))).toHaveLength(1);
      await sweepStaleBuilds(join(dir, 'images'));
      expect(await readdir(join(dir, 'images'))).toEqual([]);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  }, 600_000);
});
