/**
 * dist/goship-monitor.cjs: the monitor's entry when no startup snapshot can
 * be used (another Node, NODE_OPTIONS set, a snapshot not built): it loads
 * the body (dist/goship-monitor-body.cjs) through V8's code cache and runs
 * the monitor (entry.ts). Node built-ins only besides that.
 */
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadCached } from '../boot/index.ts';
import { runMonitorProcess, type MonitorBody } from './entry.ts';

/** The rest of the monitor, beside this file (built from body.ts). */
const BODY = 'goship-monitor-body.cjs';

runMonitorProcess(() => loadCached(join(dirname(fileURLToPath(import.meta.url)), BODY)) as MonitorBody);
