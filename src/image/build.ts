/**
 * Builds a base image from Debian packages, carrying out recipe.ts (what goes
 * into the image):
 *
 *   mmdebstrap (minbase + packages, customize hook)  → a root tree
 *   mkfs.ext4 -d TREE -L goship-root                 → a sized raw file
 *   qemu-img convert -c -O qcow2                     → base.qcow2
 *   + vmlinuz, initrd.img (direct kernel boot) and manifest.json
 *
 * The image boots lean under TCG: the guest agent is a systemd unit wanted by
 * sysinit.target (not behind cloud-init), timers and daemons that only cost
 * time at boot are masked or socket-activated, and a small initramfs holds only
 * the virtio modules. See docs/images.md for the measured timeline.
 *
 * Builds are cached: the key hashes every input (builder version, suite,
 * mirrors, package list, the agent bundle, the customisation texts). A build
 * with the key of the existing image returns it at once. A build happens in a
 * private directory inside imagesDir and is renamed into place, so a killed
 * build never leaves a half image.
 *
 * Needs root (mmdebstrap's root mode writes a directory with real ownership,
 * which `mkfs.ext4 -d` copies as is).
 */
import { chmod, copyFile, mkdir, readdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { ValidationError } from '../errors.ts';
import { ImageError } from './errors.ts';
import { FILES } from '../layout.ts';
import { AGENT_UNIT } from './agent-unit.ts';
import { AGENT_START_SCRIPT } from './agent-start.ts';
import { MANIFEST_FORMAT, readManifest, sha256File, writeManifest } from './manifest.ts';
import type { ImageManifest } from './manifest.ts';
import { PHASE_START } from './progress.ts';
import type { BuildPhase, ProgressListener } from './progress.ts';
import { imageInfoFromDir, validateImageName } from './catalog.ts';
import { staleWorkDirs, workDirName } from '../proc.ts';
import type { ImageInfo } from './catalog.ts';
import {
  IMAGE_BUILDER_VERSION,
  ROOT_LABEL,
  DEFAULT_CMDLINE,
  DEFAULT_MIRROR,
  DEFAULT_PACKAGES,
  INITRAMFS_MODULES,
  MODPROBE_CONF,
  CLOUD_CFG,
  PRESET,
  WAIT_ONLINE_DROPIN,
  INITRAMFS_CONF,
  CUSTOMIZE_SCRIPT,
  PROBE_SCRIPT,
  PROBE_UNIT,
  PROBE_HOOK_SCRIPT,
  imageCacheKey,
  customisationTexts,
  mirrorsFor,
  validateBuildInputs,
  mmdebstrapArgs,
  fsSizeFor,
} from './recipe.ts';

export interface BuildImageOptions {
  /** Image name (1–63 of a-z, 0-9, `-`). Default `default`. */
  name?: string;
  /** Debian suite. Default `bookworm`. */
  suite?: string;
  /** Replaces the default package list. */
  packages?: readonly string[];
  /** Added to the package list. */
  extraPackages?: readonly string[];
  /** The bundled guest agent (dist/goship-agent.mjs). */
  agentBundle: string;
  /** Where images live (Layout.imagesDir). */
  imagesDir: string;
  /** Debian mirror. Default deb.debian.org. */
  mirror?: string;
  /**
   * A directory of .deb files shared between builds: filled after a build,
   * used by the next one (saves the downloads). Does not change the image.
   */
  debCacheDir?: string;
  /** Per-phase progress. */
  onProgress?: ProgressListener;
  /** Rebuild even if the image exists with the same key. */
  force?: boolean;
  /** Also bake the boot probe (measurements; see PROBE_UNIT). Part of the key. */
  bootProbe?: boolean;
  /**
   * Bake the guest agent in (default true). false builds an image as a foreign
   * cloud image would arrive: no agent, cloud-init installs it (tests of `image import`).
   */
  bakeAgent?: boolean;
}

/** Builds (or finds cached) the image `name` in imagesDir. */
export async function buildImage(opts: BuildImageOptions): Promise<ImageInfo> {
  const started = Date.now();
  const name = opts.name ?? 'default';
  const suite = opts.suite ?? 'bookworm';
  const mirror = opts.mirror ?? DEFAULT_MIRROR;
  const packages = [...new Set([...(opts.packages ?? DEFAULT_PACKAGES), ...(opts.extraPackages ?? [])])].sort();
  const imagesDir = resolve(opts.imagesDir);
  const report = (phase: BuildPhase, message: string, fraction = PHASE_START[phase]): void => {
    opts.onProgress?.({ phase, message, fraction });
  };

  validateImageName(name);
  const issues = validateBuildInputs({ suite, packages: opts.packages ?? DEFAULT_PACKAGES, extraPackages: opts.extraPackages ?? [], mirror });
  if (issues.length > 0) throw new ValidationError(issues, { subject: 'cannot build image' });

  report('check', 'checking the host and the inputs');
  const agentBundle = resolve(opts.agentBundle);
  let agentSha256: string;
  try {
    agentSha256 = await sha256File(agentBundle);
  } catch (cause) {
    throw new ImageError('EAGENT_BUNDLE', `cannot read the agent bundle ${agentBundle}: ${(cause as Error).message}`, {
      hint: 'build it: npm run build (writes dist/goship-agent.mjs)',
      cause,
    });
  }
  const mirrors = mirrorsFor(suite, mirror);
  const cmdline = DEFAULT_CMDLINE;
  const bakeAgent = opts.bakeAgent !== false;
  const key = imageCacheKey({ builderVersion: IMAGE_BUILDER_VERSION, suite, mirrors, packages, agentSha256: bakeAgent ? agentSha256 : 'not baked', texts: customisationTexts(cmdline, opts.bootProbe === true) });

  const finalDir = join(imagesDir, name);
  if (!opts.force) {
    const existing = await readManifest(finalDir).catch(() => undefined);
    if (existing?.key === key && (await isFile(join(finalDir, FILES.imageBase)))) {
      report('cached', `image ${name} is up to date (key ${key.slice(0, 12)})`, 1);
      return imageInfoFromDir(finalDir, name);
    }
  }

  await checkHost();
  await mkdir(imagesDir, { recursive: true, mode: 0o700 });
  await sweepStaleBuilds(imagesDir);
  const work = join(imagesDir, workDirName('build'));
  await mkdir(work, { mode: 0o700 });
  const stage = join(work, 'stage');
  const tree = join(work, 'tree');
  const out = join(work, 'out');
  try {
    await mkdir(stage);
    await mkdir(out);
    if (bakeAgent) {
      await copyFile(agentBundle, join(stage, 'agent.mjs'));
      await writeFile(join(stage, 'agent-start'), AGENT_START_SCRIPT);
      await writeFile(join(stage, 'agent.service'), AGENT_UNIT);
    }
    await writeFile(join(stage, 'cloud.cfg'), CLOUD_CFG);
    await writeFile(join(stage, 'goship.preset'), PRESET);
    await writeFile(join(stage, 'wait-online.conf'), WAIT_ONLINE_DROPIN);
    await writeFile(join(stage, 'initramfs.conf'), INITRAMFS_CONF);
    await writeFile(join(stage, 'initramfs-modules'), `${INITRAMFS_MODULES.join('\n')}\n`);
    await writeFile(join(stage, 'modprobe.conf'), MODPROBE_CONF);
    await writeFile(join(stage, 'customize.sh'), CUSTOMIZE_SCRIPT);
    await chmod(join(stage, 'customize.sh'), 0o755);
    if (opts.bootProbe) {
      await writeFile(join(stage, 'probe-hook.sh'), PROBE_HOOK_SCRIPT, { mode: 0o755 });
      await writeFile(join(stage, 'boot-probe'), PROBE_SCRIPT, { mode: 0o755 });
      await writeFile(join(stage, 'boot-probe.service'), PROBE_UNIT);
    }
    if (opts.debCacheDir) await mkdir(opts.debCacheDir, { recursive: true });

    // 1. bootstrap + customise (mmdebstrap runs the customize hook)
    report('bootstrap', `mmdebstrap ${suite}: ${packages.length} packages`);
    await runMmdebstrap({ suite, packages, mirrors, tree, stage, debCacheDir: opts.debCacheDir, bootProbe: opts.bootProbe === true, report });

    // 2. kernel and initrd out of the tree
    report('kernel', 'copying the kernel and the initramfs');
    const kernelVersion = await copyKernel(tree, out);

    // 3. ext4 from the tree
    const raw = join(work, 'root.raw');
    const used = await duBytes(tree);
    const sizeBytes = fsSizeFor(used);
    report('mkfs', `mkfs.ext4: ${mib(used)} MiB of files in a ${mib(sizeBytes)} MiB file system`);
    await writeFile(raw, '');
    const { execa } = await import('execa');
    await execa('truncate', ['-s', String(sizeBytes), raw]);
    await run('mkfs.ext4', ['-q', '-F', '-L', ROOT_LABEL, '-m', '1', '-E', 'lazy_itable_init=1,nodiscard', '-d', tree, raw]);
    await rm(tree, { recursive: true, force: true, maxRetries: 2 }).catch(() => undefined);

    // 4. compressed qcow2
    report('convert', 'qemu-img convert -c -O qcow2 (compressed)');
    const base = join(out, FILES.imageBase);
    await run('qemu-img', ['convert', '-c', '-O', 'qcow2', '-o', 'compression_type=zstd', raw, base]);
    await rm(raw, { force: true });

    report('finish', 'checksum and manifest');
    const sha256 = await sha256File(base);
    const st = await stat(base);
    const manifest: ImageManifest = {
      format: MANIFEST_FORMAT,
      name,
      source: 'built',
      builtAt: new Date().toISOString(),
      suite,
      packages,
      kernelVersion,
      key,
      builderVersion: IMAGE_BUILDER_VERSION,
      agentBaked: bakeAgent,
      ...(bakeAgent ? { agentSha256 } : {}),
      ...(opts.bootProbe ? { bootProbe: true } : {}),
      base: { file: FILES.imageBase, format: 'qcow2', sizeBytes: st.size, virtualSizeBytes: sizeBytes, sha256 },
      kernel: FILES.imageKernel,
      initrd: FILES.imageInitrd,
      cmdline,
      buildSeconds: Math.round((Date.now() - started) / 100) / 10,
    };
    await writeManifest(out, manifest);
    await installDir(out, finalDir, work);
    report('finish', `image ${name} built in ${manifest.buildSeconds} s (${mib(st.size)} MiB)`, 1);
    return imageInfoFromDir(finalDir, name);
  } finally {
    await removeBuildDir(work);
  }
}

function mib(n: number): number {
  return Math.round(n / (1024 * 1024));
}

async function isFile(path: string): Promise<boolean> {
  try {
    return (await stat(path)).isFile();
  } catch {
    return false;
  }
}

async function checkHost(): Promise<void> {
  if (typeof process.getuid === 'function' && process.getuid() !== 0) {
    throw new ImageError('EIMAGE_BUILD', 'building an image needs root: mmdebstrap writes a root-owned tree that mkfs.ext4 copies as is', {
      hint: 'run it as root (sudo goshipctl image build), or import a cloud image instead: goshipctl image import',
    });
  }
  const missing: string[] = [];
  const { execa } = await import('execa');
  for (const [cmd, pkg] of [
    ['mmdebstrap', 'mmdebstrap'],
    ['mkfs.ext4', 'e2fsprogs'],
    ['qemu-img', 'qemu-utils'],
  ] as const) {
    const r = await execa('sh', ['-c', 'command -v "$1"', 'sh', cmd], { reject: false, env: { PATH: `${process.env.PATH ?? ''}:/usr/sbin:/sbin` } });
    if (r.exitCode !== 0) missing.push(pkg);
  }
  if (missing.length > 0) {
    throw new ImageError('EIMAGE_BUILD', `cannot build an image: missing host tools (${missing.join(', ')})`, {
      hint: `install them: apt-get install -y ${missing.join(' ')}`,
    });
  }
}

async function run(cmd: string, args: string[]): Promise<void> {
  const { execa } = await import('execa');
  const r = await execa(cmd, args, { reject: false, all: true, env: { PATH: `${process.env.PATH ?? ''}:/usr/sbin:/sbin` } });
  if (r.exitCode !== 0) {
    throw new ImageError('EIMAGE_BUILD', `${cmd} failed (exit ${r.exitCode ?? r.signal}): ${tail(r.all ?? '', 15)}`, {
      hint: `the command was: ${[cmd, ...args].join(' ')}`,
    });
  }
}

function tail(text: string, lines: number): string {
  return text.trim().split('\n').slice(-lines).join('\n');
}

async function runMmdebstrap(o: {
  suite: string;
  packages: string[];
  mirrors: string[];
  tree: string;
  stage: string;
  debCacheDir: string | undefined;
  bootProbe: boolean;
  report: (phase: BuildPhase, message: string, fraction?: number) => void;
}): Promise<void> {
  const args = mmdebstrapArgs({ suite: o.suite, packages: o.packages, mirrors: o.mirrors, tree: o.tree, debCache: o.debCacheDir !== undefined, bootProbe: o.bootProbe });
  const { execa } = await import('execa');
  const child = execa('mmdebstrap', args, {
    reject: false,
    env: {
      GOSHIP_STAGE: o.stage,
      ...(o.debCacheDir ? { GOSHIP_DEB_CACHE: resolve(o.debCacheDir) } : {}),
      PATH: `${process.env.PATH ?? ''}:/usr/sbin:/sbin`,
    },
    stdout: 'pipe',
    stderr: 'pipe',
  });
  const lines: string[] = [];
  const steps: Array<[RegExp, BuildPhase, string, number]> = [
    [/downloading packages/i, 'bootstrap', 'downloading packages', 0.08],
    [/extracting archives/i, 'bootstrap', 'extracting the essential packages', 0.2],
    [/installing essential/i, 'bootstrap', 'installing the essential packages', 0.28],
    [/installing remaining|installing packages/i, 'bootstrap', 'installing the packages', 0.4],
    [/running --customize-hook|customize-hook/i, 'customize', 'customising: agent, cloud-init, lean boot, initramfs', PHASE_START.customize],
    [/cleaning up/i, 'customize', 'cleaning up', 0.77],
  ];
  let seen = -1;
  let buffered = '';
  child.stderr?.on('data', (chunk: Buffer) => {
    buffered += chunk.toString('utf8');
    let nl: number;
    while ((nl = buffered.indexOf('\n')) >= 0) {
      const line = buffered.slice(0, nl);
      buffered = buffered.slice(nl + 1);
      lines.push(line);
      if (lines.length > 400) lines.shift();
      steps.forEach(([re, phase, message, fraction], i) => {
        if (i > seen && re.test(line)) {
          seen = i;
          o.report(phase, message, fraction);
        }
      });
    }
  });
  const r = await child;
  if (r.exitCode !== 0) {
    throw new ImageError('EIMAGE_BUILD', `mmdebstrap failed (exit ${r.exitCode ?? r.signal}): ${lines.slice(-20).join('\n')}`, {
      hint: 'check that the Debian archive is reachable and every package name exists in the suite',
    });
  }
}

/** Copies /boot/vmlinuz-* and /boot/initrd.img-* (exactly one kernel) to out; returns the version. */
async function copyKernel(tree: string, out: string): Promise<string> {
  const boot = join(tree, 'boot');
  const kernels = (await readdir(boot)).filter((f) => f.startsWith('vmlinuz-')).sort();
  const kernel = kernels.at(-1);
  if (!kernel) {
    throw new ImageError('EIMAGE_BUILD', 'the image has no kernel in /boot', { hint: 'include a kernel package, e.g. linux-image-amd64' });
  }
  const version = kernel.slice('vmlinuz-'.length);
  const initrd = join(boot, `initrd.img-${version}`);
  if (!(await isFile(initrd))) {
    throw new ImageError('EIMAGE_BUILD', `the image has no initramfs for kernel ${version}`, { hint: 'include initramfs-tools' });
  }
  await copyFile(join(boot, kernel), join(out, FILES.imageKernel));
  await copyFile(initrd, join(out, FILES.imageInitrd));
  await chmod(join(out, FILES.imageKernel), 0o644);
  await chmod(join(out, FILES.imageInitrd), 0o644);
  return version;
}

/** Disk usage of a tree in bytes (`du -s -B1 -x`: blocks, not apparent size). */
async function duBytes(dir: string): Promise<number> {
  const { execa } = await import('execa');
  const r = await execa('du', ['-s', '-x', '-B1', dir]);
  const n = Number.parseInt(r.stdout.split(/\s/)[0] ?? '', 10);
  if (!Number.isFinite(n)) throw new ImageError('EIMAGE_BUILD', `cannot measure ${dir}: du said ${JSON.stringify(r.stdout)}`);
  return n;
}

/**
 * Puts `out` at `finalDir` with renames only: an existing image is first moved
 * aside into the build directory (and removed with it).
 */
async function installDir(out: string, finalDir: string, work: string): Promise<void> {
  try {
    await rename(out, finalDir);
    return;
  } catch (cause) {
    const code = (cause as NodeJS.ErrnoException).code;
    if (code !== 'ENOTEMPTY' && code !== 'EEXIST') throw cause;
  }
  await rename(finalDir, join(work, 'previous'));
  await rename(out, finalDir);
}

/** Mount points at or below dir (a killed mmdebstrap may leave /proc, /sys, /dev mounted in its tree). */
async function mountsBelow(dir: string): Promise<string[]> {
  const text = await readFile('/proc/self/mountinfo', 'utf8').catch(() => '');
  const prefix = `${dir}/`;
  return text
    .split('\n')
    .map((l) => l.split(' ')[4] ?? '')
    .map((p) => p.replace(/\\(\d{3})/g, (_m, o: string) => String.fromCharCode(Number.parseInt(o, 8))))
    .filter((p) => p === dir || p.startsWith(prefix));
}

/** Removes a build directory, never crossing into a mount (it could be the host's /dev). */
async function removeBuildDir(dir: string): Promise<void> {
  const mounts = await mountsBelow(dir);
  if (mounts.length > 0) {
    // deepest first; lazy, so a busy mount does not block
    const { execa } = await import('execa');
    for (const m of mounts.sort((a, b) => b.length - a.length)) await execa('umount', ['-l', m], { reject: false });
    if ((await mountsBelow(dir)).length > 0) return; // leave it: never delete through a mount
  }
  await rm(dir, { recursive: true, force: true, maxRetries: 2 });
}

/** Removes `.build-PID-*` directories whose process is gone (a killed build). */
export async function sweepStaleBuilds(imagesDir: string): Promise<void> {
  for (const dir of await staleWorkDirs(imagesDir, 'build')) await removeBuildDir(dir);
}
