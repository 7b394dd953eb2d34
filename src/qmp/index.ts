/**
 * The QMP client: the only public door of `src/qmp/`.
 *
 *     const qmp = await QmpClient.connect(layout.qmpSocket, { timeoutMs: 5000 });
 *     try {
 *       await qmp.expectEvent('RESUME', () => qmp.cont());
 *     } finally {
 *       await qmp.close();
 *     }
 *
 * Layers: transport.ts (socket, line framing) → protocol.ts (greeting,
 * negotiation, ids, events, timeouts, state) → commands.ts (typed commands).
 * See docs/qmp.md.
 */
export {
  QmpClient,
  hostfwdAddCommandLine,
  hostfwdRemoveCommandLine,
  type QmpClientOptions,
  type HumanMonitorCommandArgs,
  type HostfwdAddArgs,
  type HostfwdRemoveArgs,
  type RingbufReadArgs,
} from './commands.ts';
export {
  QmpEventStream,
  COMMAND_TIMEOUTS_MS,
  DEFAULT_COMMAND_TIMEOUT_MS,
  DEFAULT_CONNECT_TIMEOUT_MS,
  DEFAULT_EVENT_TIMEOUT_MS,
  DEFAULT_MAX_QUEUED_EVENTS,
  type QmpState,
  type QmpProtocolOptions,
  type ConnectOptions,
  type CallOptions,
  type WaitForEventOptions,
  type QmpListenerMap,
} from './protocol.ts';
export { MAX_LINE_BYTES } from './transport.ts';
export {
  QmpError,
  QmpConnectError,
  QmpCommandError,
  QmpClosedError,
  QmpTimeoutError,
  QmpFrameError,
  QmpProtocolError,
  QmpStateError,
  QmpHmpError,
  type QmpErrorCode,
} from './errors.ts';
export type {
  QmpEvent,
  QmpGreeting,
  QmpVersionInfo,
  QmpStatusInfo,
  QmpRunState,
  QmpBlockInfo,
  QmpChardevInfo,
  QmpCpuInfoFast,
  QmpMigrationInfo,
  QmpJobInfo,
  QmpMigrationStatus,
} from './types.ts';
