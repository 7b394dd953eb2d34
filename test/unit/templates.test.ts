import { describe, expect, it } from 'vitest';
import { GROW_SCRIPT, IDENTITY_ARGV, IDENTITY_PERL, argvShape, giveIdentity, growArgv, identityInput, pickTemplateName, templateMismatch, templateName, type TemplateRecord } from '../../src/runtime/templates.ts';
import { bootTrack } from '../../src/runtime/guest-boot.ts';

const GiB = 1024 * 1024 * 1024;

describe('templates (pure)', () => {
  it('names a template by its image and VM size', () => {
    expect(templateName({ image: 'default', cpus: 2, memoryBytes: GiB, diskBytes: 10 * GiB })).toBe('default-2c-1024m-10240m');
  });

  it("puts a VM's own paths and name in its argv as placeholders, leaves out the host's side (port forwards, TCG's tb-size), and nothing else", () => {
    const own = { vmDir: '/var/lib/goship/vms/web', runDir: '/run/goship/web', name: 'web', id: 'web' };
    expect(
      argvShape(
        [
          'qemu-system-x86_64',
          '-name',
          'guest=web,process=goship-web',
          '-pidfile',
          '/run/goship/web/qemu.pid',
          '-blockdev',
          'driver=file,filename=/var/lib/goship/vms/web/disk.qcow2,node-name=disk0-file',
          '-kernel',
          '/var/lib/goship/images/default/vmlinuz',
          '-accel',
          'tcg,tb-size=256',
          '-m',
          'size=1024M',
          '-netdev',
          'user,id=net0,hostfwd=tcp:127.0.0.1:2222-:22,hostfwd=udp:127.0.0.1:5353-:53',
        ],
        own,
      ),
    ).toEqual([
      'qemu-system-x86_64',
      '-name',
      'guest={name},process=goship-{id}',
      '-pidfile',
      '{run}/qemu.pid',
      '-blockdev',
      'driver=file,filename={vm}/disk.qcow2,node-name=disk0-file',
      '-kernel',
      '/var/lib/goship/images/default/vmlinuz',
      '-accel',
      'tcg',
      '-m',
      'size=1024M',
      '-netdev',
      'user,id=net0',
    ]);
    // A directory with a comma is doubled in QEMU's options: the placeholder still replaces it.
    expect(argvShape(['file=/h,x/vms/a/disk.qcow2'.replace('/h,x', '/h,,x')], { ...own, vmDir: '/h,x/vms/a' })).toEqual(['file={vm}/disk.qcow2']);
  });

  const record: TemplateRecord = {
    format: 2,
    name: 'default-1c-1024m-10240m',
    image: 'default',
    imageKey: 'a'.repeat(64),
    qemuVersion: '7.2.22',
    cpus: 1,
    memoryBytes: GiB,
    diskBytes: 10 * GiB,
    argvShape: [],
    stateBytes: 1000,
    createdAt: '2026-12-07T00:00:00.000Z',
    bootMs: 60_000,
    saveMs: 2000,
  };
  const want = { image: 'default', cpus: 1, memoryBytes: GiB, diskBytes: 10 * GiB, imageKey: 'a'.repeat(64), qemuVersion: '7.2.22' };
  it.each([
    [{}, undefined],
    [{ image: 'tools' }, 'it is of image default'],
    [{ imageKey: 'b'.repeat(64) }, 'image default was built again since (template aaaaaaaaaaaa, image bbbbbbbbbbbb)'],
    [{ imageKey: undefined }, 'image default was built again since (template aaaaaaaaaaaa, image unknown)'],
    [{ qemuVersion: '8.2.0' }, 'it was saved by QEMU 7.2.22, this is QEMU 8.2.0'],
    [{ cpus: 2 }, 'it is of another size'],
    [{ memoryBytes: 2 * GiB }, 'it is of another size'],
    [{ diskBytes: 5 * GiB }, 'its disk is bigger than the one asked for'],
    [{ diskBytes: 20 * GiB }, undefined],
  ])('a template against %j: %s', (change, reason) => {
    expect(templateMismatch(record, { ...want, ...change })).toBe(reason);
  });

  it("picks the template of the exact size, else the biggest disk not bigger than the one asked for, of the same image, cpus and memory", () => {
    const names = ['default-1c-1024m-10240m', 'default-1c-1024m-4096m', 'default-1c-1024m-40960m', 'default-2c-1024m-10240m', 'default-1c-2048m-10240m', 'tools-1c-1024m-10240m', 'default-1c-1024m-x'];
    const want = (diskBytes: number) => ({ image: 'default', cpus: 1, memoryBytes: GiB, diskBytes });
    expect(pickTemplateName(names, want(10 * GiB))).toBe('default-1c-1024m-10240m');
    expect(pickTemplateName(names, want(20 * GiB))).toBe('default-1c-1024m-10240m');
    expect(pickTemplateName(names, want(8 * GiB))).toBe('default-1c-1024m-4096m');
    expect(pickTemplateName(names, want(100 * GiB))).toBe('default-1c-1024m-40960m');
    expect(pickTemplateName(names, want(2 * GiB))).toBeUndefined();
    expect(pickTemplateName(names, { image: 'default', cpus: 4, memoryBytes: GiB, diskBytes: 10 * GiB })).toBeUndefined();
    // "default-1" must not pick "default-1c-…" of another image named like a prefix.
    expect(pickTemplateName(['default-1-1c-1024m-10240m'], { image: 'default', cpus: 1, memoryBytes: GiB, diskBytes: 10 * GiB })).toBeUndefined();
  });

  it("grows a clone's root file system by a fixed script whose one argument is the size in sectors", () => {
    expect(growArgv(20 * GiB)).toEqual(['/bin/sh', '-c', GROW_SCRIPT, 'goship-grow', String((20 * GiB) / 512)]);
    expect(GROW_SCRIPT).toContain('resize2fs "$dev"');
  });

  it('passes every value of the identity on stdin to a fixed program, hex-encoded one per line', () => {
    const input = identityInput({
      hostname: 'web',
      sshKeys: ['ssh-ed25519 AAAA one ', 'ssh-rsa BBBB two'],
      seed: Buffer.alloc(4, 0xab),
      machineId: '0123',
      nowMs: 1_700_000_000_999.5,
      hostKeys: [{ type: 'ed25519', privateKey: 'P\n', publicKey: 'ssh-ed25519 Q\n' }],
    });
    const hex = (t: string) => Buffer.from(t).toString('hex');
    expect(input.toString()).toBe(
      [
        'seed=abababab',
        `now=${hex('1700000000999')}`,
        `machine_id=${hex('0123')}`,
        `hostname=${hex('web')}`,
        `user=${hex('goship')}`,
        `authorized_keys=${hex('ssh-ed25519 AAAA one\nssh-rsa BBBB two\n')}`,
        `host_key_types=${hex('ed25519')}`,
        `ed25519_key=${hex('P\n')}`,
        `ed25519_key_pub=${hex('ssh-ed25519 Q\n')}`,
        '',
      ].join('\n'),
    );
    // Nothing of the identity is in the argv (any process in the guest can read another's).
    expect(IDENTITY_ARGV).toEqual(['perl', '-e', IDENTITY_PERL]);
    expect(IDENTITY_PERL).toContain("exec('systemctl', 'restart', 'systemd-journald.service')");
  });
});

describe("a clone's identity step when the guest cannot run it", () => {
  const track = () => bootTrack(Date.now());
  it('names a guest without perl, and says to boot instead', async () => {
    const agent = { exec: () => Promise.reject(Object.assign(new Error('spawn perl ENOENT'), { remoteCode: 'ENOENT' })) };
    await expect(giveIdentity(agent, { name: 'web', hostname: 'web', sshKeys: [], track: track() })).rejects.toMatchObject({
      message: 'VM web: the clone could not be given its identity: the guest has no perl (the identity step runs it; Debian has it in perl-base)',
      hint: 'create it from the image instead: goshipctl project create web --cold',
    });
  });

  it("gives the program's input on stdin and reports its last line of error when it fails", async () => {
    let stdin: unknown;
    const agent = {
      exec: (_argv: string[], o: { stdin?: unknown; stderr?: NodeJS.WritableStream }) => {
        stdin = o.stdin;
        o.stderr?.write('sethostname: Operation not permitted\n');
        return Promise.resolve({ exitCode: 2, signal: null, timedOut: false });
      },
    };
    await expect(giveIdentity(agent as never, { name: 'web', hostname: 'web', sshKeys: [], track: track() })).rejects.toThrow(/could not be given its identity: .*sethostname: Operation not permitted/);
    expect(String(stdin)).toMatch(/^seed=[0-9a-f]{128}\nnow=/);
  });
});
