/**
 * The monitor's body (dist/goship-monitor-body.cjs): everything main.ts, the
 * entry, loads through V8's code cache (src/boot), which makes it start
 * several times faster than compiling it.
 */
export { Store } from '../store/index.ts';
export { Monitor } from './keeper.ts';
