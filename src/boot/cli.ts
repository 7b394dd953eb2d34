/**
 * dist/goshipctl.mjs: loads the CLI bundle (dist/goshipctl.cjs, src/cli/main.ts)
 * through V8's code cache (cached.ts). Node built-ins only.
 */
import { fileURLToPath } from 'node:url';
import { loadCached } from './index.ts';

loadCached(fileURLToPath(new URL('./goshipctl.cjs', import.meta.url)));
