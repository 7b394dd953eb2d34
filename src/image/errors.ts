/** Every error src/image raises: builds, imports, the catalogue and manifests. */
import { GoshipError, type ErrorCode } from '../errors.ts';

export type ImageErrorCode = Extract<
  ErrorCode,
  'EIMAGE_BUILD' | 'EIMAGE_IMPORT' | 'EIMAGE_MANIFEST' | 'EIMAGE_BROKEN' | 'EIMAGE_CHECKSUM' | 'EAGENT_BUNDLE' | 'ENOTFOUND' | 'EEXIST'
>;

export class ImageError extends GoshipError {
  declare readonly code: ImageErrorCode;

  constructor(code: ImageErrorCode, message: string, options: { hint?: string; cause?: unknown } = {}) {
    super(code, message, options);
  }
}
