/**
 * Limits and names of the agent protocol, shared by the host (src/serial) and
 * the guest agent (guest-agent/). Runs on the guest's Node 18: built-ins only.
 */

/** The virtio-serial port name the guest agent opens (`/dev/virtio-ports/<name>`): a reverse-DNS name. */
export const AGENT_PORT_NAME = 'org.goship.agent.0';

/** Bumped on any incompatible change of the wire format or of a method. */
export const PROTOCOL_VERSION = 1;

/** Longest control line (JSON + newline) accepted; a longer line is discarded up to the next newline. */
export const MAX_LINE = 1024 * 1024;

/**
 * Largest payload of one binary data frame this side accepts (and announces
 * as `lim.chunk` in its sync or hello). A header announcing more breaks the
 * framing.
 */
export const MAX_CHUNK = 1024 * 1024;

/** Flow-control window per stream this side grants (announced as `lim.window`): bytes a sender may have unacknowledged. */
export const STREAM_WINDOW = 4 * 1024 * 1024;

/** What a peer accepts: its largest data frame and its window per stream. */
export interface FlowLimits {
  chunk: number;
  window: number;
}

/** This side's limits, announced in its sync (host) or hello (agent). */
export const OWN_LIMITS: Readonly<FlowLimits> = Object.freeze({ chunk: MAX_CHUNK, window: STREAM_WINDOW });

/**
 * What a peer that announces no limits accepts: the fixed limits of protocol 1
 * before they were announced (an agent baked into an older image, an older
 * host). Never exceeded towards such a peer.
 */
export const UNANNOUNCED_LIMITS: Readonly<FlowLimits> = Object.freeze({ chunk: 256 * 1024, window: 1024 * 1024 });

/** The smallest frame a peer may ask for: below it, the messages of a transfer would be its cost. */
export const MIN_CHUNK = 4 * 1024;

/** A receiver acknowledges consumed bytes once at least this many are unacknowledged. */
export const ACK_THRESHOLD = 64 * 1024;

/** Longest sync nonce accepted. */
export const MAX_NONCE = 128;

/**
 * Stream names: `stdin` (host → guest: exec input, a build context, an image
 * archive), `stdout`/`stderr` (guest → host: output, progress, logs), `file`
 * (both ways), `ctl` (host → guest: small JSON control messages of a running
 * request, one per frame, such as a terminal's new size).
 */
export const STREAM_NAMES = ['stdin', 'stdout', 'stderr', 'file', 'ctl'] as const;
export type StreamName = (typeof STREAM_NAMES)[number];

/** Every method the agent implements. */
export const METHODS = [
  'ping',
  'info',
  'exec',
  'upload',
  'download',
  'stat',
  'shutdown',
  'tunnel',
  'docker.version',
  'app.image.build',
  'app.image.load',
  'app.image.pull',
  'app.create',
  'app.start',
  'app.stop',
  'app.restart',
  'app.remove',
  'app.rename',
  'app.inspect',
  'app.list',
  'app.logs',
  'app.exec',
] as const;

/**
 * Error codes the agent puts in `{"t":"res","e":{"code"}}`. Errors from the
 * guest's system calls keep their errno name (`ENOENT`, `EACCES`, …).
 */
export const REMOTE_CODES = {
  unknownMethod: 'EUNKNOWN_METHOD',
  badRequest: 'EBADREQ',
  badLine: 'EBADLINE',
  lineTooLong: 'ELINE_TOO_LONG',
  duplicateId: 'EDUPLICATE_ID',
  notSupported: 'ENOTSUP',
  checksum: 'ECHECKSUM',
  size: 'ESIZE',
  cancelled: 'ECANCELLED',
  flow: 'EFLOW',
  internal: 'EINTERNAL',
} as const;
