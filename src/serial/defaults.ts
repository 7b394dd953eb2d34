/**
 * Every default timeout and local limit of the agent client, named once.
 * The protocol's own limits (line and frame sizes, windows) are shared with
 * the guest agent and live in src/protocol/constants.ts.
 */

/** Reply timeout of ping, info, stat, shutdown and `call` (`AgentConnectOptions.requestTimeoutMs`). */
export const DEFAULT_REQUEST_TIMEOUT_MS = 15_000;

/** upload/download fail when nothing moves for this long (`AgentConnectOptions.transferIdleTimeoutMs`). */
export const DEFAULT_TRANSFER_IDLE_TIMEOUT_MS = 60_000;

/** The sync is repeated at this interval until the agent answers (`AgentConnectOptions.syncIntervalMs`). */
export const DEFAULT_SYNC_INTERVAL_MS = 1_000;

/** Wait between connection attempts to the socket (`AgentConnectOptions.retryDelayMs`). */
export const DEFAULT_RETRY_DELAY_MS = 200;

/** Extra time the host waits beyond an exec's own timeout before giving up on the reply. */
export const EXEC_REPLY_GRACE_MS = 15_000;

/** Read size when hashing a local file before it is uploaded. */
export const HASH_READ_BYTES = 1024 * 1024;
