import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { newHostKeys } from '../../src/runtime/host-keys.ts';
import { IDENTITY_PERL } from '../../src/runtime/templates.ts';

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'goship-host-keys-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe("a clone's identity, checked by the real tools", () => {
  it('makes host keys that OpenSSH reads: ssh-keygen derives the same public key from each private file', async () => {
    for (const k of newHostKeys('web')) {
      const file = join(dir, `ssh_host_${k.type}_key`);
      await writeFile(file, k.privateKey, { mode: 0o600 });
      const derived = await execa('ssh-keygen', ['-y', '-f', file]);
      expect(`${derived.stdout}\n`).toBe(k.publicKey);
      const print = await execa('ssh-keygen', ['-l', '-f', file]);
      expect(print.stdout).toMatch(k.type === 'ed25519' ? /^256 SHA256:\S+ root@web \(ED25519\)$/ : /^256 SHA256:\S+ root@web \(ECDSA\)$/);
    }
  });

  it('gives the guest a Perl program that compiles with the modules of perl-base', async () => {
    const r = await execa('perl', ['-c', '-e', IDENTITY_PERL], { reject: false });
    expect([r.exitCode, r.stderr]).toEqual([0, '-e syntax OK']);
  });
});
