/** Store records for pure tests: a VM and a project with every required field, overridable. */
import type { Project, Vm } from '../../src/store/index.ts';

export const T0 = '2024-05-01T12:00:00.000Z';

export function vmRecord(id: string, overrides: Partial<Vm> = {}): Vm {
  return {
    id,
    name: id,
    node: 'local',
    createdAt: T0,
    state: 'defined',
    paths: {
      dir: `/h/vms/${id}`,
      qmpSocket: `/r/${id}/qmp.sock`,
      qmpUserSocket: `/r/${id}/qmp-user.sock`,
      agentSocket: `/r/${id}/agent.sock`,
      consoleSocket: `/r/${id}/console.sock`,
      monitorSocket: `/r/${id}/monitor.sock`,
      consoleLog: 'c',
      qemuLog: 'q',
      monitorLog: 'm',
      pidfile: `/r/${id}/qemu.pid`,
    },
    config: { machine: 'q35', nested: { a: [1, 2] } },
    ...overrides,
  };
}

export function projectRecord(name: string, overrides: Partial<Project> = {}): Project {
  return {
    name,
    createdAt: T0,
    node: 'local',
    vmId: `vm-${name}`,
    spec: { cpus: 2, memoryBytes: 2 ** 30, diskBytes: 10 * 2 ** 30, image: 'bookworm', ports: [{ proto: 'tcp', host: 8080, guest: 80 }], sshKeys: [] },
    state: 'creating',
    ...overrides,
  };
}
