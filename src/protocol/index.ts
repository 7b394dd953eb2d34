/**
 * The agent protocol, one definition for both ends: the host client
 * (src/serial) and the guest agent (guest-agent/). See docs/agent-protocol.md.
 */
export * from './constants.ts';
export * from './schemas.ts';
export * from './codec.ts';
export * from './flow.ts';
export * from './apps.ts';
export * from './procs.ts';
