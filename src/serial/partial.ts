/**
 * Where a download is written until it is whole: beside its destination,
 * under a name nobody can guess (`DEST.goship-partial-RANDOM`), made with
 * O_EXCL (never an existing file or a link someone planted), owner-only; the
 * caller renames it over the destination once it is complete.
 */
import { randomBytes } from 'node:crypto';
import { open, type FileHandle } from 'node:fs/promises';

export const PARTIAL_MARK = '.goship-partial-';

export async function openPartial(dest: string): Promise<{ path: string; handle: FileHandle }> {
  const path = `${dest}${PARTIAL_MARK}${randomBytes(6).toString('hex')}`;
  return { path, handle: await open(path, 'wx', 0o600) };
}
