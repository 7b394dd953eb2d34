/**
 * A cloud image without Node.js, imported as a user imports a foreign image:
 * built by GoShip's own builder without `nodejs` (and without docker, to stay
 * small) and without the agent baked in, then `image import`ed with its kernel.
 * cloud-init installs the agent at first boot; the agent's runtime comes from
 * the guest's package manager when the guest can reach it (Debian's archive
 * through QEMU's user network), and when it cannot, the guest says so on the
 * agent port and the host fails at once with EAGENT_RUNTIME instead of waiting
 * for a hello that never comes.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEFAULT_PACKAGES } from '../../src/image/index.ts';
import { Runtime } from '../../src/runtime/index.ts';
import { cliOf } from '../helpers/cli.ts';
import { ensureTestImage, type ImageInfo } from '../helpers/debian-image.ts';
import { projectEnv, type ProjectEnv } from '../helpers/project-env.ts';

let env: ProjectEnv;
const { ok } = cliOf(() => env.env, 900_000);
let source: ImageInfo;

beforeAll(async () => {
  env = await projectEnv('enl');
  source = await ensureTestImage({ name: 'nodeless', packages: DEFAULT_PACKAGES.filter((p) => !['nodejs', 'docker.io', 'apparmor'].includes(p)), bakeAgent: false });
  await ok(['image', 'import', 'bare', source.base, '--kernel', source.kernel!, '--initrd', source.initrd!, '--cmdline', source.cmdline!]);
}, 1_800_000);

afterAll(async () => {
  await env?.cleanupAll();
}, 60_000);

describe('an imported image without Node.js', () => {
  it('has no agent and no node in it', async () => {
    const info = JSON.parse(await ok(['image', 'info', 'bare', '--json'])) as { manifest: { agentBaked: boolean } };
    expect(info.manifest.agentBaked).toBe(false);
    expect(source.manifest.packages).not.toContain('nodejs');
  });

  it('project create installs nodejs with the guest\'s apt, then the agent answers', async () => {
    await ok(['project', 'create', 'bare', '--image', 'bare', '--memory', '1G', '--timeout', '900']);
    expect((await ok(['vm', 'exec', 'bare', '--', 'node', '--version'])).trim()).toMatch(/^v(1[89]|[2-9]\d)\./);
    // The setup's own log: apt did it.
    expect(await ok(['vm', 'exec', 'bare', '--', 'cat', '/var/log/goship-nodejs.log'])).toMatch(/Setting up nodejs/);
    expect((await ok(['vm', 'exec', 'bare', '--', 'systemctl', 'show', '-p', 'ExecStart', '--value', 'goship-agent'])).trim()).toContain('/usr/local/lib/goship/agent-start');
    await ok(['project', 'delete', 'bare', '--force']);
  }, 1_200_000);

  it('without a network the guest cannot install it: the start fails at once with EAGENT_RUNTIME and says why', async () => {
    const rt = await Runtime.open({ layout: env.layout });
    {
      const image = await rt.images.resolve('bare');
      expect(image.agentInstall).toBeDefined();
      await rt.vms.create({
        spec: { name: 'cut', cpu: { count: 2 }, memory: '768M', network: { mode: 'none' } },
        base: { path: image.base, name: 'bare', ...image.boot },
        seed: { instanceId: 'iid-cut-1', hostname: 'cut', sshKeys: [], agent: await image.agentInstall!() },
      });
      // A timeout far beyond what the guest needs to say it: the error comes from the guest, not from the clock.
      const err = await rt.vms.start('cut', { waitAgent: true, agentTimeoutMs: 1_500_000 }).then(
        () => undefined,
        (e: unknown) => e as { code?: string; message: string; hint?: string },
      );
      expect(err?.code).toBe('EAGENT_RUNTIME');
      expect(err?.message).toMatch(/no Node\.js 18 or newer in the guest for goship-agent \(found: none\); installing nodejs failed: /);
      // The VM itself is up: the user can look inside (console, QMP) and fix it.
      expect((await rt.vms.get('cut')).state).toMatch(/running|ready/);
      await rt.vms.stop('cut', { force: true });
      await rt.vms.destroy('cut');
    }
  }, 1_800_000);
});
