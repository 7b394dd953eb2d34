/**
 * `images/NAME/manifest.json`: what an image is, how to boot it, and the key
 * that decides whether a build can be skipped. Read with a schema, so a
 * hand-edited or truncated manifest is a clear error, not a crash later.
 */
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { readFile, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import * as v from 'valibot';
import { ImageError } from './errors.ts';
import { FILES } from '../layout.ts';

/** Bump when the manifest's shape changes incompatibly. */
export const MANIFEST_FORMAT = 1;

const BaseSchema = v.object({
  /** Always `base.qcow2` (FILES.imageBase). */
  file: v.string(),
  format: v.picklist(['qcow2', 'raw']),
  /** Bytes on disk. */
  sizeBytes: v.number(),
  /** The disk size the guest sees (an overlay may be bigger). */
  virtualSizeBytes: v.number(),
  sha256: v.pipe(v.string(), v.regex(/^[0-9a-f]{64}$/)),
});

export const ManifestSchema = v.object({
  format: v.literal(MANIFEST_FORMAT),
  name: v.string(),
  /** `built` by buildImage, `imported` by importImage. */
  source: v.picklist(['built', 'imported']),
  /** ISO 8601, when the build (or the import) finished. */
  builtAt: v.string(),
  /** Debian suite (built images). */
  suite: v.optional(v.string()),
  /** The package list given to mmdebstrap, sorted (built images). */
  packages: v.optional(v.array(v.string())),
  /** The kernel package version inside the image, e.g. `6.1.0-56-cloud-amd64`. */
  kernelVersion: v.optional(v.string()),
  /** The cache key (built images): sha256 of every build input. */
  key: v.optional(v.string()),
  builderVersion: v.optional(v.number()),
  /** Whether the guest agent and its unit are in the image (else cloud-init installs them). */
  agentBaked: v.boolean(),
  /** sha256 of the baked agent bundle. */
  agentSha256: v.optional(v.string()),
  /** The boot probe unit is baked in (measurement images). */
  bootProbe: v.optional(v.boolean()),
  base: BaseSchema,
  /** File name of the kernel beside the manifest (`vmlinuz`), or null: firmware boot. */
  kernel: v.nullable(v.string()),
  /** File name of the initrd beside the manifest, or null. */
  initrd: v.nullable(v.string()),
  /** Kernel command line for direct kernel boot, or null. */
  cmdline: v.nullable(v.string()),
  /** Seconds the build took (built images). */
  buildSeconds: v.optional(v.number()),
  /** Where an imported image came from (the path given). */
  importedFrom: v.optional(v.string()),
});

export type ImageManifest = v.InferOutput<typeof ManifestSchema>;

/** Parses manifest text; throws ImageError EIMAGE_MANIFEST naming the first bad field. */
export function parseManifest(text: string, where: string): ImageManifest {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (cause) {
    throw new ImageError('EIMAGE_MANIFEST', `image manifest ${where} is not JSON: ${(cause as Error).message}`, {
      hint: 'rebuild or re-import the image',
      cause,
    });
  }
  const r = v.safeParse(ManifestSchema, raw);
  if (!r.success) {
    const issue = r.issues[0];
    const path = issue?.path?.map((p) => String(p.key)).join('.') ?? '';
    throw new ImageError('EIMAGE_MANIFEST', `image manifest ${where} is invalid: ${path ? `${path}: ` : ''}${issue?.message ?? 'unknown problem'}`, {
      hint: 'rebuild or re-import the image',
    });
  }
  return r.output;
}

/** Reads `dir/manifest.json`; `undefined` when there is none. */
export async function readManifest(dir: string): Promise<ImageManifest | undefined> {
  const file = join(dir, FILES.imageManifest);
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (cause) {
    if ((cause as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new ImageError('EIMAGE_MANIFEST', `cannot read image manifest ${file}: ${(cause as Error).message}`, { cause });
  }
  return parseManifest(text, file);
}

/** Writes `dir/manifest.json` through a temporary file and a rename. */
export async function writeManifest(dir: string, manifest: ImageManifest): Promise<void> {
  const file = join(dir, FILES.imageManifest);
  const tmp = `${file}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
  await writeFile(tmp, `${JSON.stringify(manifest, null, 2)}\n`, { mode: 0o644 });
  await rename(tmp, file);
}

/** sha256 of a file, streamed. */
export async function sha256File(path: string): Promise<string> {
  const h = createHash('sha256');
  for await (const chunk of createReadStream(path)) h.update(chunk as Buffer);
  return h.digest('hex');
}
