/**
 * The host end of the agent channel (virtio-serial via QEMU's chardev socket).
 * Wire format: docs/agent-protocol.md; shared definitions: src/protocol.
 */
export { AgentClient } from './client.ts';
export { EXEC_REPLY_GRACE_MS } from './defaults.ts';
export { openPartial, PARTIAL_MARK } from './partial.ts';
export type { ExecOptions, DownloadOptions, TransferResult, UploadOptions } from './client.ts';
export type { AgentClientStats, AgentConnectOptions, AgentHello, ConnectProgress, Relay, RelayEvents } from './session.ts';
export { AgentClosedError, AgentError, AgentProtocolError, AgentRemoteError, AgentTimeoutError, AgentUnavailableError, AGENT_RUNTIME_HINT, TransferLimitError } from './errors.ts';
export type { AgentErrorCode } from './errors.ts';
export type { ExecResult, InfoResult, ShutdownResult } from '../protocol/index.ts';
