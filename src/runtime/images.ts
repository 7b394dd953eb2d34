/**
 * Where a project's VM gets its base image from: `images/NAME/` under
 * GOSHIP_HOME, described by its manifest.
 */
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { GoshipError } from '../errors.ts';
import { FILES, type Layout } from '../layout.ts';
import type { AgentInstall } from '../cloudinit/index.ts';

export interface ResolvedImage {
  name: string;
  /** The base disk (opened read-only as the overlay's backing file). */
  base: string;
  /** Direct kernel boot, when the image has a kernel; firmware boot otherwise. */
  boot: { kernel?: string; initrd?: string; cmdline?: string };
  /** For images without the agent baked in: what cloud-init must install. */
  agentInstall?: () => Promise<AgentInstall>;
}

export interface ImageSource {
  resolve(name: string): Promise<ResolvedImage>;
}

/** The agent bundle shipped beside the CLI bundle (dist/goship-agent.mjs). */
export function agentBundlePath(): string {
  const here = dirname(fileURLToPath(import.meta.url));
  const candidates = [join(here, 'goship-agent.mjs'), join(here, '..', '..', 'dist', 'goship-agent.mjs'), join(here, '..', 'dist', 'goship-agent.mjs')];
  const found = candidates.find((c) => existsSync(c));
  if (!found) throw new GoshipError('EAGENT_BUNDLE', 'the guest agent bundle (dist/goship-agent.mjs) is missing', { hint: 'build it: npm run build' });
  return found;
}

interface ManifestLike {
  name?: string;
  cmdline?: string;
  kernelCmdline?: string;
  agentBaked?: boolean;
  kernel?: string | null;
  initrd?: string | null;
}

export class LayoutImages implements ImageSource {
  constructor(
    private readonly layout: Layout,
    private readonly agentUnit: () => Promise<string>,
  ) {}

  async resolve(name: string): Promise<ResolvedImage> {
    const dir = this.layout.imageDir(name);
    let manifest: ManifestLike;
    try {
      manifest = JSON.parse(await readFile(join(dir, FILES.imageManifest), 'utf8')) as ManifestLike;
    } catch (cause) {
      const missing = (cause as NodeJS.ErrnoException).code === 'ENOENT';
      throw new GoshipError(
        missing ? 'ENOTFOUND' : 'EIMAGE_MANIFEST',
        missing ? `image ${name} does not exist` : `image ${name} has an unreadable manifest: ${(cause as Error).message}`,
        { hint: missing ? (name === 'default' ? 'build it: goshipctl image build' : 'goshipctl image list shows the images') : `rebuild it: goshipctl image build ${name}`, cause },
      );
    }
    const kernel = join(dir, FILES.imageKernel);
    const initrd = join(dir, FILES.imageInitrd);
    const hasKernel = manifest.kernel !== null && existsSync(kernel);
    const cmdline = manifest.cmdline ?? manifest.kernelCmdline;
    return {
      name,
      base: join(dir, FILES.imageBase),
      boot: hasKernel ? { kernel, ...(existsSync(initrd) ? { initrd } : {}), ...(cmdline ? { cmdline } : {}) } : {},
      ...(manifest.agentBaked
        ? {}
        : {
            agentInstall: async () => ({ bundle: await readFile(agentBundlePath()), unit: await this.agentUnit() }),
          }),
    };
  }
}
