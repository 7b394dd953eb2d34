/**
 * The monitor's body (dist/goship-monitor-body.cjs): everything main.ts loads
 * after it has spawned QEMU, so that QEMU starts while this compiles.
 */
export { Store } from '../store/index.ts';
export { Monitor } from './keeper.ts';
