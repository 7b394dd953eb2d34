/** The store's record of where a VM's files are, from the one layout. */
import type { Layout } from '../layout.ts';
import { FILES } from '../layout.ts';
import type { VmPaths } from '../store/index.ts';
import type { MachinePaths } from './machine.ts';
import { join } from 'node:path';

export function vmPaths(layout: Layout, id: string, opts: { overlay?: boolean; seed?: boolean } = {}): VmPaths {
  return {
    dir: layout.vmDir(id),
    ...(opts.overlay ? { overlay: layout.vmFile(id, 'overlay') } : {}),
    ...(opts.seed ? { seed: layout.vmFile(id, 'seed') } : {}),
    qmpSocket: layout.qmpSocket(id),
    agentSocket: layout.agentSocket(id),
    consoleLog: layout.vmFile(id, 'consoleLog'),
    qemuLog: layout.vmFile(id, 'qemuLog'),
    pidfile: layout.vmFile(id, 'pidfile'),
  };
}

export function machinePaths(layout: Layout, id: string, p: VmPaths): MachinePaths {
  return {
    dir: p.dir,
    runDir: layout.vmRunDir(id),
    qmpSocket: p.qmpSocket,
    agentSocket: p.agentSocket,
    consoleLog: p.consoleLog,
    qemuLog: p.qemuLog,
    pidfile: p.pidfile,
    argvFile: join(p.dir, FILES.argv),
  };
}
