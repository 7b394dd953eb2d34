/**
 * A small client of dockerd's Engine API over its unix socket, with Node's
 * own http module (the guest runs Node 18: no fetch, no undici, no client
 * library to bundle). The API version is negotiated once, as moby's client
 * does: the daemon's `API-Version` from `GET /_ping`, capped at the newest
 * this client knows; every path is then prefixed `/vX.Y`. Errors carry the
 * daemon's own message.
 */
import { Buffer } from 'node:buffer';
import { request, type IncomingMessage } from 'node:http';
import type { Socket } from 'node:net';
import type { Readable } from 'node:stream';
import { systemctl } from '../run.ts';
import { RemoteError } from '../session.ts';

/** Where Debian's docker.io listens (socket-activated by docker.socket: the first request starts dockerd). */
export const DOCKER_SOCKET = '/run/docker.sock';
/** The newest Engine API version this client is written against (the calls it makes are the same back to 1.41). */
export const CLIENT_API_MAX = '1.47';
/** The oldest it accepts: Debian bookworm's docker.io 20.10 speaks 1.41. */
export const CLIENT_API_MIN = '1.41';
/** How long the first request waits for dockerd to come up (socket activation, a guest still booting). */
const START_WAIT_MS = 120_000;


/** The largest JSON reply read into memory (an inspect, a list). */
const MAX_JSON_BYTES = 8 * 1024 * 1024;

export const DOCKER_CODES = {
  /** No dockerd in the guest, or it would not start. */
  unavailable: 'EDOCKER_UNAVAILABLE',
  /** dockerd answered with an error (its message is kept). */
  daemon: 'EDOCKER',
  /** dockerd does not know the container or image. */
  notFound: 'EDOCKER_NOTFOUND',
  /** A name or port dockerd already has. */
  conflict: 'EDOCKER_CONFLICT',
} as const;

/** Pure: `1.41` < `1.47`. */
export function compareApi(a: string, b: string): number {
  const [am, an] = a.split('.').map(Number);
  const [bm, bn] = b.split('.').map(Number);
  return (am! - bm!) || (an! - bn!);
}

/** Pure: the version to speak, given the daemon's (`API-Version` of /_ping). */
export function negotiate(daemon: string | undefined): string {
  if (!daemon || !/^\d+\.\d+$/.test(daemon)) return CLIENT_API_MIN;
  return compareApi(daemon, CLIENT_API_MAX) > 0 ? CLIENT_API_MAX : daemon;
}

export interface RequestOptions {
  query?: Record<string, string | number | boolean | undefined>;
  /** A JSON body (an object), or bytes, or a stream (a tar). */
  body?: unknown;
  contentType?: string;
  signal?: AbortSignal;
  headers?: Record<string, string>;
}

function queryString(q: RequestOptions['query']): string {
  const parts = Object.entries(q ?? {})
    .filter(([, v]) => v !== undefined)
    .map(([k, v]) => `${encodeURIComponent(k)}=${encodeURIComponent(String(v))}`);
  return parts.length > 0 ? `?${parts.join('&')}` : '';
}

async function readAll(res: Readable, max: number): Promise<Buffer> {
  const parts: Buffer[] = [];
  let n = 0;
  for await (const c of res) {
    n += (c as Buffer).length;
    if (n > max) throw new RemoteError(DOCKER_CODES.daemon, `dockerd sent more than ${max} bytes for one reply`);
    parts.push(c as Buffer);
  }
  return Buffer.concat(parts);
}

export class Engine {
  readonly #socket: string;
  #version: Promise<string> | undefined;

  constructor(socket = DOCKER_SOCKET) {
    this.#socket = socket;
  }

  /** The negotiated API version (asked once). */
  apiVersion(): Promise<string> {
    this.#version ??= this.#ping().then(
      async (res) => {
        await readAll(res, 4096);
        const v = negotiate(String(res.headers['api-version'] ?? ''));
        if (compareApi(v, CLIENT_API_MIN) < 0) throw new RemoteError(DOCKER_CODES.unavailable, `dockerd speaks Engine API ${v}, older than ${CLIENT_API_MIN}`);
        return v;
      },
      (err: unknown) => {
        this.#version = undefined;
        throw err;
      },
    );
    return this.#version;
  }

  /**
   * The first contact: dockerd is socket-activated, and a guest still booting
   * may not have reached sockets.target yet. Its socket is started on demand
   * (`systemctl start docker.socket`), then waited for.
   */
  async #ping(): Promise<IncomingMessage> {
    const deadline = Date.now() + START_WAIT_MS;
    let started = false;
    for (;;) {
      try {
        return await this.#raw('GET', '/_ping', {});
      } catch (err) {
        if (!(err instanceof RemoteError) || err.code !== DOCKER_CODES.unavailable || Date.now() > deadline) throw err;
        if (!started) {
          started = true;
          const ok = await systemctl(['start', 'docker.socket']);
          if (!ok) throw new RemoteError(DOCKER_CODES.unavailable, 'Docker is not installed in the guest: systemctl cannot start docker.socket (install docker.io in the image)');
        }
        await new Promise((r) => setTimeout(r, 250));
      }
    }
  }

  /** One request, unversioned path; the response unread. */
  #raw(method: string, path: string, o: RequestOptions): Promise<IncomingMessage> {
    return new Promise((resolve, reject) => {
      const isStream = typeof (o.body as Readable | undefined)?.pipe === 'function';
      const isBytes = Buffer.isBuffer(o.body);
      const bytes = o.body === undefined || isStream ? undefined : isBytes ? (o.body as Buffer) : Buffer.from(JSON.stringify(o.body));
      const headers: Record<string, string> = { Host: 'docker', ...o.headers };
      if (bytes) {
        headers['Content-Type'] = o.contentType ?? (isBytes ? 'application/octet-stream' : 'application/json');
        headers['Content-Length'] = String(bytes.length);
      } else if (isStream) {
        headers['Content-Type'] = o.contentType ?? 'application/x-tar';
        headers['Transfer-Encoding'] = 'chunked';
      }
      const req = request({ socketPath: this.#socket, method, path: `${path}${queryString(o.query)}`, headers, ...(o.signal ? { signal: o.signal } : {}) });
      req.once('response', resolve);
      req.once('error', (err: NodeJS.ErrnoException) => {
        if (err.code === 'ENOENT' || err.code === 'ECONNREFUSED') {
          reject(new RemoteError(DOCKER_CODES.unavailable, `Docker is not running in the guest: ${this.#socket}: ${err.code}`));
        } else reject(err.name === 'AbortError' ? err : new RemoteError(DOCKER_CODES.daemon, `dockerd ${method} ${path}: ${err.message}`));
      });
      if (isStream) (o.body as Readable).pipe(req);
      else req.end(bytes);
    });
  }

  /** A request on the negotiated version; throws the daemon's error for a status ≥ 400. */
  async request(method: string, path: string, o: RequestOptions = {}): Promise<IncomingMessage> {
    const v = await this.apiVersion();
    const res = await this.#raw(method, `/v${v}${path}`, o);
    if ((res.statusCode ?? 500) >= 400) throw await this.#error(res, method, path);
    return res;
  }

  /** A request whose reply is JSON (or empty). */
  async json<T = unknown>(method: string, path: string, o: RequestOptions = {}): Promise<T> {
    const res = await this.request(method, path, o);
    const body = await readAll(res, MAX_JSON_BYTES);
    if (body.length === 0) return undefined as T;
    try {
      return JSON.parse(body.toString('utf8')) as T;
    } catch {
      throw new RemoteError(DOCKER_CODES.daemon, `dockerd ${method} ${path}: the reply is not JSON`);
    }
  }

  async #error(res: IncomingMessage, method: string, path: string): Promise<RemoteError> {
    const body = await readAll(res, 64 * 1024).catch(() => Buffer.alloc(0));
    let message = body.toString('utf8').trim();
    try {
      message = String((JSON.parse(message) as { message?: unknown }).message ?? message);
    } catch {
      // plain text
    }
    const code = res.statusCode === 404 ? DOCKER_CODES.notFound : res.statusCode === 409 ? DOCKER_CODES.conflict : DOCKER_CODES.daemon;
    return new RemoteError(code, `dockerd ${method} ${path.split('?')[0]}: ${message || `HTTP ${res.statusCode}`}`.slice(0, 3000));
  }

  /**
   * `POST path` upgraded to a raw stream (exec start, attach): dockerd answers
   * 101 and the socket carries the process's streams both ways.
   */
  async hijack(path: string, body: unknown, signal?: AbortSignal): Promise<Socket> {
    const v = await this.apiVersion();
    return new Promise((resolve, reject) => {
      const bytes = Buffer.from(JSON.stringify(body));
      const req = request({
        socketPath: this.#socket,
        method: 'POST',
        path: `/v${v}${path}`,
        headers: { Host: 'docker', 'Content-Type': 'application/json', 'Content-Length': String(bytes.length), Connection: 'Upgrade', Upgrade: 'tcp' },
        ...(signal ? { signal } : {}),
      });
      req.once('upgrade', (_res, socket) => resolve(socket));
      req.once('response', (res: IncomingMessage) => {
        // No upgrade: an error, or an old daemon that streams on the response itself.
        if ((res.statusCode ?? 500) >= 400) void this.#error(res, 'POST', path).then(reject, reject);
        else resolve(res.socket as Socket);
      });
      req.once('error', (err) => reject(new RemoteError(DOCKER_CODES.unavailable, `dockerd POST ${path}: ${err.message}`)));
      req.end(bytes);
    });
  }
}
