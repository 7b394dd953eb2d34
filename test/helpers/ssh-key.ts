/** A well-formed OpenSSH ed25519 public key line (wire format: string type, string 32-byte key). */
export function ed25519PublicKey(comment: string, seed = 7): string {
  const type = Buffer.from('ssh-ed25519');
  const key = Buffer.alloc(32, seed);
  const len = (n: number) => {
    const b = Buffer.alloc(4);
    b.writeUInt32BE(n);
    return b;
  };
  return `ssh-ed25519 ${Buffer.concat([len(type.length), type, len(key.length), key]).toString('base64')} ${comment}`;
}
