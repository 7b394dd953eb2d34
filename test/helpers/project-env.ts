/**
 * An end-to-end environment: a private GOSHIP_HOME whose `images/default` is
 * the real Debian image built (or reused from the cache) by GoShip's own
 * builder. The image directory is linked, not copied: overlays only read it.
 */
import { mkdir, symlink } from 'node:fs/promises';
import { execa } from 'execa';
import { pidAlive } from '../../src/proc.ts';
import { ensureTestImage, type ImageInfo, type TestImageOptions } from './debian-image.ts';
import { testEnv, type TestEnv } from './runtime-env.ts';

export interface ProjectEnv extends TestEnv {
  image: ImageInfo;
  /** Kills every QEMU of this environment (by its GOSHIP_RUN path in the argv) and removes it. */
  cleanupAll: () => Promise<void>;
}

/**
 * `extraImages` are more cached test images (for example one built with
 * `--packages docker-registry`), linked under their own names beside `default`.
 */
export async function projectEnv(prefix: string, opts: { log?: (line: string) => void; extraImages?: TestImageOptions[] } = {}): Promise<ProjectEnv> {
  const log = opts.log ? { log: opts.log } : {};
  const image = await ensureTestImage(log);
  const env = await testEnv(prefix);
  await mkdir(env.layout.imagesDir, { recursive: true, mode: 0o700 });
  await symlink(image.dir, env.layout.imageDir('default'));
  for (const extra of opts.extraImages ?? []) {
    const info = await ensureTestImage({ ...extra, ...log });
    await symlink(info.dir, env.layout.imageDir(extra.name ?? 'default'));
  }
  return {
    ...env,
    image,
    cleanupAll: async () => {
      // The monitors first (a monitor that sees its QEMU die records the end and
      // removes files: it must not do so while the tree is being removed), then
      // the QEMUs, and wait for all of them to be gone before removing anything.
      const killed: number[] = [];
      for (const pattern of [`--home ${env.layout.home}( |$)`, `path=${env.layout.run}/`]) {
        const { stdout } = await execa('pgrep', ['-f', '--', pattern], { reject: false });
        for (const pid of stdout.split('\n').filter(Boolean).map(Number)) {
          try {
            process.kill(pid, 'SIGKILL');
            killed.push(pid);
          } catch {
            /* gone */
          }
        }
      }
      const deadline = Date.now() + 20_000;
      while (killed.some(pidAlive) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
      await env.cleanup();
    },
  };
}
