/**
 * Everything goshipctl prints goes through here: tables or JSON on stdout,
 * errors on stderr in one line (plus the hint), progress on a TTY only.
 */
import pc from 'picocolors';
import { GoshipError, type ErrorCode } from '../errors.ts';

/** Exit codes, stable for scripts (docs/cli.md). */
export const EXIT = {
  ok: 0,
  failed: 1,
  invalid: 2,
  notFound: 3,
  conflict: 4,
} as const;

type ExitStatus = (typeof EXIT)[keyof typeof EXIT];

/**
 * Every error code's exit status. A `Record` over ErrorCode, so a code added
 * to src/errors.ts without an exit status here does not compile (and a test
 * checks the table against ERROR_CODES as well).
 */
export const CODE_EXIT: Record<ErrorCode, ExitStatus> = {
  EINVALID: EXIT.invalid,
  EPARSE: EXIT.invalid,
  EUSAGE: EXIT.invalid,
  ENOTFOUND: EXIT.notFound,
  EIMAGE_MISSING: EXIT.notFound,
  EEXIST: EXIT.conflict,
  ESTATE: EXIT.conflict,
  EPORT_TAKEN: EXIT.conflict,
  ENOTSUP: EXIT.failed,
  EINTERNAL: EXIT.failed,
  EREAD: EXIT.failed,
  ESTOP: EXIT.failed,
  EAPP_START: EXIT.failed,
  ELIMIT: EXIT.failed,
  EQEMU_MISSING: EXIT.failed,
  EQEMU_VERSION: EXIT.failed,
  EQEMU_START: EXIT.failed,
  EQEMU_SPAWN: EXIT.failed,
  EQEMU_EXIT: EXIT.failed,
  EVIRTIOFSD: EXIT.failed,
  EQEMU_OPTS: EXIT.failed,
  EQEMU_IMG: EXIT.failed,
  EJAIL: EXIT.failed,
  EMONITOR: EXIT.failed,
  EVMSTATE: EXIT.failed,
  EQMP_CONNECT: EXIT.failed,
  EQMP_COMMAND: EXIT.failed,
  EQMP_CLOSED: EXIT.failed,
  EQMP_TIMEOUT: EXIT.failed,
  EQMP_FRAME: EXIT.failed,
  EQMP_PROTOCOL: EXIT.failed,
  EQMP_STATE: EXIT.failed,
  EQMP_HMP: EXIT.failed,
  EQMP_EVENTS_OVERFLOW: EXIT.failed,
  EAGENT_TIMEOUT: EXIT.failed,
  EAGENT_RUNTIME: EXIT.failed,
  EAGENT_CLOSED: EXIT.failed,
  EAGENT_PROTOCOL: EXIT.failed,
  EAGENT_REMOTE: EXIT.failed,
  EAGENT_BUNDLE: EXIT.failed,
  EGUEST: EXIT.failed,
  EGUEST_BOOT: EXIT.failed,
  EIMAGE_BUILD: EXIT.failed,
  EIMAGE_IMPORT: EXIT.failed,
  EIMAGE_MANIFEST: EXIT.failed,
  EIMAGE_BROKEN: EXIT.failed,
  EIMAGE_FORMAT: EXIT.failed,
  EIMAGE_CHECKSUM: EXIT.failed,
  ESEED: EXIT.failed,
  ESTORE_CORRUPT: EXIT.failed,
  ESTORE_VERSION: EXIT.failed,
  ESTORE_LOCK: EXIT.failed,
  ESTORE_INVALID: EXIT.failed,
  ENODE_UNREACHABLE: EXIT.failed,
  ENODE_VERSION: EXIT.failed,
  ENODE_STAGE: EXIT.failed,
};

export function exitCodeFor(err: unknown): ExitStatus {
  return err instanceof GoshipError ? (CODE_EXIT[err.code] ?? EXIT.failed) : EXIT.failed;
}

/**
 * Pure: `text` without terminal control characters, for printing text that
 * may come from a guest (its hostname, an agent's error message) or from any
 * file: C0 controls but tab and newline, DEL, the C1 range (which holds the
 * 8-bit CSI and OSC introducers) and the ESC of escape sequences become U+FFFD,
 * so nothing a guest wrote can move the cursor, retitle the terminal or
 * write to the clipboard.
 */
export function printable(text: string): string {
  return text.replace(/[\u0000-\u0008\u000b-\u001f\u007f-\u009f]/g, '\ufffd');
}

export interface OutputOptions {
  json: boolean;
  stdout?: NodeJS.WriteStream;
  stderr?: NodeJS.WriteStream;
  env?: NodeJS.ProcessEnv;
}

export class Output {
  readonly json: boolean;
  readonly color: boolean;
  readonly interactive: boolean;
  private readonly out: NodeJS.WriteStream;
  private readonly err: NodeJS.WriteStream;

  constructor(opts: OutputOptions) {
    const env = opts.env ?? process.env;
    this.json = opts.json;
    this.out = opts.stdout ?? process.stdout;
    this.err = opts.stderr ?? process.stderr;
    this.color = !env.NO_COLOR && Boolean(this.out.isTTY) && env.TERM !== 'dumb';
    this.interactive = !this.json && Boolean(this.err.isTTY) && env.TERM !== 'dumb';
  }

  /** Prints `data` as JSON in --json mode, else the human rendering. */
  result(data: unknown, human: () => string): void {
    if (this.json) this.out.write(`${JSON.stringify(data, null, 2)}\n`);
    else {
      const text = printable(human());
      if (text) this.out.write(text.endsWith('\n') ? text : `${text}\n`);
    }
  }

  /** Raw text to stdout (console output, exec streams). */
  write(chunk: string | Uint8Array): void {
    this.out.write(chunk);
  }

  /** A note for humans on stderr; silent in --json mode. */
  note(text: string): void {
    if (!this.json) this.err.write(`${printable(text)}\n`);
  }

  /** One line on stderr, the hint on its own line; in --json mode a JSON object on stderr. */
  error(err: unknown): void {
    const e =
      err instanceof GoshipError
        ? err
        : new GoshipError('EINTERNAL', err instanceof Error ? err.message : String(err), { cause: err });
    if (this.json) {
      this.err.write(`${JSON.stringify({ error: e.toJSON() })}\n`);
      return;
    }
    const label = this.colorize(pc.red, 'error:');
    this.err.write(`goshipctl: ${label} ${printable(e.message.replace(/\n/g, ' '))}\n`);
    if (e.hint) this.err.write(`${this.colorize(pc.dim, 'hint:')} ${printable(e.hint.replace(/\n/g, ' '))}\n`);
    if (process.env.GOSHIP_DEBUG && err instanceof Error && err.stack) this.err.write(`${err.stack}\n`);
  }

  colorize(fn: (s: string) => string, s: string): string {
    return this.color ? fn(s) : s;
  }

  /** A progress line on a TTY (spinner + elapsed seconds); nothing otherwise. */
  progress(initial: string): Progress {
    return new Progress(this.interactive ? this.err : undefined, initial);
  }
}

const FRAMES = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];

export class Progress {
  private text: string;
  private frame = 0;
  private readonly started = Date.now();
  private readonly timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly stream: NodeJS.WriteStream | undefined,
    initial: string,
  ) {
    this.text = initial;
    if (stream) {
      this.timer = setInterval(() => this.render(), 100);
      this.timer.unref();
      this.render();
    }
  }

  update(text: string): void {
    this.text = text;
    this.render();
  }

  /** A line that stays above the progress line (a step reached). */
  note(line: string): void {
    if (!this.stream) return;
    this.stream.write(`\r\x1b[2K${line}\n`);
    this.render();
  }

  private render(): void {
    if (!this.stream) return;
    const secs = ((Date.now() - this.started) / 1000).toFixed(1);
    this.frame = (this.frame + 1) % FRAMES.length;
    this.stream.write(`\r\x1b[2K${FRAMES[this.frame]} ${this.text} (${secs}s)`);
  }

  /** Clears the line; prints a final message when given. */
  done(final?: string): void {
    if (this.timer) clearInterval(this.timer);
    if (!this.stream) return;
    this.stream.write('\r\x1b[2K');
    if (final) this.stream.write(`${final}\n`);
  }
}

/** A plain aligned table. */
export function table(headers: string[], rows: string[][]): string {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]) =>
    cells
      .map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i]!)))
      .join('  ')
      .trimEnd();
  return [line(headers), ...rows.map(line)].join('\n');
}
