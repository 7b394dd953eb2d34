/**
 * `upload` and `download`: file transfer as flow-controlled binary streams.
 *
 * upload writes to a temporary file in the target's directory, checks size
 * and sha256, applies owner and mode, fsyncs, renames over the target and
 * fsyncs the directory: the target is either the old file or the complete new
 * one, never a partial write.
 */
import { createHash, randomBytes } from 'node:crypto';
import { open, rename, stat, unlink, type FileHandle } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import {
  DownloadParamsSchema,
  REMOTE_CODES,
  StatParamsSchema,
  UploadParamsSchema,
  type DownloadResult,
  type StatResult,
  type UploadResult,
} from '../../src/protocol/index.ts';
import { RemoteError, parseParams, type Call } from './session.ts';

export async function uploadMethod(call: Call, rawParams: unknown): Promise<UploadResult> {
  const p = parseParams(UploadParamsSchema, rawParams, 'upload');
  const dir = dirname(p.path);
  const tmp = join(dir, `.${basename(p.path)}.goship-${randomBytes(6).toString('hex')}.tmp`);
  const fh = await open(tmp, 'wx', 0o600);
  let closed = false;
  try {
    const hash = createHash('sha256');
    let bytes = 0;
    for await (const chunk of call.inbound('file')) {
      if (bytes + chunk.length > p.size) {
        throw new RemoteError(REMOTE_CODES.size, `upload ${p.path}: more than the announced ${p.size} bytes`);
      }
      // The write runs on the thread pool while this thread hashes.
      const written = writeAll(fh, chunk);
      hash.update(chunk);
      await written;
      bytes += chunk.length;
    }
    if (bytes !== p.size) throw new RemoteError(REMOTE_CODES.size, `upload ${p.path}: received ${bytes} bytes, announced ${p.size}`);
    const sha256 = hash.digest('hex');
    if (sha256 !== p.sha256) {
      throw new RemoteError(REMOTE_CODES.checksum, `upload ${p.path}: sha256 of the received bytes is ${sha256}, announced ${p.sha256}`);
    }
    if (p.uid !== undefined || p.gid !== undefined) await fh.chown(p.uid ?? -1, p.gid ?? -1);
    // chmod after chown: chown clears the set-id bits.
    await fh.chmod(p.mode ?? 0o644);
    await fh.sync();
    await fh.close();
    closed = true;
    await rename(tmp, p.path);
    await syncDir(dir);
    return { bytes, sha256 };
  } catch (err) {
    if (!closed) await fh.close().catch(() => undefined);
    await unlink(tmp).catch(() => undefined);
    throw err;
  }
}

async function writeAll(fh: FileHandle, chunk: Buffer): Promise<void> {
  let off = 0;
  while (off < chunk.length) {
    const { bytesWritten } = await fh.write(chunk, off, chunk.length - off);
    off += bytesWritten;
  }
}

async function syncDir(dir: string): Promise<void> {
  const d = await open(dir, 'r');
  try {
    await d.sync();
  } finally {
    await d.close();
  }
}

export async function downloadMethod(call: Call, rawParams: unknown): Promise<DownloadResult> {
  const p = parseParams(DownloadParamsSchema, rawParams, 'download');
  const fh = await open(p.path, 'r');
  try {
    const st = await fh.stat();
    if (!st.isFile()) throw new RemoteError('EISDIR', `download ${p.path}: not a regular file`);
    if (p.maxBytes !== undefined && st.size > p.maxBytes) {
      throw new RemoteError(REMOTE_CODES.size, `download ${p.path}: ${st.size} bytes, more than the ${p.maxBytes} the host takes`);
    }
    const hash = createHash('sha256');
    // A file that grows while it is read is cut at the bound: one byte more tells the host.
    const end = p.maxBytes === undefined ? undefined : p.maxBytes;
    const source = fh.createReadStream({ highWaterMark: call.limits.chunk, autoClose: false, start: 0, ...(end === undefined ? {} : { end }) });
    const size = await call.sendStream('file', source, (chunk) => hash.update(chunk));
    if (p.maxBytes !== undefined && size > p.maxBytes) {
      throw new RemoteError(REMOTE_CODES.size, `download ${p.path}: the file grew past the ${p.maxBytes} bytes the host takes`);
    }
    return { size, sha256: hash.digest('hex'), mode: st.mode & 0o7777 };
  } finally {
    await fh.close().catch(() => undefined);
  }
}

export async function statMethod(_call: Call, rawParams: unknown): Promise<StatResult> {
  const p = parseParams(StatParamsSchema, rawParams, 'stat');
  const st = await stat(p.path);
  return { type: st.isFile() ? 'file' : st.isDirectory() ? 'directory' : 'other', size: st.size, mode: st.mode & 0o7777, mtimeMs: st.mtimeMs };
}
