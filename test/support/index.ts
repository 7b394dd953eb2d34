// Test support the benchmarks also use, bundled to dist/test-support.mjs (never part of the library).
export { ensureFastGuest, type FastGuest, type FastGuestOptions } from './fastguest.ts';
export { testCacheBase, openToQemu } from './cache.ts';
export { startSshNode, NODE_USER, type SshNode } from './ssh-node.ts';
