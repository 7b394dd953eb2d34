/** goshipctl image … as a user runs it: import, list, info, remove, and the refusals. */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Store } from '../../src/store/index.ts';
import { goshipctl } from '../helpers/cli.ts';
import { testEnv, type TestEnv } from '../helpers/runtime-env.ts';

let env: TestEnv;
let disk: string;
const g = (args: string[]) => goshipctl(args, env.env);

beforeAll(async () => {
  env = await testEnv('ci');
  disk = join(env.root, 'cloud.qcow2');
  await execa('qemu-img', ['create', '-q', '-f', 'qcow2', disk, '64M']);
});
afterAll(async () => {
  await env.cleanup();
});

describe('goshipctl image', () => {
  it('imports a qcow2, lists it, shows it, removes it', async () => {
    const imp = await g(['image', 'import', 'mine', disk, '--json']);
    expect(imp.code).toBe(0);
    const info = JSON.parse(imp.stdout) as { name: string; kernel: string | null; sha256: string; manifest: { agentBaked: boolean } };
    expect(info).toMatchObject({ name: 'mine', kernel: null, manifest: { agentBaked: false } });
    expect(info.sha256).toMatch(/^[0-9a-f]{64}$/);

    const list = JSON.parse((await g(['image', 'list', '--json'])).stdout) as { ok: boolean; name: string }[];
    expect(list.map((e) => [e.name, e.ok])).toEqual([['mine', true]]);
    const human = await g(['image', 'info', 'mine', '--verify']);
    expect(human.code).toBe(0);
    expect(human.stdout).toContain('(verified)');
    expect(human.stdout).toContain('boot      firmware');

    // The source file is copied, never moved.
    expect(existsSync(disk)).toBe(true);
    const rm = await g(['image', 'remove', 'mine']);
    expect(rm.code).toBe(0);
    expect(JSON.parse((await g(['image', 'list', '--json'])).stdout)).toEqual([]);
    const again = await g(['image', 'remove', 'mine']);
    expect(again.code).toBe(3);
    expect(again.stderr.split('\n')[0]).toBe('goshipctl: error: image mine does not exist');
  });

  it('refuses a bad name, a missing file, and removing an image a VM stands on', async () => {
    const bad = await g(['image', 'import', '../x', disk]);
    expect(bad.code).toBe(2);
    expect(bad.stderr.split('\n')[0]).toMatch(/^goshipctl: error: .*name/);
    const missing = await g(['image', 'import', 'nofile', join(env.root, 'nope.qcow2')]);
    expect(missing.code).not.toBe(0);
    expect(missing.stderr.split('\n')[0]).toMatch(/^goshipctl: error: /);

    expect((await g(['image', 'import', 'base', disk])).code).toBe(0);
    // A name that is taken: exit 4 like every other taken name, the image untouched.
    const taken = await g(['image', 'import', 'base', disk, '--json']);
    expect(taken.code).toBe(4);
    expect(JSON.parse(taken.stderr)).toEqual({ error: { code: 'EEXIST', message: 'image base already exists', hint: 'pick another name, or remove it first: goshipctl image rm base' } });
    // A project on that image (not started): its overlay stands on the base.
    const created = await g(['project', 'create', 'onbase', '--image', 'base', '--no-start', '--memory', '256M']);
    expect(created.code).toBe(0);
    // Its machine type is pinned at create: the versioned type q35 stands for on this QEMU.
    const help = (await execa('qemu-system-x86_64', ['-machine', 'help'])).stdout;
    const pinned = /^q35\s.*\(alias of (pc-q35-\d+\.\d+)\)/m.exec(help)![1];
    const status = JSON.parse((await g(['vm', 'status', 'onbase', '--json'])).stdout) as { config: { machine: string } };
    expect(status.config.machine).toBe(pinned);
    // Its VM belongs to the project: vm destroy would leave the project pointing at nothing.
    const destroy = await g(['vm', 'destroy', 'onbase', '--force']);
    expect([destroy.code, destroy.stderr]).toEqual([
      4,
      'goshipctl: error: VM onbase belongs to project onbase\nhint: delete the project instead: goshipctl project delete onbase',
    ]);
    const busy = await g(['image', 'remove', 'base']);
    expect(busy.code).toBe(4);
    expect(busy.stderr.split('\n')[0]).toBe('goshipctl: error: image base is the base of onbase');
    expect((await g(['project', 'delete', 'onbase'])).code).toBe(0);
    expect((await g(['image', 'remove', 'base'])).code).toBe(0);
  });

  it('image remove decides under the store lock: a VM recorded while it waits keeps its base', async () => {
    expect((await g(['image', 'import', 'race', disk])).code).toBe(0);
    const store = await Store.open(env.layout);
    let removal: Promise<{ code: number; stderr: string }> | undefined;
    await store.update(async (draft) => {
      // While this update holds the lock, `image remove` starts; it must wait for the lock
      // before it looks for users (an unlocked read would see none and remove the image).
      removal = g(['image', 'remove', 'race']);
      const early = await Promise.race([removal.then(() => 'finished'), new Promise((r) => setTimeout(r, 2000, 'waiting'))]);
      expect(early).toBe('waiting');
      draft.vms.user = {
        id: 'user',
        name: 'user',
        node: 'local',
        createdAt: new Date().toISOString(),
        state: 'defined',
        image: 'race',
        paths: { dir: '/d', qmpSocket: '/q', qmpUserSocket: '/u', agentSocket: '/a', consoleSocket: '/cs', monitorSocket: '/m', consoleLog: '/c', qemuLog: '/l', monitorLog: '/ml', pidfile: '/p' },
        config: {},
      };
    });
    const r = await removal!;
    expect([r.code, r.stderr.split('\n')[0]]).toEqual([4, 'goshipctl: error: image race is the base of user']);
    expect(existsSync(join(env.layout.imageDir('race'), 'base.qcow2'))).toBe(true);
    await store.update((draft) => {
      delete draft.vms.user;
    });
    expect((await g(['image', 'remove', 'race'])).code).toBe(0);
  }, 60_000);
});
