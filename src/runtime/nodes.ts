/**
 * Nodes: other hosts' GoShips, reached with the OpenSSH client (src/nodes).
 *
 * A remote node keeps its own store; this host records only the node (its
 * address, key, known_hosts, what it reported) and which projects were placed
 * there, so that a command on such a project is run by the node's own
 * goshipctl, over ssh, with the same arguments. ssh's connection sharing
 * (ControlMaster) keeps one login open for a minute, so a routed command
 * costs one channel, not one handshake.
 *
 * Nothing here rewrites a node's state: a node that cannot be reached fails
 * its own commands with ENODE_UNREACHABLE, naming the node and ssh's words;
 * the local store stays as it was.
 */
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdir, readFile, readdir, realpath, rm, stat, writeFile } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import type { Readable, Writable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import type { Issue } from '../errors.ts';
import { ValidationError } from '../errors.ts';
import { FILES, type Layout } from '../layout.ts';
import { nodeUrl, parseNodeUrl, sshArgv, sshFailure, sshForwardArgv, type NodeAddress } from '../nodes/index.ts';
import { PROTOCOL_VERSION } from '../protocol/index.ts';
import { NAME_PATTERN, NAME_RULE } from '../qemu/index.ts';
import { LOCAL_NODE, SCHEMA_VERSION, assertNameFree, decodeState, findRecord, requireRecord, type Node, type NodeReport, type Store } from '../store/index.ts';
import { RuntimeError } from './errors.ts';
import type { ProjectView } from './projects.ts';
import { listProbeFiles, parseGrepRecords, parseProbeGuess, remoteListViews, sameFiles } from './remote-list.ts';
import { trace } from './trace.ts';

/** goshipctl on a node, when `node add` is not told otherwise: the one on the login's PATH. */
export const DEFAULT_REMOTE_CLI: readonly string[] = ['goshipctl'];
/** Where `node add --install` puts this GoShip's bundles on the node (relative: the login's home directory). */
export const INSTALL_DIR = '.local/lib/goship';
/** The bundles `--install` copies (dist/). */
const BUNDLES = ['goshipctl.cjs', 'goshipctl-body.cjs', 'goship-monitor.cjs', 'goship-monitor-body.cjs', 'goship-agent.mjs'] as const;

export interface NodeView {
  name: string;
  url: string;
  /** Whether the node answered now (absent when not checked). */
  reachable?: boolean;
  /** Why not, when it did not, and what to do. */
  error?: string;
  hint?: string;
  report: NodeReport | null;
  projects: string[];
  /** The known_hosts file its host key is checked against, and the fingerprints GoShip recorded in it at node add. */
  knownHosts: string | null;
  hostKeys: string[];
}

export interface AddNodeOptions {
  name: string;
  url: string;
  identity?: string;
  knownHosts?: string;
  /** Copy this GoShip's bundles to the node and use them there. */
  install?: boolean;
  onProgress?: (line: string) => void;
}

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

export interface ForwardOptions {
  /** `argv` is a program on the node, not its goshipctl's arguments. */
  raw?: boolean;
  stdin?: Readable;
  stdout: Writable;
  stderr: Writable;
  signal?: AbortSignal;
}

/** dist/, beside this bundle (or the repository's, when run from sources). */
function distDir(): string {
  const here = dirname(fileURLToPath(import.meta.url));
  return basename(here) === 'dist' ? here : join(here, '..', '..', 'dist');
}

/** What one node said about our projects there: its rows (`node` set), or why it could not say. */
export interface RemoteRows {
  node: string;
  /** Our projects placed on it. */
  placed: string[];
  rows?: Array<Record<string, unknown>>;
  error?: string;
}

export class NodeService {
  constructor(private readonly ctx: { layout: Layout; store: Store; now: () => string }) {}

  /** ssh's shared-connection sockets live in GoShip's run directory (owner-only). */
  private async socketDir(): Promise<void> {
    await mkdir(this.ctx.layout.run, { recursive: true, mode: 0o700 });
  }

  /** The ssh argv for `remote` on `node`. */
  sshArgv(node: Node, remote: readonly string[], share = true): string[] {
    if (!node.address) throw new RuntimeError('EINVALID', `node ${node.name} has no address`);
    return sshArgv(
      node.address,
      {
        controlPath: join(this.ctx.layout.run, 'ssh-%C'),
        ...(node.identity !== undefined ? { identity: node.identity } : {}),
        ...(node.knownHosts !== undefined ? { knownHosts: node.knownHosts } : {}),
        ...(share ? {} : { share: false }),
        ...(this.#firstContact.has(node.name) ? { acceptNewHostKey: true } : {}),
      },
      remote,
    );
  }

  /** Nodes being added into GoShip's own known_hosts: their first connections record the host key. */
  readonly #firstContact = new Set<string>();

  /** GoShip's own known_hosts of a node added without --known-hosts: `HOME/nodes/NAME.known_hosts`. */
  ownKnownHosts(name: string): string {
    return join(this.ctx.layout.home, 'nodes', `${name}.known_hosts`);
  }

  /** The fingerprints (`ssh-keygen -lf`) of the host keys a known_hosts file holds. */
  async fingerprints(file: string): Promise<string[]> {
    const r = await new Promise<{ code: number; out: string }>((res) => {
      const c = spawn('ssh-keygen', ['-l', '-f', file], { stdio: ['ignore', 'pipe', 'ignore'] });
      let out = '';
      c.stdout.on('data', (d: Buffer) => (out += d.toString()));
      c.once('error', () => res({ code: 1, out: '' }));
      c.once('close', (code) => res({ code: code ?? 1, out }));
    });
    return r.code === 0 ? r.out.split('\n').filter(Boolean).map((l) => { const f = l.split(' '); return `${f.at(-1)} ${f[1]}`; }) : [];
  }

  /** ssh running `remote` on `node`; its stdin a pipe only when `stdin`. */
  private async ssh(node: Node, remote: readonly string[], stdin: boolean, share = true): Promise<ChildProcessWithoutNullStreams> {
    await this.socketDir();
    const [file, ...args] = this.sshArgv(node, remote, share) as [string, ...string[]];
    return spawn(file, args, { stdio: [stdin ? 'pipe' : 'ignore', 'pipe', 'pipe'] }) as ChildProcessWithoutNullStreams;
  }

  /** Runs the node's goshipctl with `argv`, its output captured. ssh's own failure (255) becomes ENODE_UNREACHABLE. */
  async run(node: Node, argv: readonly string[], o: { input?: Readable | Buffer; timeoutMs?: number; raw?: boolean; share?: boolean } = {}): Promise<RunResult> {
    const remote = o.raw ? [...argv] : [...(node.cli ?? DEFAULT_REMOTE_CLI), ...argv];
    const child = await this.ssh(node, remote, o.input !== undefined, o.share !== false);
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (c: Buffer) => out.push(c));
    child.stderr.on('data', (c: Buffer) => err.push(c));
    if (o.input && child.stdin) {
      child.stdin.on('error', () => undefined);
      if (Buffer.isBuffer(o.input)) child.stdin.end(o.input);
      else o.input.pipe(child.stdin);
    }
    const timer = o.timeoutMs ? setTimeout(() => child.kill('SIGKILL'), o.timeoutMs) : undefined;
    const code = await new Promise<number>((res, rej) => {
      child.once('error', rej);
      child.once('close', (c, signal) => res(c ?? (signal ? 255 : 1)));
    }).finally(() => clearTimeout(timer));
    const r = { code, stdout: Buffer.concat(out).toString('utf8'), stderr: Buffer.concat(err).toString('utf8') };
    if (r.code === 255) throw this.unreachable(node, r.stderr || `no answer within ${Math.round((o.timeoutMs ?? 0) / 1000)} s`);
    return r;
  }

  /**
   * Runs the node's goshipctl with `argv`, its stdin, stdout and stderr those
   * given (a command routed to the node as if it ran here): the exit code.
   */
  async forward(node: Node, argv: readonly string[], o: ForwardOptions): Promise<number> {
    const child = await this.ssh(node, o.raw ? [...argv] : [...(node.cli ?? DEFAULT_REMOTE_CLI), ...argv], o.stdin !== undefined);
    let tail = '';
    child.stderr.on('data', (c: Buffer) => {
      tail = (tail + c.toString('utf8')).slice(-4096);
      o.stderr.write(c);
    });
    child.stdout.pipe(o.stdout, { end: false });
    if (o.stdin && child.stdin) {
      child.stdin.on('error', () => undefined);
      o.stdin.pipe(child.stdin);
    }
    const onAbort = (): void => {
      child.kill('SIGTERM');
    };
    o.signal?.addEventListener('abort', onAbort, { once: true });
    const code = await new Promise<number>((res, rej) => {
      child.once('error', rej);
      child.once('close', (c, signal) => res(c ?? (signal === 'SIGTERM' ? 130 : 255)));
    }).finally(() => o.signal?.removeEventListener('abort', onAbort));
    if (code === 255) throw this.unreachable(node, tail);
    return code;
  }

  private unreachable(node: Node, stderr: string): RuntimeError {
    const f = sshFailure(stderr);
    const url = node.address ? nodeUrl(node.address) : node.name;
    const known = node.knownHosts ?? '~/.ssh/known_hosts';
    const where = node.address ? (node.address.port === 22 ? node.address.host : `[${node.address.host}]:${node.address.port}`) : node.name;
    const hint =
      f.kind === 'hostkey-changed'
        ? `the node's host key CHANGED since it was recorded in ${known}: a reinstalled node, or someone in between. Compare its key on the node (ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub) with the one recorded (ssh-keygen -lf ${known}); only if the change is expected: ssh-keygen -R '${where}' -f ${known}`
        : f.kind === 'hostkey'
        ? `the node's host key is not the one known: check it, then fix the known_hosts file${node.knownHosts ? ` ${node.knownHosts}` : ''}`
        : f.kind === 'auth'
          ? `ssh could not log in: is the key${node.identity ? ` ${node.identity}` : ''} in the node's authorized_keys?`
          : `is the node up and its sshd listening? try: ssh -p ${node.address?.port ?? 22} ${node.address?.user ?? ''}@${node.address?.host ?? ''}`;
    return new RuntimeError('ENODE_UNREACHABLE', `node ${node.name} (${url}): ${f.text || 'ssh failed'}`, { hint });
  }

  /** Asks the node for its versions and host, and checks it speaks this GoShip's protocol. */
  async check(node: Node, goship: string, share = true): Promise<NodeReport> {
    const v = await this.run(node, ['version', '--json'], { timeoutMs: 60_000, share });
    if (v.code !== 0) {
      throw new RuntimeError('ENODE_VERSION', `node ${node.name}: goshipctl did not run there (${(node.cli ?? DEFAULT_REMOTE_CLI).join(' ')}, exit ${v.code}): ${v.stderr.trim().split('\n').slice(-2).join(' ').slice(0, 300)}`, {
        hint: `install GoShip ${goship} on the node, or let this one do it: goshipctl node add ${node.name} ${node.address ? nodeUrl(node.address) : ''} --install`,
      });
    }
    let version: { goship?: string; protocol?: number; accel?: { accel?: string; reason?: string }; paths?: { home?: unknown } };
    try {
      version = JSON.parse(v.stdout) as typeof version;
    } catch {
      throw new RuntimeError('ENODE_VERSION', `node ${node.name}: goshipctl version --json printed something that is not JSON`, { hint: 'is the program on the node really goshipctl?' });
    }
    if (version.goship !== goship || version.protocol !== PROTOCOL_VERSION) {
      throw new RuntimeError('ENODE_VERSION', `node ${node.name} runs GoShip ${version.goship ?? '?'} (protocol ${version.protocol ?? '?'}); this is GoShip ${goship} (protocol ${PROTOCOL_VERSION})`, {
        hint: `install the same version on the node: goshipctl node add ${node.name} ${node.address ? nodeUrl(node.address) : ''} --install (again)`,
      });
    }
    const h = await this.run(node, ['host', '--json'], { timeoutMs: 60_000, share });
    const host = (h.code === 0 ? JSON.parse(h.stdout) : {}) as { cpu?: { logicalCpus?: number; online?: number[] }; memory?: { totalBytes?: number } };
    return {
      checkedAt: this.ctx.now(),
      goship: version.goship,
      protocol: version.protocol,
      accel: version.accel?.accel ?? '?',
      accelReason: version.accel?.reason ?? '',
      cpus: host.cpu?.logicalCpus ?? host.cpu?.online?.length ?? 0,
      memoryBytes: host.memory?.totalBytes ?? 0,
      // Used as one word of a command on the node and nothing else: absolute, one line.
      ...(typeof version.paths?.home === 'string' && /^\/[^\n\0]*$/.test(version.paths.home) ? { home: version.paths.home } : {}),
    };
  }

  /** `node add`: checks the login and the node's GoShip (installing this one first when asked), then records it. */
  async add(o: AddNodeOptions, goship: string): Promise<NodeView> {
    const issues: Issue[] = [];
    if (!NAME_PATTERN.test(o.name)) issues.push({ path: 'name', message: `expected ${NAME_RULE}, got ${JSON.stringify(o.name)}` });
    if (o.name === LOCAL_NODE) issues.push({ path: 'name', message: `"${LOCAL_NODE}" is this host` });
    const address = parseNodeUrl(o.url);
    if ('message' in address) issues.push(address);
    for (const [flag, file] of [['--identity', o.identity], ['--known-hosts', o.knownHosts]] as const) {
      if (file !== undefined && !(await stat(resolve(file)).then((s) => s.isFile(), () => false))) issues.push({ path: flag, message: `no such file: ${file}` });
    }
    if (issues.length > 0) throw new ValidationError(issues, { subject: 'cannot add node' });
    // Without --known-hosts, GoShip keeps the node's host key itself, as OpenSSH's accept-new does: recorded at
    // this first contact (its fingerprint shown), and every later connection refuses a different one.
    const own = o.knownHosts === undefined ? this.ownKnownHosts(o.name) : undefined;
    const node: Node = {
      name: o.name,
      createdAt: this.ctx.now(),
      address: address as NodeAddress,
      ...(o.identity !== undefined ? { identity: resolve(o.identity) } : {}),
      knownHosts: own ?? resolve(o.knownHosts!),
      cli: [...DEFAULT_REMOTE_CLI],
      projects: {},
    };
    assertNameFree(await this.ctx.store.read(), 'node', o.name);
    if (own) {
      await mkdir(dirname(own), { recursive: true, mode: 0o700 });
      await rm(own, { force: true });
      this.#firstContact.add(o.name);
    }
    try {
      if (o.install) {
        o.onProgress?.(`installing GoShip ${goship} on ${o.name} (~/${INSTALL_DIR})`);
        node.cli = await this.install(node);
      }
      // Its own connections: a shared one opened earlier with other settings would skip the host key check.
      node.report = await this.check(node, goship, false);
    } catch (err) {
      if (own) await rm(own, { force: true });
      throw err;
    } finally {
      this.#firstContact.delete(o.name);
    }
    if (own) {
      const fp = await this.fingerprints(own);
      o.onProgress?.(`host key of ${o.name} recorded in ${own}: ${fp.join(', ') || '?'}`);
      node.hostKeys = fp;
    }
    await this.ctx.store.update((draft) => {
      assertNameFree(draft, 'node', o.name);
      draft.nodes[o.name] = node;
    });
    return this.view(node);
  }

  /**
   * Copies this GoShip's bundles (CLI, monitor, agent) to ~/INSTALL_DIR on the
   * node, each written to a temporary name and renamed, so a goshipctl running
   * there is never cut in half. Returns the argv that runs it. The node needs
   * Node.js 20 and QEMU (its scripts/bootstrap.sh lists them): this says so.
   */
  private async install(node: Node): Promise<string[]> {
    const dist = distDir();
    for (const file of BUNDLES) {
      const src = join(dist, file);
      const data = await readFile(src).catch((cause: unknown) => {
        throw new RuntimeError('EREAD', `cannot read ${src} to install it on ${node.name}`, { hint: 'build the bundles first: npm run build', cause });
      });
      const target = `${INSTALL_DIR}/${file}`;
      const script = `set -e; umask 022; mkdir -p ${INSTALL_DIR}; cat > ${target}.tmp; mv -f ${target}.tmp ${target}`;
      const r = await this.run(node, ['sh', '-c', script], { input: data, timeoutMs: 120_000, raw: true, share: false });
      if (r.code !== 0) throw new RuntimeError('ENODE_VERSION', `node ${node.name}: could not write ~/${target}: ${r.stderr.trim().slice(0, 300)}`);
    }
    const probe = await this.run(node, ['node', '-e', 'process.exit(Number(process.versions.node.split(".")[0]) >= 20 ? 0 : 3)'], { timeoutMs: 60_000, raw: true, share: false });
    if (probe.code !== 0) {
      throw new RuntimeError('ENODE_VERSION', `node ${node.name}: GoShip's files are there, but it has no Node.js 20 or newer to run them`, {
        hint: 'on the node, as root: apt-get install nodejs (20 or newer) qemu-system-x86 qemu-utils xorriso',
      });
    }
    return ['node', `${INSTALL_DIR}/goshipctl.cjs`];
  }

  private view(node: Node, live?: { reachable: boolean; error?: string; hint?: string; report?: NodeReport }): NodeView {
    return {
      name: node.name,
      url: node.address ? nodeUrl(node.address) : 'this host',
      ...(live ? { reachable: live.reachable, ...(live.error ? { error: live.error } : {}), ...(live.hint ? { hint: live.hint } : {}) } : {}),
      report: live?.report ?? node.report ?? null,
      projects: Object.keys(node.projects ?? {}).sort(),
      knownHosts: node.knownHosts ?? null,
      hostKeys: node.hostKeys ?? [],
    };
  }

  /** Every node, each checked now (in parallel, each bounded by ssh's connect timeout). */
  async list(goship: string): Promise<NodeView[]> {
    const s = await this.ctx.store.read();
    const nodes = Object.values(s.nodes).sort((a, b) => a.name.localeCompare(b.name));
    return Promise.all(nodes.map((n) => this.checkedView(n, goship)));
  }

  async info(name: string, goship: string): Promise<NodeView> {
    return this.checkedView(requireRecord(await this.ctx.store.read(), 'node', name), goship);
  }

  /** The node checked now; a report it gave is recorded (a node that did not answer keeps the one it had). */
  private async checkedView(node: Node, goship: string): Promise<NodeView> {
    let report: NodeReport;
    try {
      report = await this.check(node, goship);
    } catch (err) {
      const hint = (err as { hint?: string }).hint;
      return this.view(node, { reachable: false, error: (err as Error).message, ...(hint ? { hint } : {}) });
    }
    await this.ctx.store.update((draft) => {
      const n = findRecord(draft, 'node', node.name);
      if (n) n.report = report;
    });
    return this.view(node, { reachable: true, report });
  }

  /** Forgets a node. Refused while projects are placed there, unless `force` (which forgets them too: nothing on the node changes). */
  async remove(name: string, o: { force?: boolean } = {}): Promise<void> {
    await this.ctx.store.update((draft) => {
      const node = requireRecord(draft, 'node', name);
      const projects = Object.keys(node.projects ?? {});
      if (projects.length > 0 && !o.force) {
        throw new RuntimeError('ESTATE', `node ${name} holds projects: ${projects.join(', ')}`, {
          hint: `delete them first (goshipctl project delete NAME), or forget the node and them: goshipctl node remove ${name} --force`,
        });
      }
      delete draft.nodes[name];
    });
    await rm(this.#listProbeCache(name), { force: true });
    await rm(this.ownKnownHosts(name), { force: true });
  }

  /** Where the /proc files of a node's last `project list` are kept: a guess for the next one (readRemoteList). */
  #listProbeCache(node: string): string {
    return join(this.ctx.layout.run, 'nodes', `${node}.list-probe.json`);
  }

  /**
   * `project list` of every node that holds projects of ours, in parallel: the
   * node's own JSON for those projects, or why the node could not say. A
   * reachable node that no longer has a project (a create cut off before it
   * recorded anything there, a delete made on the node) loses that placement
   * here; an unreachable one keeps all of them.
   */
  async remoteProjects(toRow: (v: ProjectView) => Record<string, unknown>): Promise<RemoteRows[]> {
    const forget = async (node: string, placed: string[], rows: Array<Record<string, unknown>>): Promise<void> => {
      for (const gone of placed.filter((name) => !rows.some((p) => p.name === name))) await this.place(node, gone, false);
    };
    const nodes = await this.#withProjects();
    const fast = new Map<string, RemoteRows>();
    await Promise.all(
      nodes.map(async (n) => {
        const placed = Object.keys(n.projects ?? {}).sort();
        const read = await this.readRemoteList(n, placed).catch((err: unknown) => (err instanceof RuntimeError && err.code === 'ENODE_UNREACHABLE' ? err : { why: String(err) }));
        if (read instanceof RuntimeError) {
          fast.set(n.name, { node: n.name, placed, error: read.message });
          return;
        }
        if ('why' in read) {
          trace(`node ${n.name}: project list by its goshipctl (${read.why})`);
          return;
        }
        trace(`node ${n.name}: project list read from its state file`);
        const rows = read.views.map(toRow);
        await forget(n.name, placed, rows);
        fast.set(n.name, { node: n.name, placed, rows: rows.map((row) => ({ ...row, node: n.name })) });
      }),
    );
    const rest = nodes.filter((n) => !fast.has(n.name));
    const slow = rest.length > 0 ? await this.#acrossNodes(['project', 'list'], (row) => String(row.name), forget, rest) : [];
    return nodes.map((n) => fast.get(n.name) ?? slow.find((r) => r.node === n.name)!);
  }

  /**
   * The fast `project list` of a node (src/runtime/remote-list.ts): its state
   * file and the /proc files that tell whether it has anything to reconcile,
   * read by one `grep` on ssh's shared connection, no goshipctl started
   * there. The /proc files are the last listing's (a cache file in the run
   * directory); when the state names others, a second `grep` reads those.
   * Or why the node's goshipctl must answer: its home not known (a node
   * added by an older GoShip), a state this GoShip does not read as it is, a
   * record to repair.
   */
  private async readRemoteList(node: Node, placed: string[]): Promise<{ views: ProjectView[] } | { why: string }> {
    const home = node.report?.home;
    if (home === undefined) return { why: 'where its state is is not known yet: node info records it' };
    const statePath = join(home, FILES.state);
    const cache = this.#listProbeCache(node.name);
    const guess = parseProbeGuess(await readFile(cache, 'utf8').catch(() => '')).filter((f) => f !== statePath);
    // grep: 0 something read, 1 nothing, 2 some file missing (a process gone): all answers.
    const grep = async (files: string[]): Promise<Map<string, string> | { why: string }> => {
      const r = await this.run(node, ['grep', '-asHz', '', '--', ...files], { raw: true, timeoutMs: 60_000 });
      return r.code > 2 ? { why: `grep exited ${r.code}: ${r.stderr.trim().slice(0, 200)}` } : parseGrepRecords(r.stdout, files);
    };
    const first = await grep([statePath, ...guess]);
    if (!(first instanceof Map)) return first;
    const text = first.get(statePath);
    if (text === undefined) return { why: `its state file ${statePath} could not be read` };
    const decoded = decodeState(Buffer.from(text, 'utf8'));
    if (decoded.kind !== 'ok' || decoded.version !== SCHEMA_VERSION) return { why: `its state file is not of this GoShip's schema as it is (${decoded.kind})` };
    const files = listProbeFiles(decoded.state);
    let probed = first;
    if (!sameFiles(files, guess)) {
      trace(`node ${node.name}: the state names other processes than the last listing, read again`);
      const again = files.length > 0 ? await grep(files) : new Map<string, string>();
      if (!(again instanceof Map)) return again;
      probed = again;
      await mkdir(dirname(cache), { recursive: true, mode: 0o700 });
      await writeFile(cache, JSON.stringify(files), { mode: 0o600 });
    }
    const r = remoteListViews(decoded.state, home, placed, probed);
    return 'views' in r ? r : { why: `${r.repair} needs a repair` };
  }

  /** `app list` of every node that holds projects of ours, in parallel: the apps of those projects, one row per node, or why the node could not say. */
  async remoteApps(): Promise<RemoteRows[]> {
    return this.#acrossNodes(['app', 'list'], (row) => String(row.project));
  }

  /** The nodes that hold projects of ours. */
  async #withProjects(): Promise<Node[]> {
    const s = await this.ctx.store.read();
    return Object.values(s.nodes).filter((n) => Object.keys(n.projects ?? {}).length > 0);
  }

  /** `ARGS --json` (a JSON array) on each node with projects of ours (or on `only`): the rows of our projects there, each with `node` set to the node's name. */
  async #acrossNodes(
    args: string[],
    projectOf: (row: Record<string, unknown>) => string,
    seen?: (node: string, placed: string[], rows: Array<Record<string, unknown>>) => Promise<void>,
    only?: Node[],
  ): Promise<RemoteRows[]> {
    const nodes = only ?? (await this.#withProjects());
    return Promise.all(
      nodes.map(async (n) => {
        const placed = Object.keys(n.projects ?? {}).sort();
        try {
          const r = await this.run(n, [...args, '--json'], { timeoutMs: 60_000 });
          if (r.code !== 0) return { node: n.name, placed, error: `goshipctl ${args.join(' ')} exited ${r.code} there: ${r.stderr.trim().slice(0, 300)}` };
          const parsed: unknown = JSON.parse(r.stdout);
          if (!Array.isArray(parsed)) return { node: n.name, placed, error: `goshipctl ${args.join(' ')} --json there did not print a list` };
          const mine = (parsed as Array<Record<string, unknown>>).filter((row) => row !== null && typeof row === 'object' && placed.includes(projectOf(row)));
          await seen?.(n.name, placed, mine);
          return { node: n.name, placed, rows: mine.map((row) => ({ ...row, node: n.name })) };
        } catch (err) {
          return { node: n.name, placed, error: (err as Error).message };
        }
      }),
    );
  }

  /**
   * A local unix socket that reaches the monitor of `project`'s VM on `node`
   * through ssh's shared connection (`ssh -O forward`), so a command talks to
   * it with no goshipctl started on the node. Undefined when that cannot be
   * had now (no shared connection up, the path not known and not learnt):
   * the caller routes the command the usual way.
   */
  async monitorForward(node: Node, project: string): Promise<{ local: string; drop: () => Promise<void> } | undefined> {
    if (!node.address) return undefined;
    const remote = node.projects?.[project]?.monitorSocket ?? (await this.learnMonitorSocket(node, project));
    if (remote === undefined) return undefined;
    const address = node.address;
    const dir = join(this.ctx.layout.run, 'nodes');
    const local = join(dir, `${node.name}-${createHash('sha256').update(remote).digest('hex').slice(0, 16)}.sock`);
    const control = async (op: 'forward' | 'cancel'): Promise<number> => {
      const [file, ...args] = sshForwardArgv(address, { controlPath: join(this.ctx.layout.run, 'ssh-%C') }, local, remote, op) as [string, ...string[]];
      return new Promise<number>((res) => {
        const child = spawn(file, args, { stdio: 'ignore' });
        child.once('error', () => res(255));
        child.once('close', (c) => res(c ?? 255));
      });
    };
    // A forward that did not answer (the master gone, the VM stopped there) is taken back, so the next command makes a fresh one.
    const drop = async (): Promise<void> => {
      await control('cancel');
      await rm(local, { force: true });
    };
    if (await stat(local).then((st) => st.isSocket(), () => false)) return { local, drop };
    await mkdir(dir, { recursive: true, mode: 0o700 });
    return (await control('forward')) === 0 ? { local, drop } : undefined;
  }

  /**
   * Forgets the recorded path of the project VM's monitor socket on `node`
   * (a forward to it did not answer, and the node did answer the command
   * routed the usual way): the next command learns it again, so a path gone
   * stale (the node's run directory moved, the VM made again) costs one
   * slower command, not every one after. Not called when the node was down:
   * nothing local is rewritten for that.
   */
  async forgetMonitorSocket(node: string, project: string): Promise<void> {
    await this.ctx.store.update((draft) => {
      const entry = findRecord(draft, 'node', node)?.projects?.[project];
      if (entry) delete entry.monitorSocket;
    });
  }

  /** Asks the node once where the project VM's monitor socket is (`vm status --json` there) and records it. */
  private async learnMonitorSocket(node: Node, project: string): Promise<string | undefined> {
    const r = await this.run(node, ['vm', 'status', project, '--json'], { timeoutMs: 60_000 }).catch(() => undefined);
    if (r?.code !== 0) return undefined;
    let path: unknown;
    try {
      path = (JSON.parse(r.stdout) as { paths?: { monitorSocket?: unknown } }).paths?.monitorSocket;
    } catch {
      return undefined;
    }
    // Used as a path in ssh's -L and nothing else: absolute, one line, no ':' (ssh's separator), a unix socket's length.
    if (typeof path !== 'string' || !/^\/[^:\n\0]{1,106}$/.test(path)) return undefined;
    await this.ctx.store.update((draft) => {
      const entry = findRecord(draft, 'node', node.name)?.projects?.[project];
      if (entry) entry.monitorSocket = path as string;
    });
    return path;
  }

  /** The remote nodes a project is placed on (none: it is local, or does not exist). */
  async placement(project: string): Promise<Node[]> {
    const s = await this.ctx.store.read();
    if (findRecord(s, 'project', project)) return [];
    return Object.values(s.nodes).filter((n) => n.projects && Object.hasOwn(n.projects, project)).sort((a, b) => a.name.localeCompare(b.name));
  }

  async node(name: string): Promise<Node> {
    return requireRecord(await this.ctx.store.read(), 'node', name);
  }

  /** Records (or forgets) that `project` lives on `node`. */
  async place(node: string, project: string, on: boolean): Promise<void> {
    await this.ctx.store.update((draft) => {
      const n = findRecord(draft, 'node', node);
      if (!n) return;
      n.projects ??= {};
      if (on) n.projects[project] ??= { createdAt: this.ctx.now() };
      else delete n.projects[project];
    });
  }

  /**
   * `image push`: the image directory (manifest, disk, kernel, initrd) as a
   * tar stream into the node's `image receive`, which checks the disk against
   * the manifest's sha256 before it makes the image visible. Nothing is
   * written where the node's images are until the whole image is there and
   * checked, so an interrupted push leaves no image (and the next push starts over).
   */
  async pushImage(nodeName: string, dir: string, name: string): Promise<RunResult> {
    const node = await this.node(nodeName);
    // The image's own files, from its real directory (an image directory may be a symlink).
    const real = await realpath(dir);
    const files = (await readdir(real)).filter((f) => !f.startsWith('.')).sort();
    const tar = await import('tar');
    const stream = tar.c({ cwd: real, portable: true }, files) as unknown as Readable;
    const r = await this.run(node, ['image', 'receive', name, '--json'], { input: stream, timeoutMs: 3_600_000 });
    return r;
  }
}
