import { createPrivateKey, generateKeyPairSync } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { HOST_KEY_TYPES, newHostKeys, openSshKeyFiles } from '../../src/runtime/host-keys.ts';

const b64u = (hex: string) => Buffer.from(hex, 'hex').toString('base64url');
// RFC 8032, test 1.
const rfc8032 = createPrivateKey({
  key: { kty: 'OKP', crv: 'Ed25519', d: b64u('9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60'), x: b64u('d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a') },
  format: 'jwk',
});

describe('SSH host keys in OpenSSH format', () => {
  it('encodes an Ed25519 key as OpenSSH writes it: the public blob twice, seed and public key, comment, padding', () => {
    expect(openSshKeyFiles(rfc8032, 'root@web', 0x01020304)).toEqual({
      privateKey: "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\nQyNTUxOQAAACDXWpgBgrEKt9VL/tPJZAc6DuFy89qmIyWvAhpo9wdRGgAAAJABAgMEAQID\nBAAAAAtzc2gtZWQyNTUxOQAAACDXWpgBgrEKt9VL/tPJZAc6DuFy89qmIyWvAhpo9wdRGg\nAAAECdYbGd7/1aYLqESvSS7CzEREnFaXsyaRlwO6wDHK5/YNdamAGCsQq31Uv+08lkBzoO\n4XLz2qYjJa8CGmj3B1EaAAAACHJvb3RAd2ViAQIDBAU=\n-----END OPENSSH PRIVATE KEY-----\n",
      publicKey: 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAINdamAGCsQq31Uv+08lkBzoO4XLz2qYjJa8CGmj3B1Ea root@web\n',
    });
  });

  it('encodes an ECDSA P-256 key with its uncompressed point and its scalar as an mpint', () => {
    const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
    const jwk = privateKey.export({ format: 'jwk' });
    const files = openSshKeyFiles(privateKey, 'c', 7);
    const [alg, blob] = files.publicKey.trim().split(' ');
    const point = Buffer.concat([Buffer.from([4]), Buffer.from(jwk.x!, 'base64url'), Buffer.from(jwk.y!, 'base64url')]);
    expect(alg).toBe('ecdsa-sha2-nistp256');
    expect(Buffer.from(blob!, 'base64').subarray(-65)).toEqual(point);
    expect(files.privateKey).toMatch(/^-----BEGIN OPENSSH PRIVATE KEY-----\n([A-Za-z0-9+/=]{1,70}\n)+-----END OPENSSH PRIVATE KEY-----\n$/);
  });

  it('refuses a key type it cannot encode', () => {
    const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'secp384r1' });
    expect(() => openSshKeyFiles(privateKey, 'c', 1)).toThrow(/Ed25519 and ECDSA P-256 only/);
  });

  it('makes new keys of every type, each time others', () => {
    const [a, b] = [newHostKeys('web'), newHostKeys('web')];
    expect(a.map((k) => k.type)).toEqual([...HOST_KEY_TYPES]);
    for (const k of a) expect(k.publicKey).toMatch(/ root@web\n$/);
    expect(a.map((k) => k.publicKey)).not.toEqual(b.map((k) => k.publicKey));
  });
});
