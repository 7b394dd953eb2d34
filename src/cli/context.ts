/** What every command gets: the output, the raw argv (for strict option values) and the runtime. */
import { Runtime } from '../runtime/index.ts';
import { Output } from './output.ts';

export class CommandContext {
  private rt: Promise<Runtime> | undefined;

  constructor(
    readonly out: Output,
    /** The arguments after the command group, as typed. */
    readonly argv: readonly string[],
    /**
     * Aborted when nobody reads goshipctl's output any more (stdout closed:
     * `goshipctl vm exec … | head`). Streaming commands stop and cancel their
     * work in the guest.
     */
    readonly signal: AbortSignal = new AbortController().signal,
  ) {}

  runtime(): Promise<Runtime> {
    this.rt ??= Runtime.open();
    return this.rt;
  }
}

/** Shell-quotes one argument for copy-paste (POSIX sh). */
export function shellQuote(arg: string): string {
  if (arg !== '' && /^[A-Za-z0-9_@%+=:,./-]+$/.test(arg)) return arg;
  return `'${arg.replace(/'/g, `'\\''`)}'`;
}

/** Human-readable bytes (binary units). */
export function bytes(n: number | undefined): string {
  if (n === undefined) return '-';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = n;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${i === 0 ? v : v.toFixed(v < 10 ? 1 : 0)} ${units[i]}`;
}

/** "3m12s" style duration from an ISO timestamp until now. */
export function since(iso: string | undefined, now = Date.now()): string {
  if (!iso) return '-';
  let s = Math.max(0, Math.round((now - Date.parse(iso)) / 1000));
  const d = Math.floor(s / 86400);
  s -= d * 86400;
  const h = Math.floor(s / 3600);
  s -= h * 3600;
  const m = Math.floor(s / 60);
  s -= m * 60;
  return d ? `${d}d${h}h` : h ? `${h}h${m}m` : m ? `${m}m${s}s` : `${s}s`;
}
