/** factsFromReport: the probe's report → the facts a VM spec is validated against. */
import { describe, expect, it } from 'vitest';
import { probeHost } from '../../src/kvm-probe/index.ts';
import { resolveSpec } from '../../src/qemu/index.ts';
import { factsFromReport } from '../../src/runtime/host.ts';
import { fixtureReaderFromDir } from '../helpers/host-fixture.ts';

const HOSTS = new URL('../fixtures/hosts/', import.meta.url).pathname;
const report = (name: string) => probeHost(fixtureReaderFromDir(`${HOSTS}${name}`));
const paths = { qmpSocket: '/r/w/qmp.sock', agentSocket: '/r/w/agent.sock', consoleSocket: '/r/w/console.sock', qmpUserSocket: '/r/w/qmp-user.sock', pidfile: '/r/w/qemu.pid' };

describe('factsFromReport', () => {
  it('on a kvm_pvm host: KVM not usable, with the probe reason once, and TCG chosen by auto', async () => {
    const facts = factsFromReport(await report('pvm-host'), { cpuCount: 99, memTotalBytes: 1 });
    expect(facts.kvm).toEqual({
      usable: false,
      reason: '/dev/kvm is provided by kvm_pvm, which runs only PVM-aware guests; a normal guest hangs under it; no vmx or svm flag in /proc/cpuinfo',
    });
    const config = resolveSpec({ name: 'web' }, { host: facts, paths, exists: () => true });
    expect(config.accel).toBe('tcg');
    expect(config.accelReason).toBe(
      'auto: KVM is not usable (/dev/kvm is provided by kvm_pvm, which runs only PVM-aware guests; a normal guest hangs under it; no vmx or svm flag in /proc/cpuinfo), using TCG',
    );
    expect(config.accelReason.match(/KVM is not usable/g)).toHaveLength(1);
  });

  it('takes CPU count and memory from the probe, the fallback only where it read nothing', async () => {
    const r = await report('intel-vtx-2s');
    const facts = factsFromReport(r, { cpuCount: 99, memTotalBytes: 1 });
    expect(facts.cpuCount).toBe(r.cpu.logicalCpus);
    expect(facts.memTotalBytes).toBe(r.memory.totalBytes);
    expect(facts.kvm.usable).toBe(true);
    const blind = factsFromReport({ ...r, cpu: { ...r.cpu, logicalCpus: null }, memory: { ...r.memory, totalBytes: null } }, { cpuCount: 3, memTotalBytes: 7 });
    expect([blind.cpuCount, blind.memTotalBytes]).toEqual([3, 7]);
  });

  it('passes the confidential-computing facts through', async () => {
    const r = await report('amd-epyc-sev-snp');
    expect(factsFromReport(r).confidential).toEqual(r.confidential);
  });
});
