/**
 * The monitor as a V8 startup snapshot (dist/goship-monitor.blob): the body
 * is evaluated when the snapshot is built, so a monitor started from it is
 * ready as soon as Node is. Its start-up then overlaps QEMU's, which the
 * launcher forked first (launcher.ts).
 *
 * This bundle (dist/goship-monitor-snap.cjs) is both the builder and the
 * snapshot's script: run plainly (`node dist/goship-monitor-snap.cjs`, by
 * scripts/build.mjs) it runs `node --build-snapshot` on itself with the
 * monitor's Node flags and writes the key file beside the blob
 * (snapshot-key.ts); under `--build-snapshot` it sets the function a monitor
 * started from the snapshot runs.
 */
import { spawnSync } from 'node:child_process';
import { renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startupSnapshot } from 'node:v8';
import * as body from './body.ts';
import { runMonitorProcess } from './entry.ts';
import { MONITOR_NODE_FLAGS, SNAPSHOT_FILES, snapshotKey } from './snapshot-key.ts';

function build(): void {
  const self = fileURLToPath(import.meta.url);
  const dir = dirname(self);
  const blob = join(dir, SNAPSHOT_FILES.blob);
  const key = join(dir, SNAPSHOT_FILES.key);
  // No key, no use: a failed build must not leave an older snapshot that looks current.
  rmSync(key, { force: true });
  const tmp = `${blob}.${process.pid}.tmp`;
  const r = spawnSync(process.execPath, [...MONITOR_NODE_FLAGS, '--snapshot-blob', tmp, '--build-snapshot', self], { stdio: ['ignore', 'inherit', 'pipe'], encoding: 'utf8' });
  if (r.status !== 0) {
    rmSync(tmp, { force: true });
    throw new Error(`building the monitor's snapshot failed (${r.error?.message ?? `exit ${r.status ?? r.signal}`}): ${r.stderr}`);
  }
  renameSync(tmp, blob);
  const st = statSync(self);
  writeFileSync(key, `${JSON.stringify(snapshotKey(process.version, MONITOR_NODE_FLAGS, st))}\n`, { mode: 0o644 });
}

if (startupSnapshot.isBuildingSnapshot()) startupSnapshot.setDeserializeMainFunction(() => runMonitorProcess(() => body));
else build();
