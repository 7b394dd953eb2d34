/**
 * A template's guest memory, shared copy-on-write between its clones.
 *
 * The template's VM ran with its RAM in a file mapped shared (its saved state
 * then holds no RAM: `x-ignore-shared`); that file is copied, zero pages left
 * as holes, into the template's directory. A clone's QEMU maps it privately,
 * so every page it has not written stays one page in the host for all
 * clones. QEMU 7.2 opens a memory file read-write even to map it privately,
 * and a jailed QEMU that could write the file its siblings map could change
 * their memory. So a clone gets no file: it inherits a **sealed memfd**
 * (`memfd_create` + `F_SEAL_WRITE|SHRINK|GROW|SEAL`), filled from the file by
 * a small Perl program (Node has neither `memfd_create` nor `F_ADD_SEALS`;
 * Perl is essential in Debian) and then unchangeable by anyone: a write, a
 * truncate, a hole punched and a shared writable map all fail with EPERM,
 * through any descriptor and any `/proc/PID/fd` path, while a private
 * mapping works.
 *
 * The monitor of each clone holds the memfd as long as its QEMU runs, and
 * says so in the run directory's registry (root's, owner-only); the next
 * clone's monitor opens a live holder's memfd through `/proc/PID/fd/N` and
 * takes it only if its inode (device and number) and size are the ones
 * recorded when it was sealed. A memfd's inode lives as long as someone holds
 * it, and a sealed one can never change: the same inode is the same memory.
 */
import { spawn } from 'node:child_process';
import { closeSync, fstatSync, openSync } from 'node:fs';
import { mkdir, readdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import * as v from 'valibot';
import { VmStateError } from './errors.ts';

const PERL = '/usr/bin/perl';

/**
 * Copies guest memory from a file (opened without following a link; a
 * regular file of exactly BYTES) to a new file (`copy`, made 0600, never an
 * existing one) or to a new memfd that it then seals (`memfd`: it prints
 * `ready FD SEALS` and holds the memfd until its stdin closes). Only the
 * file's data extents are read, and only non-zero 4 KiB pages are written:
 * zero pages stay holes. A constant; every value is an argument.
 */
const MEMORY_SCRIPT = String.raw`use strict; use warnings; use IO::Handle;
use Fcntl qw(O_RDONLY O_WRONLY O_CREAT O_EXCL O_NOFOLLOW);
my ($mode, $src, $bytes, $dest) = @ARGV;
$bytes =~ /^[0-9]+$/ or die "bad size $bytes\n";
sysopen(my $in, $src, O_RDONLY | O_NOFOLLOW) or die "$src: $!\n";
-f $in or die "$src: not a regular file\n";
my $size = (stat $in)[7];
$size == $bytes or die "$src: $size bytes, not the $bytes of the guest's memory\n";
my ($out, $fd);
if ($mode eq 'memfd') {
  $fd = syscall(319, $dest, 2);   # memfd_create(NAME, MFD_ALLOW_SEALING), x86_64
  $fd >= 0 or die "memfd_create: $!\n";
  open($out, '+<&=', $fd) or die "memfd: $!\n";
} elsif ($mode eq 'copy') {
  sysopen($out, $dest, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW, 0600) or die "$dest: $!\n";
} else {
  die "mode $mode: copy or memfd\n";
}
truncate($out, $bytes) or die "truncate: $!\n";
my $page = 4096; my $zero = "\0" x $page; my $at = 0;
while ($at < $bytes) {
  my $data = sysseek($in, $at, 3);   # SEEK_DATA; undef (ENXIO): no data from here on
  last unless defined $data;
  my $hole = sysseek($in, $data, 4) // $bytes;   # SEEK_HOLE
  $hole = $bytes if $hole > $bytes;
  for (my $o = $data; $o < $hole; $o += 1 << 20) {
    my $want = $hole - $o < 1 << 20 ? $hole - $o : 1 << 20;
    my $buf = '';
    defined sysseek($in, $o, 0) or die "$src: seek: $!\n";
    while (length($buf) < $want) {
      my $n = sysread($in, $buf, $want - length($buf), length($buf));
      defined $n or die "$src: $!\n";
      $n > 0 or die "$src: ended early\n";
    }
    for (my $p = 0; $p < $want; $p += $page) {
      my $pg = substr($buf, $p, $page);
      next if $pg eq substr($zero, 0, length $pg);
      defined sysseek($out, $o + $p, 0) or die "seek: $!\n";
      syswrite($out, $pg) == length $pg or die "write: $!\n";
    }
  }
  $at = $hole;
}
if ($mode eq 'copy') {
  $out->sync or die "$dest: fsync: $!\n";
  print "done\n";
  exit 0;
}
fcntl($out, 1033, 15) or die "F_ADD_SEALS: $!\n";   # F_SEAL_SEAL | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE
my $seals = fcntl($out, 1034, 0);                  # F_GET_SEALS
defined $seals or die "F_GET_SEALS: $!\n";
STDOUT->autoflush(1);
print "ready $fd ", $seals + 0, "\n";
my $eof = <STDIN>;
`;

/** What a memfd's seals must be: write, shrink, grow, and no more seals (no seal can be taken off). */
const SEALS = 15;

/** A sealed memfd of guest memory, open in this process. */
export interface SealedMemory {
  fd: number;
  dev: number;
  ino: number;
  bytes: number;
}

/** Runs MEMORY_SCRIPT; `onLine` sees its stdout lines, and what it returns ends its stdin (nothing: at once). */
function runScript(args: string[], onLine: (line: string, pid: number) => void): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(PERL, ['-e', MEMORY_SCRIPT, ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
    let said = '';
    child.stderr.on('data', (b: Buffer) => (said = (said + b.toString('utf8')).slice(-2000)));
    child.once('error', reject);
    createInterface({ input: child.stdout }).on('line', (line) => {
      try {
        onLine(line, child.pid ?? 0);
      } catch (err) {
        child.kill('SIGKILL');
        reject(err);
      }
      child.stdin.end();
    });
    child.once('close', (code, signal) => {
      if (code === 0) resolve();
      else reject(new VmStateError(`${PERL} could not copy the guest's memory (${signal ?? `exit ${code}`}): ${said.trim() || 'it said nothing'}`));
    });
  });
}

/** Copies a guest memory file of `bytes` to a new file `dest` (0600), zero pages left as holes. `src` must not be a link. */
export async function copyMemoryFile(src: string, dest: string, bytes: number): Promise<void> {
  await runScript(['copy', src, String(bytes), dest], () => undefined);
}

/** A new sealed memfd with the contents of the memory file `src` (exactly `bytes`), open read-only in this process. */
export async function sealMemory(src: string, bytes: number, name: string): Promise<SealedMemory> {
  let held: SealedMemory | undefined;
  await runScript(['memfd', src, String(bytes), name], (line, pid) => {
    const m = /^ready ([0-9]+) ([0-9]+)$/.exec(line);
    if (!m) throw new VmStateError(`${PERL} said ${JSON.stringify(line.slice(0, 200))}, not that the memory is ready`);
    if (Number(m[2]) !== SEALS) throw new VmStateError(`the memfd of ${src} has seals ${m[2]}, not ${SEALS}`);
    held = openHeld(`/proc/${pid}/fd/${m[1]}`);
  });
  if (!held) throw new VmStateError(`${PERL} ended before the memory of ${src} was ready`);
  if (held.bytes !== bytes) {
    closeSync(held.fd);
    throw new VmStateError(`the memfd of ${src} is ${held.bytes} bytes, not ${bytes}`);
  }
  return held;
}

function openHeld(path: string): SealedMemory {
  const fd = openSync(path, 'r');
  const st = fstatSync(fd);
  return { fd, dev: st.dev, ino: st.ino, bytes: st.size };
}

const HolderSchema = v.object({
  pid: v.pipe(v.number(), v.integer(), v.minValue(1)),
  fd: v.pipe(v.number(), v.integer(), v.minValue(0)),
  dev: v.number(),
  ino: v.number(),
  bytes: v.pipe(v.number(), v.integer(), v.minValue(1)),
});

/** A template's memory held for one clone's QEMU: `release` once that QEMU is gone. */
export interface HeldMemory extends SealedMemory {
  /** Taken from another clone's monitor (shared), or sealed for this one. */
  from: 'holder' | 'file';
  release(): Promise<void>;
}

export interface HoldMemoryOptions {
  /** The registry of holders of this template's memory: a directory only GoShip can write (in its run directory). */
  registry: string;
  /** The template's memory file. */
  file: string;
  bytes: number;
  /** The memfd's name, as /proc/PID/maps shows it (`/memfd:NAME (deleted)`). */
  name: string;
  /** `--private-memory`: a memfd of this clone's own, neither taken from nor offered to another. */
  private?: boolean;
}

/**
 * The template's memory for a clone: a live holder's memfd when there is one
 * whose inode is the recorded one, else a new sealed memfd from the file,
 * recorded as this process's (unless private). Entries of dead holders go.
 */
export async function holdMemory(o: HoldMemoryOptions): Promise<HeldMemory> {
  const mine = join(o.registry, `${process.pid}.json`);
  if (!o.private) {
    await mkdir(o.registry, { recursive: true, mode: 0o700 });
    for (const e of await readdir(o.registry).catch(() => [] as string[])) {
      if (!/^[0-9]+\.json$/.test(e) || e === `${process.pid}.json`) continue;
      const entry = join(o.registry, e);
      const parsed = v.safeParse(HolderSchema, parseJson(await readFile(entry, 'utf8').catch(() => '')));
      if (!parsed.success) {
        await rm(entry, { force: true });
        continue;
      }
      const h = parsed.output;
      let held: SealedMemory | undefined;
      try {
        held = openHeld(`/proc/${h.pid}/fd/${h.fd}`);
      } catch {
        await rm(entry, { force: true }); // its holder is gone
        continue;
      }
      if (held.dev === h.dev && held.ino === h.ino && held.bytes === h.bytes && h.bytes === o.bytes) return recorded(held, 'holder', mine, o);
      closeSync(held.fd);
    }
  }
  const sealed = await sealMemory(o.file, o.bytes, o.name);
  return recorded(sealed, 'file', mine, o);
}

function parseJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

async function recorded(held: SealedMemory, from: HeldMemory['from'], entry: string, o: HoldMemoryOptions): Promise<HeldMemory> {
  if (!o.private) {
    const record: v.InferOutput<typeof HolderSchema> = { pid: process.pid, fd: held.fd, dev: held.dev, ino: held.ino, bytes: held.bytes };
    await writeFile(`${entry}.tmp`, JSON.stringify(record), { mode: 0o600 });
    await rename(`${entry}.tmp`, entry);
  }
  let released = false;
  return {
    ...held,
    from,
    release: async () => {
      if (released) return;
      released = true;
      if (!o.private) await rm(entry, { force: true });
      closeSync(held.fd);
    },
  };
}
