/**
 * The agent's container methods: dockerd's Engine API on /run/docker.sock,
 * spoken by the agent inside the VM. The host decides what to run (it keeps
 * the apps' records); the agent only turns validated requests into Engine
 * API calls and streams their bytes, under the protocol's flow control:
 * build contexts and image archives in (`stdin`), progress, logs and exec
 * output out (`stdout`, `stderr`).
 */
import { Buffer } from 'node:buffer';
import { existsSync, readFileSync } from 'node:fs';
import { PassThrough } from 'node:stream';
import * as v from 'valibot';
import {
  AppExecParamsSchema,
  ContainerParamsSchema,
  ContainerSpecSchema,
  ExecCtlSchema,
  ImageBuildParamsSchema,
  ImagePullParamsSchema,
  LogsParamsSchema,
  type ContainerInfo,
  type ContainerSpec,
} from '../../src/protocol/index.ts';
import { DOCKER_CODES, Engine, compareApi } from './docker/engine.ts';
import { JsonLines, MuxDecoder } from './docker/frames.ts';
import { systemctl } from './run.ts';
import { RemoteError, parseParams, type Call, type Handler } from './session.ts';

const engine = new Engine();

/** A stream to the host that the Engine API's progress lines are written to, as text. */
function progressWriter(call: Call): { line: (text: string) => void; done: () => Promise<number> } {
  const out = new PassThrough();
  const sent = call.sendStream('stdout', out);
  return {
    line: (text) => out.write(text.endsWith('\n') ? text : `${text}\n`),
    done: async () => {
      out.end();
      return sent;
    },
  };
}

/**
 * Runs a progress-streaming call (build, load, pull): each JSON line's
 * `stream`/`status` text goes to the host; an `error` line (dockerd reports
 * failures there with a 200 status) fails the method with the daemon's words.
 */
async function progress(call: Call, res: AsyncIterable<Buffer>): Promise<{ aux: Array<Record<string, unknown>>; lines: string[] }> {
  const p = progressWriter(call);
  const aux: Array<Record<string, unknown>> = [];
  const lines: string[] = [];
  let failure: string | undefined;
  const parser = new JsonLines((o) => {
    if (typeof o.error === 'string') failure ??= o.error;
    if (typeof o.errorDetail === 'object' && o.errorDetail && typeof (o.errorDetail as { message?: unknown }).message === 'string') failure ??= String((o.errorDetail as { message: string }).message);
    if (typeof o.aux === 'object' && o.aux !== null) aux.push(o.aux as Record<string, unknown>);
    const text = typeof o.stream === 'string' ? o.stream : typeof o.status === 'string' ? `${o.status}${typeof o.progress === 'string' ? ` ${o.progress}` : ''}${typeof o.id === 'string' ? ` (${o.id})` : ''}` : undefined;
    if (text !== undefined && text.trim() !== '') {
      p.line(text.replace(/\n$/, ''));
      lines.push(text.trim());
      if (lines.length > 50) lines.shift();
    }
    if (failure) p.line(failure);
  });
  for await (const chunk of res) parser.push(chunk);
  parser.end();
  await p.done();
  if (failure) throw new RemoteError(DOCKER_CODES.daemon, failure.trim());
  return { aux, lines };
}

async function tagsOf(imageId: string): Promise<string[]> {
  const img = await engine.json<{ RepoTags?: string[] | null }>('GET', `/images/${encodeURIComponent(imageId)}/json`);
  return img.RepoTags ?? [];
}

async function buildMethod(call: Call, raw: unknown): Promise<{ imageId: string; tags: string[] }> {
  const p = parseParams(ImageBuildParamsSchema, raw, 'app.image.build');
  const context = new PassThrough();
  const feeding = (async () => {
    for await (const chunk of call.inbound('stdin')) if (!context.write(chunk)) await new Promise((r) => context.once('drain', r));
    context.end();
  })();
  feeding.catch((e: unknown) => context.destroy(e as Error));
  const res = await engine.request('POST', '/build', {
    query: { t: p.tag, labels: JSON.stringify(p.labels), rm: 1, forcerm: 1 },
    body: context,
    signal: call.signal,
  });
  const { aux } = await progress(call, res);
  await feeding;
  const id = aux.map((a) => a.ID).find((x): x is string => typeof x === 'string');
  const imageId = id ?? (await engine.json<{ Id: string }>('GET', `/images/${encodeURIComponent(p.tag)}/json`)).Id;
  return { imageId, tags: await tagsOf(imageId) };
}

async function loadMethod(call: Call): Promise<{ imageId: string; tags: string[] }> {
  const archive = new PassThrough();
  const feeding = (async () => {
    for await (const chunk of call.inbound('stdin')) if (!archive.write(chunk)) await new Promise((r) => archive.once('drain', r));
    archive.end();
  })();
  feeding.catch((e: unknown) => archive.destroy(e as Error));
  const res = await engine.request('POST', '/images/load', { query: { quiet: 0 }, body: archive, signal: call.signal });
  const { lines } = await progress(call, res);
  await feeding;
  // "Loaded image: web:1" or "Loaded image ID: sha256:…"
  const loaded = lines.map((l) => /^Loaded image(?: ID)?: (\S+)/.exec(l)?.[1]).filter((x): x is string => x !== undefined);
  if (loaded.length === 0) throw new RemoteError(DOCKER_CODES.daemon, 'dockerd loaded no image from the archive');
  const img = await engine.json<{ Id: string; RepoTags?: string[] | null }>('GET', `/images/${encodeURIComponent(loaded[0]!)}/json`);
  return { imageId: img.Id, tags: img.RepoTags ?? [] };
}

async function pullMethod(call: Call, raw: unknown): Promise<{ imageId: string; tags: string[] }> {
  const p = parseParams(ImagePullParamsSchema, raw, 'app.image.pull');
  const at = p.ref.lastIndexOf(':');
  const slash = p.ref.lastIndexOf('/');
  const [fromImage, tag] = p.ref.includes('@') || at <= slash ? [p.ref, undefined] : [p.ref.slice(0, at), p.ref.slice(at + 1)];
  try {
    const res = await engine.request('POST', '/images/create', { query: { fromImage, tag }, signal: call.signal });
    await progress(call, res);
  } catch (err) {
    throw unreachableRegistry(p.ref, err);
  }
  const img = await engine.json<{ Id: string; RepoTags?: string[] | null }>('GET', `/images/${encodeURIComponent(p.ref)}/json`);
  return { imageId: img.Id, tags: img.RepoTags ?? [] };
}

/** dockerd's words for a registry it cannot reach from inside the VM. */
const UNREACHABLE = /dial tcp|no such host|connection refused|i\/o timeout|network is unreachable|TLS handshake timeout|Client\.Timeout|server misbehaving/i;

/**
 * A pull that failed because the guest cannot reach the registry says so
 * (the VM's network is QEMU user networking: the host's DNS and routes, through slirp).
 */
export function unreachableRegistry(ref: string, err: unknown): unknown {
  if (!(err instanceof RemoteError) || !UNREACHABLE.test(err.message)) return err;
  const registry = ref.includes('/') && /[.:]|^localhost$/.test(ref.split('/')[0]!) ? ref.split('/')[0]! : 'docker.io';
  return new RemoteError(err.code, `the VM cannot reach the registry ${registry} to pull ${ref}: ${err.message}`);
}

/**
 * Whether dockerd can confine containers with AppArmor here. A kernel with
 * AppArmor on but no apparmor_parser in the guest (a minimal image) makes
 * every start fail ("the docker-default profile could not be loaded"): the
 * container then runs unconfined by AppArmor (its namespaces, cgroups,
 * capabilities and seccomp profile still apply).
 */
export function apparmorUsable(exists: (path: string) => boolean = existsSync): boolean {
  const enabled = (() => {
    try {
      return readFileSync('/sys/module/apparmor/parameters/enabled', 'utf8').trim() === 'Y';
    } catch {
      return false;
    }
  })();
  return !enabled || ['/sbin/apparmor_parser', '/usr/sbin/apparmor_parser'].some(exists);
}

/** Pure: the Engine API's create body for a container spec. */
export function createBody(s: ContainerSpec, apparmor = true): Record<string, unknown> {
  const exposed: Record<string, object> = {};
  const bindings: Record<string, Array<{ HostIp: string; HostPort: string }>> = {};
  for (const p of s.ports) {
    const key = `${p.container}/${p.proto}`;
    exposed[key] = {};
    (bindings[key] ??= []).push({ HostIp: '', HostPort: String(p.guest) });
  }
  return {
    Image: s.image,
    ...(s.cmd ? { Cmd: s.cmd } : {}),
    Env: s.env,
    Labels: s.labels,
    ExposedPorts: exposed,
    HostConfig: {
      PortBindings: bindings,
      RestartPolicy: { Name: s.restart.name === 'no' ? '' : s.restart.name, ...(s.restart.maxRetries !== undefined ? { MaximumRetryCount: s.restart.maxRetries } : {}) },
      Mounts: s.volumes.map((m) => ({ Type: 'volume', Source: m.name, Target: m.path })),
      ...(s.memory !== undefined ? { Memory: s.memory } : {}),
      ...(s.cpus !== undefined ? { NanoCpus: Math.round(s.cpus * 1e9) } : {}),
      LogConfig: { Type: 'json-file', Config: { 'max-size': '10m', 'max-file': '3' } },
      ...(apparmor ? {} : { SecurityOpt: ['apparmor=unconfined'] }),
    },
  };
}

let dockerAtBoot: Promise<void> | undefined;

/**
 * dockerd is socket-activated in GoShip's image (a lean boot): nothing would
 * start it, and so the apps' containers, after a reboot. Once a VM has an app,
 * docker.service starts at boot.
 */
function enableDockerAtBoot(): Promise<void> {
  dockerAtBoot ??= systemctl(['enable', 'docker.service']).then(() => undefined);
  return dockerAtBoot;
}

async function createMethod(_call: Call, raw: unknown): Promise<{ id: string }> {
  const s = parseParams(ContainerSpecSchema, raw, 'app.create');
  await enableDockerAtBoot();
  const r = await engine.json<{ Id: string }>('POST', '/containers/create', { query: { name: s.name }, body: createBody(s, apparmorUsable()) });
  return { id: r.Id };
}

interface Inspect {
  Id: string;
  Name: string;
  Image: string;
  RestartCount: number;
  State: { Status: string; ExitCode: number; StartedAt: string; FinishedAt: string; Error: string };
  Config: { Image: string; Labels: Record<string, string> | null };
  HostConfig: { PortBindings?: Record<string, Array<{ HostPort?: string }> | null> | null };
}

/** Pure: an inspect reply as the host sees a container. */
export function containerInfo(i: Inspect): ContainerInfo {
  const ports: ContainerInfo['ports'] = [];
  for (const [key, binds] of Object.entries(i.HostConfig.PortBindings ?? {})) {
    const [port, proto] = key.split('/');
    for (const b of binds ?? [{}]) ports.push({ proto: proto === 'udp' ? 'udp' : 'tcp', container: Number(port), guest: b.HostPort ? Number(b.HostPort) : null });
  }
  const time = (t: string): string | null => (t && !t.startsWith('0001-') ? t : null);
  return {
    id: i.Id,
    name: i.Name.replace(/^\//, ''),
    image: i.Config.Image,
    imageId: i.Image,
    state: i.State.Status,
    exitCode: i.State.Status === 'running' ? null : i.State.ExitCode,
    restartCount: i.RestartCount,
    startedAt: time(i.State.StartedAt),
    finishedAt: time(i.State.FinishedAt),
    error: i.State.Error,
    labels: i.Config.Labels ?? {},
    ports,
  };
}

async function inspect(container: string): Promise<ContainerInfo> {
  return containerInfo(await engine.json<Inspect>('GET', `/containers/${encodeURIComponent(container)}/json`));
}

const containerCall =
  (verb: 'start' | 'stop' | 'restart' | 'remove' | 'rename' | 'inspect'): Handler =>
  async (_call, raw) => {
    const p = parseParams(ContainerParamsSchema, raw, `app.${verb}`);
    const c = encodeURIComponent(p.container);
    switch (verb) {
      case 'start':
        await engine.json('POST', `/containers/${c}/start`).catch((e: RemoteError) => {
          // 304: already started. Anything else is the daemon's reason, and the container's own error.
          throw e;
        });
        return inspect(p.container);
      case 'stop':
      case 'restart':
        await engine.json('POST', `/containers/${c}/${verb}`, { query: { t: p.timeoutSec ?? 10 } });
        return inspect(p.container);
      case 'remove':
        await engine.json('DELETE', `/containers/${c}`, { query: { force: 1, v: 0 } });
        return {};
      case 'rename':
        if (!p.name) throw new RemoteError('EBADREQ', 'app.rename: name is required');
        await engine.json('POST', `/containers/${c}/rename`, { query: { name: p.name } });
        return inspect(p.name);
      case 'inspect':
        return inspect(p.container);
    }
  };

async function listMethod(): Promise<{ containers: ContainerInfo[] }> {
  // Every container, GoShip's apps and those started behind its back (the host's docker CLI through `project docker`): app list shows those unmanaged.
  const list = await engine.json<Array<{ Id: string }>>('GET', '/containers/json', { query: { all: 1 } });
  const containers: ContainerInfo[] = [];
  for (const c of list) {
    // A container removed between the list and its inspect is simply not there.
    const info = await inspect(c.Id).catch(() => undefined);
    if (info) containers.push(info);
  }
  return { containers };
}

async function logsMethod(call: Call, raw: unknown): Promise<{ bytes: number }> {
  const p = parseParams(LogsParamsSchema, raw, 'app.logs');
  const tty = (await engine.json<{ Config: { Tty: boolean } }>('GET', `/containers/${encodeURIComponent(p.container)}/json`)).Config.Tty;
  const res = await engine.request('GET', `/containers/${encodeURIComponent(p.container)}/logs`, {
    query: { stdout: 1, stderr: 1, follow: p.follow ? 1 : 0, timestamps: p.timestamps ? 1 : 0, ...(p.tail !== undefined ? { tail: p.tail } : {}), ...(p.since !== undefined ? { since: p.since } : {}) },
    signal: call.signal,
  });
  return pumpStreams(call, res, tty);
}

/** dockerd's output (multiplexed, or raw with a TTY) to the host's stdout and stderr streams, under flow control. */
async function pumpStreams(call: Call, source: AsyncIterable<Buffer>, tty: boolean): Promise<{ bytes: number }> {
  const out = new PassThrough({ highWaterMark: 256 * 1024 });
  const err = new PassThrough({ highWaterMark: 256 * 1024 });
  const sending = Promise.all([call.sendStream('stdout', out), call.sendStream('stderr', err)]);
  let bytes = 0;
  const mux = new MuxDecoder((stream, piece) => {
    bytes += piece.length;
    (stream === 'stdout' ? out : err).write(Buffer.from(piece));
  });
  try {
    for await (const chunk of source) {
      if (tty) {
        bytes += chunk.length;
        if (!out.write(chunk)) await new Promise((r) => out.once('drain', r));
      } else {
        mux.push(chunk);
        // Keep within the streams' buffers: wait while either is full.
        if (out.writableNeedDrain) await new Promise((r) => out.once('drain', r));
        if (err.writableNeedDrain) await new Promise((r) => err.once('drain', r));
      }
    }
  } catch (e) {
    if (!call.signal.aborted) throw e;
  } finally {
    out.end();
    err.end();
  }
  await sending;
  return { bytes };
}

async function execMethod(call: Call, raw: unknown): Promise<{ exitCode: number | null }> {
  const p = parseParams(AppExecParamsSchema, raw, 'app.exec');
  const created = await engine.json<{ Id: string }>('POST', `/containers/${encodeURIComponent(p.container)}/exec`, {
    body: { AttachStdin: p.stdin, AttachStdout: true, AttachStderr: true, Tty: p.tty, Cmd: p.argv, Env: p.env },
  });
  const execId = created.Id;
  // From API 1.42 (dockerd 23) the start takes the terminal's size, so the program sees it from its
  // first instruction. Older daemons (bookworm's 20.10 speaks 1.41) only have the resize below,
  // right after the start: a program that reads the size in its first milliseconds may see 0 0.
  const consoleSize = p.tty && p.rows && p.cols && compareApi(await engine.apiVersion(), '1.42') >= 0 ? { ConsoleSize: [p.rows, p.cols] } : {};
  const socket = await engine.hijack(`/exec/${execId}/start`, { Detach: false, Tty: p.tty, ...consoleSize }, call.signal);
  // Right after the start, dockerd may not have the exec's process (and its terminal) yet: a
  // resize is refused then. Tried again, as docker's own CLI does, for a moment.
  const resize = async (rows: number, cols: number, tries = 1): Promise<void> => {
    for (let i = 1; i <= tries; i++) {
      const done = await engine.json('POST', `/exec/${execId}/resize`, { query: { h: rows, w: cols } }).then(
        () => true,
        () => false,
      );
      if (done) return;
      await new Promise((r) => setTimeout(r, 10 * i));
    }
  };
  if (p.tty && p.rows && p.cols) await resize(p.rows, p.cols, 10);
  // Resizes come on the `ctl` stream, one JSON object per line.
  const ctl = (async () => {
    const sizes: Array<{ rows: number; cols: number }> = [];
    const lines = new JsonLines((o) => {
      const m = v.safeParse(ExecCtlSchema, o);
      if (m.success) sizes.push(m.output.resize);
    });
    for await (const chunk of call.inbound('ctl')) {
      lines.push(chunk);
      for (const s of sizes.splice(0)) await resize(s.rows, s.cols);
    }
  })().catch(() => undefined);
  const stdin = p.stdin
    ? (async () => {
        for await (const chunk of call.inbound('stdin')) if (!socket.write(chunk)) await new Promise((r) => socket.once('drain', r));
        // Half-close: the process sees its stdin end, its output keeps coming.
        socket.end();
      })().catch(() => undefined)
    : Promise.resolve();
  const onAbort = (): void => {
    socket.destroy();
  };
  call.signal.addEventListener('abort', onAbort, { once: true });
  try {
    await pumpStreams(call, socket, p.tty);
  } finally {
    call.signal.removeEventListener('abort', onAbort);
  }
  void stdin;
  void ctl;
  // The exit code is known once the stream has ended; dockerd may need a moment to record it.
  for (let i = 0; i < 50; i++) {
    const r = await engine.json<{ Running: boolean; ExitCode: number | null }>('GET', `/exec/${execId}/json`);
    if (!r.Running) return { exitCode: r.ExitCode };
    await new Promise((res) => setTimeout(res, 20));
  }
  return { exitCode: null };
}

async function versionMethod(): Promise<{ apiVersion: string; version: string }> {
  const apiVersion = await engine.apiVersion();
  const r = await engine.json<{ Version: string }>('GET', '/version');
  return { apiVersion, version: r.Version };
}

export const appHandlers: Record<string, Handler> = {
  'docker.version': versionMethod,
  'app.image.build': buildMethod,
  'app.image.load': loadMethod,
  'app.image.pull': pullMethod,
  'app.create': createMethod,
  'app.start': containerCall('start'),
  'app.stop': containerCall('stop'),
  'app.restart': containerCall('restart'),
  'app.remove': containerCall('remove'),
  'app.rename': containerCall('rename'),
  'app.inspect': containerCall('inspect'),
  'app.list': listMethod,
  'app.logs': logsMethod,
  'app.exec': execMethod,
};
