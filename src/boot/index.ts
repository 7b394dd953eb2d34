// Start-up: CommonJS bundles loaded through V8's code cache.
export { loadCached, type CacheStatus } from './cached.ts';
