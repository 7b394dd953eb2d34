/** Small checks shared by device validators. */
import type { Issue } from '../../errors.ts';
import { UNIX_SOCKET_PATH_MAX } from '../../layout.ts';

/** `file does not exist: PATH` unless the injected check finds it. */
export function fileExists(path: string, at: string, exists: (p: string) => boolean): Issue[] {
  return exists(path) ? [] : [{ path: at, message: `file does not exist: ${path}` }];
}

/** A path handed to QEMU: absolute, without newline or NUL. */
export function plainPath(path: string, at: string): Issue[] {
  if (!path.startsWith('/')) return [{ path: at, message: `expected an absolute path, got ${JSON.stringify(path)}` }];
  if (/[\n\r\0]/.test(path)) return [{ path: at, message: 'a path must not contain a newline or NUL byte' }];
  return [];
}

/** A unix socket path must fit in `sun_path` (107 bytes plus NUL on Linux). */
export function socketPath(path: string, at: string): Issue[] {
  const issues = plainPath(path, at);
  if (issues.length > 0) return issues;
  const bytes = Buffer.byteLength(path);
  if (bytes <= UNIX_SOCKET_PATH_MAX) return [];
  return [
    {
      path: at,
      message: `unix socket path is ${bytes} bytes, more than the ${UNIX_SOCKET_PATH_MAX} Linux allows: ${path}; use a shorter run directory (GOSHIP_RUN)`,
    },
  ];
}
