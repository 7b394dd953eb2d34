/**
 * The host end of the agent channel (virtio-serial via QEMU's chardev socket).
 * Wire format: docs/agent-protocol.md; shared definitions: src/protocol.
 *
 * Layers: transport.ts (socket, frames) → session.ts (connect and sync
 * retries, request ids, routing, credit, close) → client.ts (`AgentClient`:
 * typed methods) and transfer.ts (upload, download). Default timeouts and
 * limits: defaults.ts; errors: errors.ts; a download's partial file:
 * partial.ts.
 */
export { AgentClient } from './client.ts';
export { EXEC_REPLY_GRACE_MS } from './defaults.ts';
export { openPartial, PARTIAL_MARK } from './partial.ts';
export type { ExecOptions } from './client.ts';
export type { DownloadOptions, TransferResult, UploadOptions } from './transfer.ts';
export type { AgentClientStats, AgentConnectOptions, AgentHello, ConnectProgress, Relay, RelayEvents } from './session.ts';
export { AgentClosedError, AgentError, AgentProtocolError, AgentRemoteError, AgentTimeoutError, AgentUnavailableError, AGENT_RUNTIME_HINT, TransferLimitError } from './errors.ts';
export type { AgentErrorCode } from './errors.ts';
export type { ExecResult, InfoResult, ShutdownResult } from '../protocol/index.ts';
