/**
 * The monitor's body (dist/goship-monitor-body.cjs): everything main.ts, the
 * entry, loads through V8's code cache (src/boot), so that a monitor does
 * not compile it at every start.
 */
export { Store } from '../store/index.ts';
export { Monitor } from './keeper.ts';
