// A VM's saved state (memory and devices): written through QEMU's migration
// and loaded into a fresh QEMU. The only public door of src/vmstate.
export { VmStateError } from './errors.ts';
export { STATE_MAGIC, STATE_VERSION, stateHeaderIssue } from './header.ts';
export { SAVE_BANDWIDTH, saveState, restoreState, checkStateFile, stateFileIssue } from './stream.ts';
export type { SaveStateOptions, RestoreStateOptions, StateTransfer } from './stream.ts';
export { copyMemoryFile, sealMemory, holdMemory } from './memory.ts';
export type { HeldMemory } from './memory.ts';
