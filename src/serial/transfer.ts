/**
 * Agent client transfers: upload and download of whole files over a session.
 *
 * Both ends check size and sha256 before a file counts as copied, and each
 * end writes a temporary file beside the target and renames it only then.
 * A download is bounded before any byte moves (the caller's limit, the free
 * space, the size the guest announces) and cut as soon as the guest sends
 * more. Both fail when nothing moves for `transferIdleTimeoutMs`.
 */
import { Buffer } from 'node:buffer';
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { rename, stat as statLocal, statfs, unlink } from 'node:fs/promises';
import { dirname } from 'node:path';
import * as v from 'valibot';
import { ValidationError } from '../errors.ts';
import { CreditWindow, DownloadResultSchema, UploadParamsSchema, UploadResultSchema, type StatResult } from '../protocol/index.ts';
import { HASH_READ_BYTES } from './defaults.ts';
import { AgentProtocolError, AgentRemoteError, TransferLimitError } from './errors.ts';
import { openPartial } from './partial.ts';
import { validateResult, type AgentSession, type Pending, type Sink } from './session.ts';

export interface DownloadOptions {
  /** Refuse a file larger than this, before any byte moves, and stop a stream that passes it. Default: no bound but the announced size. */
  maxBytes?: number;
  /** Aborting it cancels the transfer; the partial file is removed. */
  signal?: AbortSignal;
}

export interface UploadOptions {
  /** Permission bits; default 0644. */
  mode?: number;
  uid?: number;
  gid?: number;
}

export interface TransferResult {
  bytes: number;
  sha256: string;
}

/**
 * Copy a local file to `remotePath` in the guest. The agent writes a
 * temporary file next to the target, checks size and sha256, then renames.
 */
export async function upload(session: AgentSession, localPath: string, remotePath: string, options: UploadOptions = {}): Promise<TransferResult> {
  const st = await statLocal(localPath);
  if (!st.isFile()) throw new ValidationError([{ path: 'localPath', message: `${localPath} is not a regular file` }], { subject: 'invalid upload' });
  const sha256 = await hashFile(localPath);
  const params = { path: remotePath, size: st.size, sha256, ...options };
  const checked = v.safeParse(UploadParamsSchema, params);
  if (!checked.success) {
    throw new ValidationError(
      checked.issues.map((i) => ({ path: v.getDotPath(i) ?? '', message: i.message })),
      { subject: 'invalid upload' },
    );
  }
  const { chunk: maxChunk, window } = session.hello.limits;
  const credit = new CreditWindow(window);
  const { result, pending } = session.request('upload', checked.output, {
    credits: { file: credit },
    idleMs: session.transferIdleTimeoutMs,
  });
  const sent = createHash('sha256');
  const pumped = session.pump(pending, 'file', createReadStream(localPath, { highWaterMark: maxChunk }), credit, {
    maxChunk,
    onChunk: (c) => sent.update(c),
  });
  let raw: unknown;
  try {
    raw = await result;
  } finally {
    await pumped;
  }
  const r = validateResult(UploadResultSchema, raw, 'upload');
  const sentSha = sent.digest('hex');
  if (sentSha !== sha256) {
    throw new AgentProtocolError(`upload ${localPath}: the file changed while it was sent (sha256 ${sha256} before, ${sentSha} sent)`);
  }
  if (r.sha256 !== sha256 || r.bytes !== st.size) {
    throw new AgentProtocolError(`agent upload: reported ${r.bytes} bytes sha256 ${r.sha256}, sent ${st.size} bytes sha256 ${sha256}`, { received: r });
  }
  return { bytes: r.bytes, sha256 };
}

/**
 * Copy `remotePath` from the guest to `localPath` (chosen by the caller,
 * never by the guest). The agent announces the file's size first (`stat`):
 * a file larger than `maxBytes`, or than the free space where `localPath`
 * goes, is refused before any byte moves, and the stream is cut (the
 * request cancelled) as soon as it passes the announced size. Bytes go to a
 * temporary file next to `localPath`, renamed only when size and sha256
 * match what the agent reports. The guest's mode is returned, not applied.
 */
export async function download(
  session: AgentSession,
  stat: (remotePath: string) => Promise<StatResult>,
  remotePath: string,
  localPath: string,
  options: DownloadOptions = {},
): Promise<TransferResult & { mode: number }> {
  const st = await stat(remotePath);
  if (st.type !== 'file') throw new AgentRemoteError('download', 'EISDIR', `download ${remotePath}: not a regular file (${st.type})`);
  const announced = st.size;
  if (options.maxBytes !== undefined && announced > options.maxBytes) {
    throw new TransferLimitError(`download ${remotePath}: the guest announces ${announced} bytes, more than the limit of ${options.maxBytes}`, {
      hint: 'raise the limit (goshipctl vm cp --max-size SIZE) if you expect a file this large',
    });
  }
  const fs = await statfs(dirname(localPath));
  const free = fs.bavail * fs.bsize;
  if (announced > free) {
    throw new TransferLimitError(`download ${remotePath}: ${announced} bytes do not fit in the ${free} bytes free under ${dirname(localPath)}`);
  }
  const { path: tmp, handle: fh } = await openPartial(localPath);
  const hash = createHash('sha256');
  let bytes = 0;
  let chain: Promise<void> = Promise.resolve();
  let writeError: unknown;
  let pendingRef: Pending | undefined;
  const sink: Sink = {
    deliver: (payload, consumed) => {
      if (writeError !== undefined) return consumed();
      bytes += payload.length;
      if (bytes > announced) {
        // The guest said one size and sends more: stop at the bound.
        writeError = new TransferLimitError(`download ${remotePath}: the guest sent more than the ${announced} bytes it announced; stopped`);
        if (pendingRef) session.fail(pendingRef, writeError as Error);
        return consumed();
      }
      hash.update(payload);
      chain = chain.then(async () => {
        if (writeError !== undefined) return;
        try {
          let off = 0;
          while (off < payload.length) off += (await fh.write(payload, off, payload.length - off)).bytesWritten;
          consumed();
        } catch (e) {
          writeError = e;
          if (pendingRef) session.fail(pendingRef, e as Error);
        }
      });
    },
  };
  let closed = false;
  try {
    const { result, pending } = session.request('download', { path: remotePath, maxBytes: announced }, {
      sinks: { file: sink },
      idleMs: session.transferIdleTimeoutMs,
      ...(options.signal === undefined ? {} : { signal: options.signal }),
    });
    pendingRef = pending;
    let raw: unknown;
    try {
      raw = await result;
    } finally {
      await chain;
    }
    if (writeError !== undefined) throw writeError;
    const r = validateResult(DownloadResultSchema, raw, 'download');
    const sha256 = hash.digest('hex');
    if (r.size !== bytes || r.sha256 !== sha256) {
      throw new AgentProtocolError(
        `agent download ${remotePath}: reported ${r.size} bytes sha256 ${r.sha256}, received ${bytes} bytes sha256 ${sha256}`,
        { received: r },
      );
    }
    await fh.sync();
    await fh.close();
    closed = true;
    await rename(tmp, localPath);
    return { bytes, sha256, mode: r.mode };
  } catch (err) {
    if (!closed) await fh.close().catch(() => undefined);
    await unlink(tmp).catch(() => undefined);
    throw writeError instanceof TransferLimitError ? writeError : err;
  }
}

async function hashFile(path: string): Promise<string> {
  const h = createHash('sha256');
  for await (const chunk of createReadStream(path, { highWaterMark: HASH_READ_BYTES })) h.update(chunk as Buffer);
  return h.digest('hex');
}
