/**
 * The per-VM monitor: one small process per running VM, QEMU's parent, the
 * holder of GoShip's QMP connection and of the one agent session, the server
 * of RUN/ID/monitor.sock. The process is dist/goship-monitor.cjs (main.ts);
 * what the runtime uses of it is here.
 */
export { startMonitor, monitorBundlePath, isMonitorCmdline, type MonitorReport } from './start-monitor.ts';
export { answering } from './sockets.ts';
export { prepareQemuRun, spawnQemu, type QemuChild } from './qemu-child.ts';
export { nextPhase, FINAL_PHASES, type Phase, type Happening, type LifecycleContext } from './lifecycle.ts';
export { MonitorClient } from './client.ts';
export { writeLaunch, readLaunch, launchFile, withExec, type Launch } from './launch.ts';
export { afterEnd, classifyEnd, CRASH_KINDS, RESTARTABLE_KINDS, type AfterEnd, type EndEvidence } from './ending.ts';
export { RestartBackoff, ResetWatch, RESTART_DELAY_MIN_MS, RESTART_DELAY_MAX_MS, RESTART_RESET_AFTER_MS } from './backoff.ts';
export { escalate, type EscalationResult, type StopStep, type StopStepName } from './escalate.ts';
export { DEFAULT_STOP_TIMEOUTS, ACPI_REPEAT_MS, type StopTimeouts } from './keeper.ts';
export { parseUsernet, NETDEV_ID } from './ports.ts';
export { fitting } from './console.ts';
export { StreamPacer, SHARED_IN_FLIGHT, PACED_PIECE } from './pacer.ts';
export { MALLOC_MARK, MONITOR_MALLOC, monitorEnv, restoreEnv } from './env.ts';
export { MONITOR_METHODS, type Forward, type MonitorStatus, type StopResult } from './protocol.ts';
