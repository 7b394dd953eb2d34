/** The store's record of where a VM's files are, from the one layout. */
import { join } from 'node:path';
import { FILES, type Layout } from '../layout.ts';
import type { VmPaths } from '../store/index.ts';

export function vmPaths(layout: Layout, id: string, opts: { overlay?: boolean; seed?: boolean } = {}): VmPaths {
  return {
    dir: layout.vmDir(id),
    ...(opts.overlay ? { overlay: layout.vmFile(id, 'overlay') } : {}),
    ...(opts.seed ? { seed: layout.vmFile(id, 'seed') } : {}),
    qmpSocket: layout.vmSocket(id, 'qmpSocket'),
    qmpUserSocket: layout.vmSocket(id, 'qmpUserSocket'),
    agentSocket: layout.vmSocket(id, 'agentSocket'),
    consoleSocket: layout.vmSocket(id, 'consoleSocket'),
    monitorSocket: layout.vmSocket(id, 'monitorSocket'),
    consoleLog: layout.vmFile(id, 'consoleLog'),
    qemuLog: layout.vmFile(id, 'qemuLog'),
    monitorLog: layout.vmFile(id, 'monitorLog'),
    // In the run directory: QEMU writes it, and QEMU may not write in the VM's directory.
    pidfile: join(layout.vmRunDir(id), FILES.pidfile),
  };
}
