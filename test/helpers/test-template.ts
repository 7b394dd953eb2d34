/**
 * A warmed template for end-to-end tests that need a running guest but do not
 * test the boot: `project create` then restores the guest in seconds instead
 * of booting it (a minute and more under TCG). The template is warmed once by
 * GoShip's own `image warm` in a scratch environment, kept in the test cache
 * (`templates/` beside the images), and put into each test's GOSHIP_HOME the
 * way a template lives there: its small disk layer copied and rebased onto
 * that home's image, its state and memory linked (nothing writes them), its record's image
 * paths rewritten (a clone's argv must match the template's, paths included).
 *
 * The cache key covers what the product itself checks before a restore: the
 * image build, QEMU's version, the template format and the VM's size. What
 * only a restore can tell (another argv, a state QEMU refuses) shows as
 * `from: "boot"` in the create's output: the test still runs, booted, and the
 * entry goes, to be warmed again by the next run.
 */
import { createHash } from 'node:crypto';
import { copyFile, link, mkdir, readdir, readFile, rename, rm, writeFile, chmod } from 'node:fs/promises';
import { join } from 'node:path';
import { execa } from 'execa';
import { readQemuVersion } from '../../src/qemu/index.ts';
import { rebaseShape } from '../../src/runtime/move.ts';
import { TEMPLATE_FORMAT, TEMPLATES_DIR, templateName, type TemplateRecord } from '../../src/runtime/templates.ts';
import { parseSize } from '../../src/qemu/sizes.ts';
import { FILES } from '../../src/layout.ts';
import { goshipctl } from './cli.ts';
import { ensureTestImage, type TestImageOptions } from './debian-image.ts';
import { projectEnv, type ProjectEnv } from './project-env.ts';
import { openToQemu, testCacheBase } from '../support/cache.ts';

export interface TestTemplateShape {
  /** A cached test image (default: `default`). */
  image?: TestImageOptions;
  cpus: number;
  /** As `--memory` takes it, e.g. `1G`. */
  memory: string;
}

/** The default disk of `project create` (what its templates are warmed with). */
const DEFAULT_DISK_BYTES = 10 * 1024 ** 3;
const ORIGIN = 'origin.json';

const pending = new Map<string, Promise<string>>();
/** The cache entry each environment's template came from. */
const installed = new WeakMap<ProjectEnv, string>();

/** The cached template of this shape (warmed on first use): its directory in the test cache. */
function cachedTemplate(shape: TestTemplateShape, log: (line: string) => void): Promise<string> {
  const imageName = shape.image?.name ?? 'default';
  const size = parseSize(shape.memory);
  if (!size.ok) throw new Error(`test template: memory ${shape.memory}: ${size.message}`);
  const memoryBytes = size.bytes;
  const name = templateName({ image: imageName, cpus: shape.cpus, memoryBytes, diskBytes: DEFAULT_DISK_BYTES });
  let p = pending.get(name);
  if (p) return p;
  p = (async () => {
    const image = await ensureTestImage(shape.image ?? {});
    const key = createHash('sha256')
      .update(JSON.stringify({ image: image.manifest.key ?? image.sha256, qemu: (await readQemuVersion()).version, format: TEMPLATE_FORMAT, name }))
      .digest('hex')
      .slice(0, 16);
    const parent = join(testCacheBase(), 'templates');
    const entry = join(parent, `${name}-${key}`);
    if (await readFile(join(entry, ORIGIN)).then(() => true, () => false)) return entry;
    log(`template ${name}: warming it into the test cache (once per image build and QEMU)`);
    await mkdir(parent, { recursive: true });
    const scratch = await projectEnv('gswarm', { ...(shape.image ? { extraImages: [shape.image] } : {}) });
    try {
      const r = await goshipctl(['image', 'warm', imageName, '--cpus', String(shape.cpus), '--memory', shape.memory, '--json'], scratch.env, { timeoutMs: 900_000 });
      if (r.code !== 0) throw new Error(`image warm ${imageName} failed (${r.code}): ${r.stderr}`);
      const made = JSON.parse(r.stdout) as { dir: string };
      await writeFile(join(made.dir, ORIGIN), `${JSON.stringify({ imageDir: scratch.layout.imageDir(imageName) })}\n`);
      await rename(made.dir, entry).catch(async (err: NodeJS.ErrnoException) => {
        // Another run published the same entry first: theirs serves.
        if (err.code !== 'EEXIST' && err.code !== 'ENOTEMPTY') throw err;
      });
      await openToQemu(entry);
      for (const f of ['state', 'memory']) await chmod(join(entry, f), 0o600);
      // Older entries of this template (another image build, QEMU or code) go.
      for (const e of await readdir(parent)) if (e.startsWith(`${name}-`) && e !== `${name}-${key}`) await rm(join(parent, e), { recursive: true, force: true });
      return entry;
    } finally {
      await scratch.cleanupAll();
    }
  })().catch((err: unknown) => {
    pending.delete(name);
    throw err;
  });
  pending.set(name, p);
  return p;
}

/**
 * Puts the cached template of `shape` into `env`'s GOSHIP_HOME, so that a
 * `project create` of that image and size there restores it.
 */
export async function installTestTemplate(env: ProjectEnv, shape: TestTemplateShape, log: (line: string) => void = () => {}): Promise<void> {
  const entry = await cachedTemplate(shape, log);
  installed.set(env, entry);
  const imageName = shape.image?.name ?? 'default';
  const record = JSON.parse(await readFile(join(entry, 'template.json'), 'utf8')) as TemplateRecord;
  const origin = JSON.parse(await readFile(join(entry, ORIGIN), 'utf8')) as { imageDir: string };
  const imageDir = env.layout.imageDir(imageName);
  const parent = join(env.layout.imagesDir, TEMPLATES_DIR);
  const dir = join(parent, `${record.name}.${Date.now().toString(36)}`);
  await mkdir(dir, { recursive: true, mode: 0o711 });
  await chmod(parent, 0o711);
  // The disk layer is small (the guest's writes until the save): a copy of it, standing on this home's image.
  await copyFile(join(entry, 'disk.qcow2'), join(dir, 'disk.qcow2'));
  await execa('qemu-img', ['rebase', '-u', '-f', 'qcow2', '-b', join(imageDir, FILES.imageBase), '-F', 'qcow2', join(dir, 'disk.qcow2')]);
  await chmod(join(dir, 'disk.qcow2'), 0o644);
  for (const f of ['state', 'memory']) await link(join(entry, f), join(dir, f));
  const rebased: TemplateRecord = { ...record, argvShape: rebaseShape(record.argvShape, origin.imageDir, imageDir) };
  await writeFile(join(dir, 'template.json'), `${JSON.stringify(rebased, null, 2)}\n`, { mode: 0o644 });
}

/**
 * `project create NAME ARGS… --json` for a test that wants a running guest:
 * restored from the installed template when it serves (the output says so on
 * stderr when it did not, and why: the test goes on with the booted guest).
 */
export async function createFromTemplate(env: ProjectEnv, args: string[], timeoutMs = 900_000): Promise<void> {
  const r = await goshipctl(['project', 'create', ...args, '--json'], env.env, { timeoutMs });
  if (r.code !== 0) throw new Error(`goshipctl project create ${args.join(' ')} failed (${r.code}): ${r.stderr}`);
  const made = JSON.parse(r.stdout) as { from?: string; reason?: string };
  if (made.from === 'template') return;
  process.stderr.write(`note: project ${args[0]} was booted, not restored from the test template: ${made.reason ?? 'no reason given'}\n`);
  // A template that was there and did not serve: the next run warms it again.
  const entry = installed.get(env);
  if (entry && made.reason?.startsWith('template ')) await rm(entry, { recursive: true, force: true });
}
