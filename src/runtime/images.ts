/**
 * Base images for the runtime: the catalogue under GOSHIP_HOME/images, the
 * builder, and what a project's VM needs from an image (its base disk, its
 * boot files, and the agent install when the agent is not baked in).
 */
import { existsSync } from 'node:fs';
import { readFile, rm } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { RuntimeError } from './errors.ts';
import type { Layout } from '../layout.ts';
import type { AgentInstall } from '../cloudinit/index.ts';
import {
  AGENT_START_SCRIPT,
  AGENT_UNIT,
  NODE_SETUP_SCRIPT,
  buildImage,
  imageInfo,
  importImage,
  receiveImage,
  listImages,
  detachImage,
  type BuildImageOptions,
  type ImageEntry,
  type ImageInfo,
  type ImportOptions,
} from '../image/index.ts';
import type { Store } from '../store/index.ts';
import { removeTemplatesOf } from './templates.ts';

export interface ResolvedImage {
  name: string;
  /** The base disk (opened read-only as the overlay's backing file). */
  base: string;
  /** What this build of the image is (its cache key, or its disk's sha256): a template made on another build is not used. */
  key?: string;
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
  if (!found) throw new RuntimeError('EAGENT_BUNDLE', 'the guest agent bundle (dist/goship-agent.mjs) is missing', { hint: 'build it: npm run build' });
  return found;
}

export class ImageService implements ImageSource {
  constructor(
    private readonly layout: Layout,
    private readonly store: Store,
    private readonly now: () => string,
  ) {}

  /** Records an image in the store (the manifest on disk stays the source of truth for its files). */
  private async record(info: ImageInfo, kind: 'built' | 'imported'): Promise<void> {
    const m = info.manifest;
    await this.store.update((draft) => {
      draft.images[info.name] = {
        name: info.name,
        createdAt: draft.images[info.name]?.createdAt ?? this.now(),
        kind,
        dir: info.dir,
        sha256: info.sha256,
        sizeBytes: info.sizeBytes,
        ...(m.packages ? { packages: m.packages } : {}),
        ...(info.kernel ? { kernel: info.kernel } : {}),
        ...(info.initrd ? { initrd: info.initrd } : {}),
      };
    });
  }

  async build(opts: Omit<BuildImageOptions, 'imagesDir' | 'agentBundle'>): Promise<ImageInfo> {
    const info = await buildImage({ ...opts, imagesDir: this.layout.imagesDir, agentBundle: agentBundlePath(), debCacheDir: join(this.layout.home, 'cache', 'debs') });
    await this.record(info, 'built');
    return info;
  }

  async import(name: string, file: string, opts: ImportOptions = {}): Promise<ImageInfo> {
    const info = await importImage(this.layout.imagesDir, name, file, opts);
    await this.record(info, 'imported');
    return info;
  }

  /** `image receive`: an image pushed from another host, as a tar stream of its directory (see receiveImage). */
  async receive(name: string, stream: NodeJS.ReadableStream): Promise<ImageInfo & { received: boolean }> {
    const info = await receiveImage(this.layout.imagesDir, name, stream);
    if (info.received) await this.record(info, 'imported');
    return info;
  }

  list(): Promise<ImageEntry[]> {
    return listImages(this.layout.imagesDir);
  }

  info(name: string, opts: { verify?: boolean } = {}): Promise<ImageInfo> {
    return imageInfo(this.layout.imagesDir, name, opts);
  }

  /**
   * Removes an image, unless a VM's overlay still stands on it. The check and
   * the rename that takes the image away happen under the store lock, where a
   * VM's create also checks its base: one of the two always sees the other.
   */
  async remove(name: string): Promise<void> {
    const trash = await this.store.update(async (draft) => {
      const users = Object.values(draft.vms).filter((v) => v.image === name);
      if (users.length > 0) {
        throw new RuntimeError('ESTATE', `image ${name} is the base of ${users.map((v) => v.name).join(', ')}`, {
          hint: 'delete those VMs or projects first: their disks are overlays on it',
        });
      }
      const dir = await detachImage(this.layout.imagesDir, name);
      delete draft.images[name];
      return dir;
    });
    await rm(trash, { recursive: true, force: true });
    await removeTemplatesOf(this.layout, name);
  }

  async resolve(name: string): Promise<ResolvedImage> {
    const info = await this.info(name);
    const m = info.manifest;
    return {
      name,
      base: info.base,
      key: m.key ?? info.sha256,
      boot: info.kernel ? { kernel: info.kernel, ...(info.initrd ? { initrd: info.initrd } : {}), ...(info.cmdline ? { cmdline: info.cmdline } : {}) } : {},
      ...(m.agentBaked ? {} : { agentInstall: async () => ({ bundle: await readFile(agentBundlePath()), unit: AGENT_UNIT, start: AGENT_START_SCRIPT, setup: NODE_SETUP_SCRIPT }) }),
    };
  }
}
