// Bundles the CLI, the library and the guest agent with esbuild.
// One file each: the CLI starts fast (no module resolution at run time) and the
// agent runs on the guest's own Node (Debian bookworm ships 18.x).
import { build } from 'esbuild';
import { chmodSync } from 'node:fs';

const requireShim = "import { createRequire as __goshipCreateRequire } from 'node:module'; const require = __goshipCreateRequire(import.meta.url);";
const common = { bundle: true, platform: 'node', format: 'esm', sourcemap: false, logLevel: 'warning', legalComments: 'none' };

await Promise.all([
  build({ ...common, entryPoints: ['src/cli/main.ts'], outfile: 'dist/goshipctl.mjs', target: 'node20', banner: { js: requireShim } }),
  build({ ...common, entryPoints: ['src/index.ts'], outfile: 'dist/lib.mjs', target: 'node20', banner: { js: requireShim } }),
  // One monitor process per running VM (src/monitor/main.ts).
  build({ ...common, entryPoints: ['src/monitor/main.ts'], outfile: 'dist/goship-monitor.mjs', target: 'node20', banner: { js: requireShim } }),
  build({ ...common, entryPoints: ['guest-agent/src/main.ts'], outfile: 'dist/goship-agent.mjs', target: 'node18', banner: { js: '#!/usr/bin/env node' } }),
  // Test support for the benchmarks (the fast test guest): not part of the library.
  build({ ...common, entryPoints: ['test/support/index.ts'], outfile: 'dist/test-support.mjs', target: 'node20', banner: { js: requireShim } }),
]);
chmodSync('dist/goship-agent.mjs', 0o755);
