import { defineConfig } from 'vitest/config';

// Three tiers (docs/testing.md):
//   unit         pure code: no root, no network, no QEMU, no bundle; seconds.
//   integration  real sockets, real files, real processes, real qemu-system-x86_64 (the fast guest).
//   e2e          the real Debian image under TCG, through goshipctl and the runtime.
// `npm run test:unit` runs the first; `npm test` runs all three.
// Integration and end-to-end tests start real QEMU processes under TCG, which
// uses both cores of a small host: every test file runs on its own, one after another.
export default defineConfig({
  test: {
    fileParallelism: false,
    maxWorkers: 1,
    testTimeout: 20_000,
    hookTimeout: 20_000,
    reporters: ['default', './test/helpers/summary-reporter.ts'],
    projects: [
      { extends: true, test: { name: 'unit', include: ['test/unit/**/*.test.ts'] } },
      // Tests that spawn goshipctl, the monitor or the agent run the bundles: the global setup builds them once.
      { extends: true, test: { name: 'integration', include: ['test/integration/**/*.test.ts'], globalSetup: ['test/helpers/global-setup.ts'] } },
      { extends: true, test: { name: 'e2e', include: ['test/e2e/**/*.test.ts'], globalSetup: ['test/helpers/global-setup.ts'] } },
    ],
  },
});
