/**
 * A private GOSHIP_HOME / GOSHIP_RUN per test file, with short paths (unix
 * socket paths must fit in 107 bytes), removed afterwards. Nothing of a test
 * leaks into the machine's real state.
 */
import { chmod, mkdtemp, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { Layout } from '../../src/layout.ts';

export interface TestEnv {
  root: string;
  layout: Layout;
  env: NodeJS.ProcessEnv;
  cleanup: () => Promise<void>;
}

export async function testEnv(prefix = 'gs'): Promise<TestEnv> {
  const root = await mkdtemp(join('/tmp', `${prefix}-`));
  // Each VM's QEMU runs as an identity of its own when the tests run as root: it must pass through to GOSHIP_HOME.
  await chmod(root, 0o711);
  const home = join(root, 'h');
  const run = join(root, 'r');
  return {
    root,
    layout: new Layout(home, run),
    env: { ...process.env, GOSHIP_HOME: home, GOSHIP_RUN: run, NO_COLOR: '1' },
    cleanup: () => rm(root, { recursive: true, force: true, maxRetries: 3 }),
  };
}
