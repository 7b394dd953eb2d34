/**
 * The host-wide registry of VM identities: one file per id in use,
 * `/var/lib/goship/ids/ID`, made with O_EXCL (two GoShips, or two homes, can
 * never take the same id), naming the home and the VM that hold it. Freed
 * when the VM is destroyed. An entry whose VM directory is gone and that is
 * older than RECLAIM_AFTER_MS (a home removed by hand) is taken back.
 */
import { lstat, mkdir, open, readdir, readFile, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { JailError } from './errors.ts';
import { candidateIds, systemIds, type Identity } from './identity.ts';

/** Host-wide, whatever GOSHIP_HOME says: ids are a host's, not a home's. */
export const ID_REGISTRY = '/var/lib/goship/ids';
export const RECLAIM_AFTER_MS = 60 * 60 * 1000;

export interface IdOwner {
  home: string;
  vm: string;
  /** The VM's directory: its absence (with age) frees the id. */
  vmDir: string;
}

interface Entry extends IdOwner {
  at: string;
}

async function readEntry(path: string): Promise<Entry | undefined> {
  try {
    const e = JSON.parse(await readFile(path, 'utf8')) as Entry;
    return typeof e.vmDir === 'string' && typeof e.at === 'string' ? e : undefined;
  } catch {
    return undefined;
  }
}

async function reclaimable(path: string, now: number): Promise<boolean> {
  const e = await readEntry(path);
  if (!e) return false;
  if (now - Date.parse(e.at) < RECLAIM_AFTER_MS) return false;
  return lstat(e.vmDir).then(
    () => false,
    () => true,
  );
}

/** Takes the lowest free id for `owner`. */
export async function allocateIdentity(owner: IdOwner, registry = ID_REGISTRY): Promise<Identity> {
  await mkdir(registry, { recursive: true, mode: 0o700 });
  const [passwd, group] = await Promise.all([readFile('/etc/passwd', 'utf8').catch(() => ''), readFile('/etc/group', 'utf8').catch(() => '')]);
  const taken = systemIds(passwd, group);
  const now = Date.now();
  for (const name of await readdir(registry)) {
    const id = Number(name);
    if (!Number.isInteger(id)) continue;
    if (await reclaimable(join(registry, name), now)) await unlink(join(registry, name)).catch(() => undefined);
    else taken.add(id);
  }
  for (const id of candidateIds(taken)) {
    try {
      const f = await open(join(registry, String(id)), 'wx', 0o600);
      try {
        await f.writeFile(`${JSON.stringify({ ...owner, at: new Date(now).toISOString() } satisfies Entry)}\n`);
      } finally {
        await f.close();
      }
      return { uid: id, gid: id };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
  }
  throw new JailError(`no VM identity is free: all ids of the jail's range are in use (${registry})`, { hint: 'destroy VMs you no longer need' });
}

/** Frees `id` if `owner` holds it (never another VM's). */
export async function releaseIdentity(id: number, owner: Pick<IdOwner, 'home' | 'vm'>, registry = ID_REGISTRY): Promise<void> {
  const path = join(registry, String(id));
  const e = await readEntry(path);
  if (e && e.home === owner.home && e.vm === owner.vm) await unlink(path).catch(() => undefined);
}
