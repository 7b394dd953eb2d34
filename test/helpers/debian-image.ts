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

let pending: Promise<ImageInfo> | undefined;

/** Builds the default image on first use, then returns the cached one. Callers in one process share a build. */
export function ensureTestImage(opts: { log?: (line: string) => void } = {}): Promise<ImageInfo> {
  pending ??= buildImage({
    name: 'default',
    agentBundle: testAgentBundle(),
    imagesDir: testImagesDir(),
    debCacheDir: join(cacheBase(), 'debs'),
    bootProbe: true,
    onProgress: (p: BuildProgress) => opts.log?.(`image: ${p.phase}: ${p.message}`),
  })
    .then(async (info) => {
      // QEMU runs as goship-qemu: the cache's directories must let it through to the image.
      await openToQemu(info.dir);
      return info;
    })
    .catch((err: unknown) => {
    pending = undefined;
    throw err;
  });
  return pending;
}
