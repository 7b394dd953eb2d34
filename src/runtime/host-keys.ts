/**
 * SSH keys made on the host (node:crypto) in OpenSSH's own file format: a
 * clone's host keys, so the guest needs no `ssh-keygen` run after its restore
 * (under TCG each new program a clone runs costs it translated code that stays
 * in its QEMU: docs/templates.md), and a project's own key pair, with no
 * `ssh-keygen` process on the host.
 *
 * The format (OpenSSH's PROTOCOL.key): "openssh-key-v1\0", cipher and KDF
 * "none", one public key blob, then the private section (two equal check
 * words, the key, its comment, padding 1, 2, 3… to 8 bytes).
 */
import { generateKeyPairSync, randomBytes, type KeyObject } from 'node:crypto';

/** The host key types a clone gets (sshd's default list without RSA, as the image's own identity step had). */
export const HOST_KEY_TYPES = ['ed25519', 'ecdsa'] as const;
export type HostKeyType = (typeof HOST_KEY_TYPES)[number];

export interface HostKeyFiles {
  type: HostKeyType;
  /** `/etc/ssh/ssh_host_TYPE_key`, mode 0600. */
  privateKey: string;
  /** `/etc/ssh/ssh_host_TYPE_key.pub`: one `ALGORITHM BASE64 COMMENT` line. */
  publicKey: string;
}

const MAGIC = Buffer.from('openssh-key-v1\0', 'latin1');

/** Pure: an SSH wire `string` (uint32 length, bytes). */
function sshString(value: Buffer | string): Buffer {
  const bytes = typeof value === 'string' ? Buffer.from(value, 'utf8') : value;
  const len = Buffer.alloc(4);
  len.writeUInt32BE(bytes.length);
  return Buffer.concat([len, bytes]);
}

function uint32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n >>> 0);
  return b;
}

/** Pure: an SSH `mpint` of a positive big-endian magnitude (leading zeros dropped, a zero byte added when the top bit is set). */
function mpint(magnitude: Buffer): Buffer {
  let i = 0;
  while (i < magnitude.length && magnitude[i] === 0) i++;
  const bytes = magnitude.subarray(i);
  return sshString(bytes.length > 0 && (bytes[0]! & 0x80) !== 0 ? Buffer.concat([Buffer.from([0]), bytes]) : bytes);
}

/** Pure: the public blob and the key-specific private fields of an Ed25519 or ECDSA P-256 private key. */
function keyParts(key: KeyObject): { algorithm: string; publicBlob: Buffer; privateFields: Buffer } {
  const jwk = key.export({ format: 'jwk' });
  const jwkBytes = (field: 'x' | 'y' | 'd'): Buffer => {
    const value = jwk[field];
    if (typeof value !== 'string') throw new Error(`the key has no JWK ${field}`);
    return Buffer.from(value, 'base64url');
  };
  if (key.asymmetricKeyType === 'ed25519') {
    const pub = jwkBytes('x');
    const seed = jwkBytes('d');
    const publicBlob = Buffer.concat([sshString('ssh-ed25519'), sshString(pub)]);
    return { algorithm: 'ssh-ed25519', publicBlob, privateFields: Buffer.concat([publicBlob, sshString(Buffer.concat([seed, pub]))]) };
  }
  if (key.asymmetricKeyType === 'ec' && key.asymmetricKeyDetails?.namedCurve === 'prime256v1') {
    const point = Buffer.concat([Buffer.from([4]), jwkBytes('x'), jwkBytes('y')]);
    const publicBlob = Buffer.concat([sshString('ecdsa-sha2-nistp256'), sshString('nistp256'), sshString(point)]);
    return { algorithm: 'ecdsa-sha2-nistp256', publicBlob, privateFields: Buffer.concat([publicBlob, mpint(jwkBytes('d'))]) };
  }
  throw new Error(`no OpenSSH encoding here for a ${key.asymmetricKeyType ?? 'secret'} key (Ed25519 and ECDSA P-256 only)`);
}

/**
 * Pure: a private key as OpenSSH writes it (unencrypted) and its public line.
 * `check` is the private section's check word (random in OpenSSH; any value
 * is valid).
 */
export function openSshKeyFiles(key: KeyObject, comment: string, check: number): { privateKey: string; publicKey: string } {
  const { algorithm, publicBlob, privateFields } = keyParts(key);
  const body = Buffer.concat([uint32(check), uint32(check), privateFields, sshString(comment)]);
  const pad = Buffer.from(Array.from({ length: (8 - (body.length % 8)) % 8 }, (_, i) => i + 1));
  const file = Buffer.concat([MAGIC, sshString('none'), sshString('none'), sshString(''), uint32(1), sshString(publicBlob), sshString(Buffer.concat([body, pad]))]);
  const lines = file.toString('base64').match(/.{1,70}/g) ?? [];
  return {
    privateKey: ['-----BEGIN OPENSSH PRIVATE KEY-----', ...lines, '-----END OPENSSH PRIVATE KEY-----', ''].join('\n'),
    publicKey: `${algorithm} ${publicBlob.toString('base64')} ${comment}\n`,
  };
}

/** A new key pair of `type` in OpenSSH's files, as `ssh-keygen -t TYPE -N '' -C COMMENT` writes them. */
export function newKeyPair(comment: string, type: HostKeyType = 'ed25519'): { privateKey: string; publicKey: string } {
  const { privateKey } = type === 'ed25519' ? generateKeyPairSync('ed25519') : generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
  return openSshKeyFiles(privateKey, comment, randomBytes(4).readUInt32BE());
}

/** New host keys of every HOST_KEY_TYPES type, commented `root@HOSTNAME` as sshd's own keys are. */
export function newHostKeys(hostname: string): HostKeyFiles[] {
  return HOST_KEY_TYPES.map((type) => ({ type, ...newKeyPair(`root@${hostname}`, type) }));
}
