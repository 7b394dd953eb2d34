// Bundles the CLI, the library, the monitor and the guest agent with esbuild.
// One file each (the CLI and the monitor: a small entry and a body): no module
// resolution at run time, and the agent runs on the guest's own Node (Debian
// bookworm ships 18.x).
import { build } from 'esbuild';
import { chmodSync } from 'node:fs';

const requireShim = "import { createRequire as __goshipCreateRequire } from 'node:module'; const require = __goshipCreateRequire(import.meta.url);";
const common = { bundle: true, platform: 'node', format: 'esm', sourcemap: false, logLevel: 'warning', legalComments: 'none' };
// Bundles run through V8's code cache (src/boot/cached.ts) are CommonJS: vm.Script takes a cache, ESM does not on Node 20.
const cjs = {
  ...common,
  format: 'cjs',
  target: 'node20',
  // Less to read and to compile lazily; identifiers stay, so stack traces still name functions.
  minifyWhitespace: true,
  minifySyntax: true,
  define: { 'import.meta.url': '__goshipModuleUrl' },
  banner: { js: "const __goshipModuleUrl = require('node:url').pathToFileURL(__filename).href;" },
};

await Promise.all([
  // goshipctl: a small launcher and the CLI itself, loaded with its code cache. The launchers are
  // CommonJS too: an ES module entry makes Node start its ESM loader first (~10 ms of every process).
  build({ ...cjs, entryPoints: ['src/boot/cli.ts'], outfile: 'dist/goshipctl.cjs' }),
  build({ ...cjs, entryPoints: ['src/cli/main.ts'], outfile: 'dist/goshipctl-body.cjs' }),
  build({ ...common, entryPoints: ['src/index.ts'], outfile: 'dist/lib.mjs', target: 'node20', banner: { js: requireShim } }),
  // One monitor per running VM: its entry (src/monitor/main.ts) spawns QEMU, then loads its body with the code cache.
  build({ ...cjs, entryPoints: ['src/monitor/main.ts'], outfile: 'dist/goship-monitor.cjs' }),
  build({ ...cjs, entryPoints: ['src/monitor/body.ts'], outfile: 'dist/goship-monitor-body.cjs' }),
  build({ ...common, entryPoints: ['guest-agent/src/main.ts'], outfile: 'dist/goship-agent.mjs', target: 'node18', banner: { js: '#!/usr/bin/env node' } }),
  // Test support for the benchmarks (the fast test guest): not part of the library.
  build({ ...common, entryPoints: ['test/support/index.ts'], outfile: 'dist/test-support.mjs', target: 'node20', banner: { js: requireShim } }),
]);
chmodSync('dist/goship-agent.mjs', 0o755);
