/**
 * Templates: a project VM booted once to a settled guest (agent ready, network
 * online, cloud-init done) and saved, so that `project create` restores it
 * (~1 s here) instead of booting (tens of seconds under TCG).
 *
 *   images/.templates/IMAGE-Nc-MEMm-DISKm.GENERATION/
 *     disk.qcow2      the guest's disk at the save, on the image's base: every clone's overlay stands on it
 *     memory          the guest's RAM at the save (sparse: zero pages are holes)
 *     state           QEMU's migration stream of the devices, RAM left out (`x-ignore-shared`, src/vmstate)
 *     template.json   what it was made from: a template of another image build or QEMU is never used
 *
 * A warm makes a new generation; an older one goes once no VM stands on its
 * disk (a clone's overlay names it as its backing file for its whole life).
 * In the image catalogue's directory, so the jail treats its files as it treats
 * an image's: read-only to every VM (the disk, 0644, root's), and the memory
 * and the state are not even that: only the monitors read them (0600).
 *
 * Memory: the warm VM's RAM is a file mapped shared; its clones map a sealed
 * memfd of it privately, copy on write, so that the pages a clone has not
 * written are one page for all of them (src/vmstate/memory.ts).
 */
import { randomBytes } from 'node:crypto';
import { chmod, chown, lstat, mkdir, readdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import * as v from 'valibot';
import { DEFAULT_USER } from '../cloudinit/index.ts';
import { IMAGE_HOSTNAME } from '../image/index.ts';
export { IMAGE_HOSTNAME };
import { FILES, type Layout } from '../layout.ts';
import { FIRST_DISK_NODE, formatSize, readQemuVersion } from '../qemu/index.ts';
import { checkStateFile, copyMemoryFile, VmStateError } from '../vmstate/index.ts';
import { saveVm } from './saved-state.ts';
import { checkChain } from './jail.ts';
import { trace } from './trace.ts';
import { RuntimeError } from './errors.ts';
import { failureLine, tailCollector } from './bounded.ts';
import { newHostKeys, type HostKeyFiles } from './host-keys.ts';
import type { BootTrack } from './guest-boot.ts';
import type { AgentClient } from '../serial/index.ts';
import type { Vm } from '../store/index.ts';

/** Bump when what a template holds, or the VM it is restored into, changes shape. */
export const TEMPLATE_FORMAT = 2;
export const TEMPLATES_DIR = '.templates';
const RECORD = 'template.json';
const DISK = 'disk.qcow2';
const STATE = 'state';
const MEMORY = 'memory';

export const TemplateRecordSchema = v.object({
  format: v.literal(TEMPLATE_FORMAT),
  name: v.string(),
  image: v.string(),
  imageKey: v.string(),
  qemuVersion: v.string(),
  cpus: v.pipe(v.number(), v.integer(), v.minValue(1)),
  memoryBytes: v.pipe(v.number(), v.integer(), v.minValue(1)),
  diskBytes: v.pipe(v.number(), v.integer(), v.minValue(1)),
  /** The argv of the VM it was saved from, its own paths and name as placeholders (argvShape): a clone's must be the same. */
  argvShape: v.array(v.string()),
  stateBytes: v.pipe(v.number(), v.integer(), v.minValue(1)),
  createdAt: v.string(),
  /** How long the boot to a settled guest and the save took. */
  bootMs: v.number(),
  saveMs: v.number(),
});
export type TemplateRecord = v.InferOutput<typeof TemplateRecordSchema>;

export interface TemplateInfo extends TemplateRecord {
  dir: string;
  disk: string;
  state: string;
  memory: string;
  /** The disk layer, the memory and the state on disk (the memory's holes left out). */
  sizeBytes: number;
  /** The key of its memory's holders (the generation's directory name). */
  memoryKey: string;
}

/** What a template is for: one per image and VM size. */
export interface TemplateShape {
  image: string;
  cpus: number;
  memoryBytes: number;
  diskBytes: number;
}

const MiB = 1024 * 1024;

/** Pure: the template's directory name, e.g. `default-1c-1024m-10240m`. */
export function templateName(s: TemplateShape): string {
  return `${s.image}-${s.cpus}c-${Math.round(s.memoryBytes / MiB)}m-${Math.round(s.diskBytes / MiB)}m`;
}

export function templatesDir(layout: Layout): string {
  return join(layout.imagesDir, TEMPLATES_DIR);
}

/**
 * Pure: a VM's argv with what is its own (its directory, run directory, name)
 * as placeholders, and its port forwards and TCG's `tb-size` left out (the
 * host's side, not the guest's): two VMs with the same shape have the same
 * devices, and one can be restored from the other's state.
 */
export function argvShape(argv: readonly string[], own: { vmDir: string; runDir: string; name: string; id: string }): string[] {
  const dirs = [own.vmDir, own.runDir].map((d) => d.replaceAll(',', ',,'));
  return argv.map((a, i) => {
    let s = a.replaceAll(`${dirs[0]}/`, '{vm}/').replaceAll(`${dirs[1]}/`, '{run}/');
    if (s.startsWith('guest=')) s = s.replace(`guest=${own.name},`, 'guest={name},').replace(`process=goship-${own.id}`, 'process=goship-{id}');
    if (argv[i - 1] === '-netdev' && s.startsWith('user,')) s = s.replace(/,hostfwd=[^,]*/g, '');
    // TCG's translation buffer holds host code only: a state saved under another size restores.
    if (argv[i - 1] === '-accel') s = s.replace(/,tb-size=[^,]*/, '');
    return s;
  });
}

/** Pure: why `t` cannot serve a VM of this shape on this image build and QEMU, or undefined when it can. */
export function templateMismatch(t: TemplateRecord, want: TemplateShape & { imageKey: string | undefined; qemuVersion: string }): string | undefined {
  if (t.image !== want.image) return `it is of image ${t.image}`;
  if (want.imageKey === undefined || t.imageKey !== want.imageKey) return `image ${want.image} was built again since (template ${t.imageKey.slice(0, 12)}, image ${(want.imageKey ?? 'unknown').slice(0, 12)})`;
  if (t.qemuVersion !== want.qemuVersion) return `it was saved by QEMU ${t.qemuVersion}, this is QEMU ${want.qemuVersion}`;
  if (t.cpus !== want.cpus || t.memoryBytes !== want.memoryBytes) return 'it is of another size';
  // A clone's disk grows after its restore (growDisk); it never shrinks.
  if (t.diskBytes > want.diskBytes) return 'its disk is bigger than the one asked for';
  return undefined;
}

/**
 * Pure: of the template names on this host, the one that serves `want`: its
 * exact size, else the one of the same image, cpus and memory with the
 * biggest disk that is not bigger than the one asked for (the clone's disk
 * grows after its restore). Undefined when none does.
 */
export function pickTemplateName(names: readonly string[], want: TemplateShape): string | undefined {
  const exact = templateName(want);
  if (names.includes(exact)) return exact;
  const prefix = exact.slice(0, exact.lastIndexOf('-') + 1);
  const wantMiB = Math.round(want.diskBytes / MiB);
  return names
    .map((n) => ({ n, disk: n.startsWith(prefix) && /^[0-9]+m$/.test(n.slice(prefix.length)) ? parseInt(n.slice(prefix.length), 10) : NaN }))
    .filter((x) => x.disk <= wantMiB)
    .sort((a, b) => b.disk - a.disk)[0]?.n;
}

/**
 * What grows a clone's root file system once its disk grew under it
 * (`block_resize` through QMP): waits until the guest's kernel sees the new
 * size (the virtio config change arrives on its own time), then resize2fs
 * online. A fixed text: the size, in 512-byte sectors, is its one argument.
 */
export const GROW_SCRIPT = `set -eu
want=$1
dev=$(findmnt -n -o SOURCE /)
sys=/sys/class/block/\${dev##*/}/size
i=0
while [ "$(cat "$sys")" -lt "$want" ]; do
  i=$((i + 1))
  if [ "$i" -gt 200 ]; then echo "the guest's kernel still sees $(cat "$sys") sectors of $dev, not $want" >&2; exit 1; fi
  sleep 0.05
done
out=$(resize2fs "$dev" 2>&1) || { printf '%s\\n' "$out" >&2; exit 1; }
`;

/** Pure: the argv that grows a clone's root file system to a disk of `diskBytes` (GROW_SCRIPT). */
export function growArgv(diskBytes: number): string[] {
  return ['/bin/sh', '-c', GROW_SCRIPT, 'goship-grow', String(Math.floor(diskBytes / 512))];
}

/**
 * The first act of a clone, in its guest, before anything else runs: the
 * kernel's random generator reseeded from host entropy, the clock set from the
 * host, and an identity of its own (machine id, host name, SSH host keys made
 * on the host, the user's keys), journald restarted last to write under the
 * new machine id. One Perl program reading its values from stdin (never
 * argv, which any process in the guest can read): under TCG each program a
 * clone runs after its restore is code its QEMU translates and keeps, so the
 * step runs two (perl, then systemctl) instead of a shell's dozen.
 *
 * Each input line is `NAME=HEX` (identityInput). x86-64 system call
 * numbers: settimeofday 164, sethostname 170; RNDRESEEDCRNG is _IO('R', 7).
 * OpenSSH's sshd before 9.8 reads its host keys at each connection; a newer
 * one (with `sshd-session`) is reloaded.
 */
export const IDENTITY_PERL = `use strict;
use warnings;
use Fcntl qw(O_WRONLY O_CREAT O_EXCL O_NOFOLLOW);
my %v;
while (my $line = <STDIN>) {
  chomp $line;
  my ($k, $hex) = split /=/, $line, 2;
  $v{$k} = pack('H*', $hex // '');
}
sub value { my ($k) = @_; defined $v{$k} or die "no $k in the input\\n"; return $v{$k}; }
# Written whole beside the file, then renamed over it: never half a file, never through a link.
sub put {
  my ($path, $mode, $text, $uid, $gid) = @_;
  my $tmp = "$path.goship-new";
  unlink $tmp;
  sysopen(my $f, $tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW, $mode) or die "$tmp: $!\\n";
  print {$f} $text or die "$tmp: $!\\n";
  close $f or die "$tmp: $!\\n";
  chmod $mode, $tmp or die "$tmp: $!\\n";
  if (defined $uid) { chown $uid, $gid, $tmp or die "$tmp: $!\\n"; }
  rename $tmp, $path or die "$path: $!\\n";
}
# Host entropy mixed into the pool, then the generator reseeded from it at once.
open(my $r, '>', '/dev/urandom') or die "/dev/urandom: $!\\n";
syswrite($r, value('seed')) or die "/dev/urandom: $!\\n";
ioctl($r, 0x5207, 0) or die "RNDRESEEDCRNG: $!\\n";
close $r;
my $ms = value('now');
syscall(164, pack('q q', int($ms / 1000), ($ms % 1000) * 1000), 0) == 0 or die "settimeofday: $!\\n";
put('/etc/machine-id', 0444, value('machine_id') . "\\n");
unlink '/var/lib/dbus/machine-id' if -f '/var/lib/dbus/machine-id' && !-l '/var/lib/dbus/machine-id';
my $name = value('hostname');
syscall(170, $name, length $name) == 0 or die "sethostname: $!\\n";
put('/etc/hostname', 0644, "$name\\n");
if (open(my $h, '<', '/etc/hosts')) {
  local $/;
  my $hosts = <$h>;
  close $h;
  $hosts =~ s/^127\\.0\\.1\\.1[ \\t].*$/127.0.1.1\\t$name/mg;
  put('/etc/hosts', 0644, $hosts);
}
if (-d '/etc/ssh') {
  unlink glob('/etc/ssh/ssh_host_*_key /etc/ssh/ssh_host_*_key.pub');
  for my $t (split / /, value('host_key_types')) {
    put("/etc/ssh/ssh_host_\${t}_key", 0600, value("\${t}_key"));
    put("/etc/ssh/ssh_host_\${t}_key.pub", 0644, value("\${t}_key_pub"));
  }
  if (grep { -e } '/usr/lib/openssh/sshd-session', '/usr/libexec/openssh/sshd-session') {
    system('systemctl', '--quiet', 'try-reload-or-restart', 'ssh.service', 'sshd.service');
  }
}
my $user = value('user');
my (undef, undef, $uid, $gid, undef, undef, undef, $home) = getpwnam($user) or die "no user $user in the guest\\n";
my $dir = "$home/.ssh";
-l $dir and die "$dir is a link\\n";
mkdir $dir, 0700 unless -d $dir;
chown $uid, $gid, $dir or die "$dir: $!\\n";
chmod 0700, $dir or die "$dir: $!\\n";
put("$dir/authorized_keys", 0600, value('authorized_keys'), $uid, $gid);
# journald names its files by the machine id it read at its start: restarted, it writes under the new one
# (the services' log streams wait in systemd's fd store meanwhile), and journalctl shows the clone's entries.
exec('systemctl', 'restart', 'systemd-journald.service') or die "systemctl: $!\\n";
`;

/** The argv of the identity step (IDENTITY_PERL); its values go to stdin (identityInput). */
export const IDENTITY_ARGV = ['perl', '-e', IDENTITY_PERL] as const;

/** What a clone is given. */
interface CloneIdentity {
  hostname: string;
  sshKeys: readonly string[];
  seed: Buffer;
  machineId: string;
  nowMs: number;
  hostKeys: readonly HostKeyFiles[];
  user?: string;
}

/** Pure: IDENTITY_PERL's input, one `NAME=HEX` line per value. */
export function identityInput(o: CloneIdentity): Buffer {
  const fields: Array<[string, string | Buffer]> = [
    ['seed', o.seed],
    ['now', String(Math.floor(o.nowMs))],
    ['machine_id', o.machineId],
    ['hostname', o.hostname],
    ['user', o.user ?? DEFAULT_USER],
    ['authorized_keys', o.sshKeys.map((k) => `${k.trim()}\n`).join('')],
    ['host_key_types', o.hostKeys.map((k) => k.type).join(' ')],
    ...o.hostKeys.flatMap((k): Array<[string, string]> => [
      [`${k.type}_key`, k.privateKey],
      [`${k.type}_key_pub`, k.publicKey],
    ]),
  ];
  return Buffer.from(fields.map(([k, v]) => `${k}=${Buffer.from(v).toString('hex')}\n`).join(''));
}

/** The generations of template `name`, newest first (directory names). */
async function generations(layout: Layout, name: string): Promise<string[]> {
  const entries = await readdir(templatesDir(layout)).catch(() => [] as string[]);
  const re = new RegExp(`^${name.replace(/[^a-z0-9]/g, (c) => `\\${c}`)}\\.([0-9a-z]+)$`);
  return entries
    .map((e) => ({ e, m: re.exec(e) }))
    .filter((x) => x.m !== null)
    .sort((a, b) => parseInt(b.m![1]!, 36) - parseInt(a.m![1]!, 36))
    .map((x) => x.e);
}

/** The names of the templates on this host (each has one or more generations), sorted. */
async function templateNames(layout: Layout): Promise<string[]> {
  const entries = await readdir(templatesDir(layout)).catch(() => [] as string[]);
  return [...new Set(entries.map((e) => /^([a-z0-9][a-z0-9-]*)\.[0-9a-z]+$/.exec(e)?.[1]).filter((n): n is string => n !== undefined))].sort();
}

/** Reads the newest generation of a template; undefined when there is none. A record that does not parse is an error. */
export async function readTemplate(layout: Layout, name: string): Promise<TemplateInfo | undefined> {
  const newest = (await generations(layout, name))[0];
  if (newest === undefined) return undefined;
  const dir = join(templatesDir(layout), newest);
  let text: string;
  try {
    text = await readFile(join(dir, RECORD), 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
  const parsed = v.safeParse(TemplateRecordSchema, JSON.parse(text));
  if (!parsed.success) throw new VmStateError(`template ${name}: ${join(dir, RECORD)} is not a template record of this GoShip`, { hint: `warm it again: goshipctl image warm ${name.split('-')[0] ?? ''}` });
  const disk = join(dir, DISK);
  const state = join(dir, STATE);
  const memory = join(dir, MEMORY);
  const sizes = await Promise.all([disk, state, memory].map(async (f) => (await stat(f).catch(() => undefined))?.blocks ?? 0));
  return { ...parsed.output, dir, disk, state, memory, memoryKey: newest, sizeBytes: sizes.reduce((a, b) => a + b * 512, 0) };
}

/** The template for this shape when it can serve it; otherwise why not. */
export async function usableTemplate(
  layout: Layout,
  want: TemplateShape & { imageKey: string | undefined; qemuBinary: string },
): Promise<{ template: TemplateInfo } | { reason: string }> {
  const name = pickTemplateName(await templateNames(layout), want) ?? templateName(want);
  let t: TemplateInfo | undefined;
  try {
    t = await readTemplate(layout, name);
  } catch (err) {
    return { reason: (err as Error).message };
  }
  if (!t) return { reason: `no template ${name} (goshipctl image warm ${want.image}${want.cpus !== 1 ? ` --cpus ${want.cpus}` : ''} …)` };
  const qemu = await readQemuVersion(want.qemuBinary);
  const mismatch = templateMismatch(t, { ...want, qemuVersion: qemu.version });
  if (mismatch) return { reason: `template ${name} is not used: ${mismatch}` };
  try {
    await checkStateFile(t.state, t.stateBytes);
  } catch (err) {
    return { reason: `template ${name} is not used: ${(err as Error).message}` };
  }
  const memory = await lstat(t.memory).catch(() => undefined);
  if (!memory?.isFile() || memory.size !== t.memoryBytes) {
    return { reason: `template ${name} is not used: its memory ${t.memory} is ${memory ? (memory.isFile() ? `${memory.size} bytes, not ${t.memoryBytes}` : 'not a file') : 'missing'}` };
  }
  return { template: t };
}

/** What `saveTemplate` needs of the VM it turns into a template (booted, settled, running). */
export interface TemplateSource {
  layout: Layout;
  vm: Vm;
  shape: TemplateShape;
  imageKey: string;
  qemuBinary: string;
  bootMs: number;
  /** Stops the VM's QEMU (through its monitor) once its state is saved. */
  stopVm: () => Promise<void>;
  /** Whether a VM stands on a file in `dir` (an older generation stays while one does). */
  inUse: (dir: string) => Promise<boolean>;
}

/**
 * Saves the running VM as the template of its shape: pauses it, saves its
 * state, stops it, and takes its overlay as the template's disk (checked to
 * stand on the image's base, then root's and read-only). The template
 * replaces an earlier one of the same shape only once it is whole.
 */
export async function saveTemplate(s: TemplateSource): Promise<TemplateInfo> {
  const { layout, vm } = s;
  const name = templateName(s.shape);
  const parent = templatesDir(layout);
  await mkdir(parent, { recursive: true, mode: 0o711 });
  await chmod(parent, 0o711);
  const work = join(parent, `.warm-${process.pid}-${randomBytes(4).toString('hex')}`);
  await mkdir(work, { mode: 0o711 });
  try {
    const saved = await saveVm(layout, vm, { file: join(work, STATE), memoryBytes: s.shape.memoryBytes, pause: true, ignoreShared: true });
    trace(`template ${name}: state saved, ${saved.bytes} bytes in ${Math.round(saved.ms)} ms`);
    await s.stopVm();
    // The VM's RAM, written by its QEMU: copied (never a link followed, zero pages left as holes), root's and owner-only.
    await copyMemoryFile(join(vm.paths.dir, FILES.sharedRam), join(work, MEMORY), s.shape.memoryBytes);
    trace(`template ${name}: memory copied`);
    // The overlay was the VM's own (its QEMU could write its header): it must name exactly the image's base.
    await checkChain(layout, vm);
    await rename(vm.paths.overlay!, join(work, DISK));
    await chown(join(work, DISK), 0, 0).catch(() => undefined);
    await chmod(join(work, DISK), 0o644);
    const record: TemplateRecord = {
      format: TEMPLATE_FORMAT,
      name,
      image: s.shape.image,
      imageKey: s.imageKey,
      qemuVersion: (await readQemuVersion(s.qemuBinary)).version,
      cpus: s.shape.cpus,
      memoryBytes: s.shape.memoryBytes,
      diskBytes: s.shape.diskBytes,
      argvShape: argvShape(vm.argv ?? [], { vmDir: vm.paths.dir, runDir: layout.vmRunDir(vm.id), name: vm.name, id: vm.id }),
      stateBytes: saved.bytes,
      createdAt: new Date().toISOString(),
      bootMs: s.bootMs,
      saveMs: Math.round(saved.ms),
    };
    await writeFile(join(work, RECORD), `${JSON.stringify(record, null, 2)}\n`, { mode: 0o644 });
    const older = await generations(layout, name);
    await rename(work, join(parent, `${name}.${Date.now().toString(36)}`));
    for (const g of older) {
      const dir = join(parent, g);
      if (!(await s.inUse(dir))) await rm(dir, { recursive: true, force: true });
    }
    const info = await readTemplate(layout, name);
    if (!info) throw new VmStateError(`template ${name} vanished after it was saved`);
    return info;
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

/** Gives a restored clone its identity through its agent (IDENTITY_PERL); the step goes to `o.track`. */
export async function giveIdentity(
  agent: Pick<AgentClient, 'exec'>,
  o: { name: string; hostname: string; sshKeys: readonly string[]; track: BootTrack },
): Promise<void> {
  o.track.waiting('identity');
  const said = tailCollector(4096);
  const input = identityInput({ hostname: o.hostname, sshKeys: o.sshKeys, seed: randomBytes(64), machineId: randomBytes(16).toString('hex'), nowMs: Date.now(), hostKeys: newHostKeys(o.hostname) });
  const failed = (why: string) =>
    new RuntimeError('EGUEST_BOOT', `VM ${o.name}: the clone could not be given its identity: ${why}`, { hint: `create it from the image instead: goshipctl project create ${o.name} --cold` });
  let r: Awaited<ReturnType<AgentClient['exec']>>;
  try {
    r = await agent.exec([...IDENTITY_ARGV], { stdin: input, stdout: said.stream, stderr: said.stream, timeoutMs: 60_000 });
  } catch (err) {
    if ((err as { remoteCode?: string }).remoteCode === 'ENOENT') throw failed('the guest has no perl (the identity step runs it; Debian has it in perl-base)');
    throw err;
  }
  if (r.exitCode !== 0) throw failed(failureLine(said.bytes(), r));
  o.track.reach('identity');
}

/**
 * Grows a clone's disk to `diskBytes` when its template's was smaller: QEMU's
 * view first (`block_resize` of the overlay, through the VM's monitor), then
 * the guest's root file system (GROW_SCRIPT); the step goes to `o.track`.
 */
export async function growDisk(
  o: { name: string; diskBytes: number; qmp: (execute: string, args: Record<string, unknown>) => Promise<unknown>; agent: Pick<AgentClient, 'exec'>; track: BootTrack },
): Promise<void> {
  o.track.waiting('disk');
  const failed = (why: string) =>
    new RuntimeError('EGUEST_BOOT', `VM ${o.name}: the clone's disk could not be grown to ${formatSize(o.diskBytes)}: ${why}`, { hint: `create it from the image instead: goshipctl project create ${o.name} --cold` });
  try {
    await o.qmp('block_resize', { 'node-name': FIRST_DISK_NODE, size: o.diskBytes });
  } catch (err) {
    throw failed((err as Error).message);
  }
  const said = tailCollector(4096);
  const r = await o.agent.exec(growArgv(o.diskBytes), { stdout: said.stream, stderr: said.stream, timeoutMs: 60_000 });
  if (r.exitCode !== 0) throw failed(failureLine(said.bytes(), r));
  o.track.reach('disk');
}

/** Every template (its newest generation), by name. */
export async function listTemplates(layout: Layout): Promise<TemplateInfo[]> {
  const out: TemplateInfo[] = [];
  for (const n of await templateNames(layout)) {
    const t = await readTemplate(layout, n).catch(() => undefined);
    if (t) out.push(t);
  }
  return out;
}

/** Removes every generation of every template of `image` (its image is gone: no VM stands on them, `image remove` checked). */
export async function removeTemplatesOf(layout: Layout, image: string): Promise<void> {
  const parent = templatesDir(layout);
  for (const e of await readdir(parent).catch(() => [] as string[])) {
    const record = await readFile(join(parent, e, RECORD), 'utf8').catch(() => undefined);
    const parsed = record === undefined ? undefined : v.safeParse(TemplateRecordSchema, JSON.parse(record));
    if (parsed?.success && parsed.output.image === image) await rm(join(parent, e), { recursive: true, force: true });
  }
}
