/**
 * The real Debian base image for end-to-end tests, built by GoShip's own
 * buildImage (with the boot probe baked in) and cached between runs in
 * `goship-test/images` under the test cache (test/support/cache.ts); downloaded .debs are
 * kept in `…/goship-test/debs`. A cold build takes about a minute; a cached
 * call returns at once (the key covers the agent bundle, so a changed agent
 * rebuilds). See docs/images.md.
 */
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { buildImage } from '../../src/image/index.ts';
import { openToQemu, testCacheBase } from '../support/cache.ts';
import type { ImageInfo } from '../../src/image/catalog.ts';
import type { BuildProgress } from '../../src/image/progress.ts';

export type { ImageInfo };

function cacheBase(): string {
  return testCacheBase();
}

/** Where test images live (shared by every test run on this machine). */
export function testImagesDir(): string {
  return join(cacheBase(), 'images');
}

/** The bundled agent the vitest global setup builds. */
export function testAgentBundle(): string {
  return fileURLToPath(new URL('../../dist/goship-agent.mjs', import.meta.url));
}

const pending = new Map<string, Promise<ImageInfo>>();

export interface TestImageOptions {
  log?: (line: string) => void;
  /** The image's name in the cache (default `default`). */
  name?: string;
  /** Debian packages on top of the default set (as `image build --packages`). */
  extraPackages?: readonly string[];
  /** Replaces the default package list. */
  packages?: readonly string[];
  /** false: no agent in the image, as a foreign cloud image arrives (cloud-init installs it). */
  bakeAgent?: boolean;
}

/** Builds an image on first use, then returns the cached one. Callers in one process share a build. */
export function ensureTestImage(opts: TestImageOptions = {}): Promise<ImageInfo> {
  const name = opts.name ?? 'default';
  let p = pending.get(name);
  if (p) return p;
  p = buildImage({
    name,
    agentBundle: testAgentBundle(),
    imagesDir: testImagesDir(),
    debCacheDir: join(cacheBase(), 'debs'),
    bootProbe: true,
    ...(opts.extraPackages ? { extraPackages: opts.extraPackages } : {}),
    ...(opts.packages ? { packages: opts.packages } : {}),
    ...(opts.bakeAgent === false ? { bakeAgent: false } : {}),
    onProgress: (e: BuildProgress) => opts.log?.(`image ${name}: ${e.phase}: ${e.message}`),
  })
    .then(async (info) => {
      // QEMU runs as the VM's own identity: the cache's directories must let it through to the image.
      await openToQemu(info.dir);
      return info;
    })
    .catch((err: unknown) => {
      pending.delete(name);
      throw err;
    });
  pending.set(name, p);
  return p;
}
