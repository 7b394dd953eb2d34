/**
 * Every error code GoShip raises, declared once, each with what it means.
 * Scripts match on the code (`--json` prints it); the CLI maps each to an
 * exit status (src/cli/output.ts, checked to cover every code by a test);
 * docs/cli.md lists them. A module's error classes narrow `code` to the
 * subset they raise.
 */
export const ERROR_CODES = {
  // bad input (exit 2)
  EINVALID: 'invalid input: a flag, a spec field, a name, a size or a path (every problem is listed)',
  EPARSE: 'a spec or state file that is not valid YAML or JSON',
  EUSAGE: 'a command line goshipctl cannot parse (unknown command, missing argument)',
  // not found (exit 3)
  ENOTFOUND: 'no such project, VM, image, app or node',
  EIMAGE_MISSING: 'the image a project or VM needs is not there',
  // conflict (exit 4)
  EEXIST: 'the name is taken',
  ESTATE: 'the record is in the wrong state for the command (running, stopped, busy, broken)',
  EPORT_TAKEN: 'a host port is forwarded by another project, VM or app, or bound by another program',
  // failed (exit 1)
  ENOTSUP: 'something GoShip does not do (yet), said plainly',
  EINTERNAL: 'a bug: an error GoShip did not expect',
  EREAD: 'a file GoShip was asked to read cannot be read',
  ESTOP: 'a VM that is still running after every step of the stop escalation',
  EAPP_START: 'the new version of an app did not start (the version before runs again)',
  ELIMIT: 'a transfer over its bound: the --max-size limit, the free disk space, or the size the guest announced',
  // QEMU and qemu-img
  EQEMU_MISSING: 'qemu-system-x86_64 is not installed',
  EQEMU_VERSION: 'the output of qemu-system-x86_64 --version cannot be read',
  EQEMU_START: 'QEMU did not come up (no QMP socket)',
  EQEMU_SPAWN: 'QEMU could not be started at all',
  EQEMU_EXIT: 'QEMU exited while it was being started',
  EVIRTIOFSD: "a shared folder's virtiofsd could not be started (QEMU was not)",
  EQEMU_OPTS: 'a value that cannot be written as a QEMU option',
  EQEMU_IMG: 'qemu-img failed',
  EJAIL: "the jail refused: a VM's file that is not what GoShip made (a backing file, a link), a run directory that is not the user's own, or a file the VM's identity cannot reach",
  EMONITOR: "a VM's monitor process could not be started or did not answer",
  EVMSTATE: "a VM's saved state (memory and devices) cannot be written or restored: truncated, not QEMU's, or refused by QEMU",
  // QMP
  EQMP_CONNECT: 'the QMP socket cannot be reached',
  EQMP_COMMAND: 'QEMU refused a QMP command',
  EQMP_CLOSED: 'the QMP connection closed',
  EQMP_TIMEOUT: 'QEMU did not answer a QMP command in time',
  EQMP_FRAME: 'a QMP line over the size limit',
  EQMP_PROTOCOL: 'QEMU sent something that is not QMP',
  EQMP_STATE: 'a QMP call in the wrong connection state',
  EQMP_HMP: 'an HMP command (through human-monitor-command) failed',
  EQMP_EVENTS_OVERFLOW: 'an event listener fell too far behind',
  // the agent channel
  EAGENT_TIMEOUT: 'the guest agent did not answer in time',
  EAGENT_RUNTIME: 'the guest cannot run the agent: no Node.js 18 or newer in it (the guest said so instead of a hello)',
  EAGENT_CLOSED: 'the agent channel closed (agent restarted, guest rebooted, client closed)',
  EAGENT_PROTOCOL: 'the guest sent something that breaks the agent protocol',
  EAGENT_REMOTE: 'the guest agent answered with an error (its own code is kept)',
  EAGENT_BUNDLE: 'the guest agent bundle (dist/goship-agent.mjs) is missing',
  EGUEST: 'the guest did not do what GoShip asked of it through its agent (authorize an SSH key, show its host keys)',
  EGUEST_BOOT: "the guest's boot did not finish in time (network not online, cloud-init not done) or cloud-init reported errors",
  // images
  EIMAGE_BUILD: 'an image build failed',
  EIMAGE_IMPORT: 'an image import failed',
  EIMAGE_MANIFEST: "an image's manifest cannot be read",
  EIMAGE_BROKEN: 'an image directory without its disk',
  EIMAGE_FORMAT: 'a base image that is neither qcow2 nor raw',
  EIMAGE_CHECKSUM: "an image's disk does not match its manifest",
  // cloud-init
  ESEED: 'the cloud-init seed ISO could not be written',
  // the store
  ESTORE_CORRUPT: 'the state file is corrupt (a backup was kept)',
  ESTORE_VERSION: 'the state file was written by a newer GoShip',
  ESTORE_LOCK: 'the state lock could not be taken in time',
  ESTORE_INVALID: 'a write that would break the state schema was refused',
  // nodes (other hosts' GoShips over SSH)
  ENODE_UNREACHABLE: 'a node cannot be reached over SSH, refused the login, or its host key is not the one known',
  ENODE_VERSION: "a node's GoShip is missing or speaks another version",
  ENODE_STAGE: "a local file could not be sent to a node (or a download brought back) for a command that runs there",
} as const;

export type ErrorCode = keyof typeof ERROR_CODES;

/**
 * The base of every error GoShip raises on purpose.
 *
 * `code` is stable (scripts match on it, `--json` prints it); the message says
 * "<what failed>: <why>"; `hint`, when present, is the fix, printed by the CLI
 * on its own line. The original error, if any, is kept in `cause`.
 */
export class GoshipError extends Error {
  readonly code: ErrorCode;
  readonly hint: string | undefined;

  constructor(code: ErrorCode, message: string, options: { hint?: string; cause?: unknown } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = new.target.name;
    this.code = code;
    this.hint = options.hint;
  }

  /** The stable shape `--json` prints for an error. */
  toJSON(): { code: ErrorCode; message: string; hint?: string } {
    return this.hint === undefined
      ? { code: this.code, message: this.message }
      : { code: this.code, message: this.message, hint: this.hint };
  }
}

/** One problem found in user input, with the path of the field (`disks[1].path`). */
export interface Issue {
  path: string;
  message: string;
}

/** Bad input: every problem at once, each naming its field and what is allowed. */
export class ValidationError extends GoshipError {
  readonly issues: Issue[];

  constructor(issues: Issue[], options: { hint?: string; subject?: string } = {}) {
    const subject = options.subject ?? 'invalid input';
    const text = issues.map((i) => (i.path ? `${i.path}: ${i.message}` : i.message)).join('; ');
    super('EINVALID', `${subject}: ${text}`, options.hint === undefined ? {} : { hint: options.hint });
    this.issues = issues;
  }
}
