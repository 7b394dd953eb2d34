/**
 * dist/goshipctl.cjs: loads the CLI bundle (dist/goshipctl-body.cjs, src/cli/main.ts)
 * through V8's code cache (cached.ts). Node built-ins only.
 */
import { fileURLToPath } from 'node:url';
import { loadCached } from './index.ts';

loadCached(fileURLToPath(new URL('./goshipctl-body.cjs', import.meta.url)));
