/**
 * A confidential-computing guest object, named by `-machine
 * confidential-guest-support=cgs0`:
 *
 *   sev, sev-es  -object sev-guest,id=cgs0,cbitpos=51,reduced-phys-bits=1,policy=0x1
 *   sev-snp      -object sev-snp-guest,id=cgs0,cbitpos=51,reduced-phys-bits=1,policy=0x30000
 *   tdx          -object tdx-guest,id=cgs0     (and -machine kernel-irqchip=split)
 *
 * Checked against the host's facts: the error says what the probe saw.
 * Note: `sev-snp-guest` needs QEMU ≥ 9.1 and `tdx-guest` QEMU ≥ 10.1.
 */
import type { Issue } from '../../errors.ts';
import { qemuOpts } from '../opts.ts';
import type { ConfidentialType, HostFacts } from '../spec.ts';
import type { ConfidentialDevice, DeviceContext, ValidateContext } from './types.ts';

/** Which host fact each type needs, and how to say it. */
export const CONFIDENTIAL_NEEDS: Record<ConfidentialType, { fact: keyof HostFacts['confidential']; needs: string }> = {
  sev: { fact: 'sev', needs: 'an AMD host with SEV enabled' },
  'sev-es': { fact: 'sevEs', needs: 'an AMD host with SEV-ES enabled' },
  'sev-snp': { fact: 'sevSnp', needs: 'an AMD host with SEV-SNP enabled' },
  tdx: { fact: 'tdx', needs: 'an Intel host with TDX enabled' },
};

export function validate(part: ConfidentialDevice, ctx: ValidateContext): Issue[] {
  const { fact, needs } = CONFIDENTIAL_NEEDS[part.type];
  const seen = ctx.host.confidential[fact];
  if (seen.available) return [];
  const evidence = seen.evidence.length > 0 ? seen.evidence.join(', ') : 'the probe found no sign of it';
  return [{ path: `${part.at}.type`, message: `${part.type} needs ${needs}; this host: ${evidence}` }];
}

export function toArgs(part: ConfidentialDevice, _ctx: DeviceContext): string[] {
  if (part.type === 'tdx') return ['-object', qemuOpts('tdx-guest', { id: part.id })];
  return [
    '-object',
    qemuOpts(part.type === 'sev-snp' ? 'sev-snp-guest' : 'sev-guest', {
      id: part.id,
      cbitpos: part.cbitpos,
      'reduced-phys-bits': part.reducedPhysBits,
      policy: `0x${part.policy.toString(16)}`,
    }),
  ];
}
