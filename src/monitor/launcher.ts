/**
 * How a fresh VM's monitor and its QEMU start together (pure): one short
 * `/bin/sh` forks QEMU and then execs Node as the monitor, so the two
 * start-ups overlap (Node's alone took ~80 ms here, QEMU's to its QMP socket
 * ~55 ms) and the monitor is still QEMU's parent: `exec` keeps the shell's
 * PID, so QEMU's exit status waits for the monitor in its zombie's
 * /proc/PID/stat (src/proc.ts `statExit`). Node's child_process does not know
 * the child; the monitor hears its end by SIGCHLD (src/monitor/early.ts).
 *
 * The script is a constant: QEMU's argv, the log path and the monitor's argv
 * come in as positional parameters, never as shell text.
 */

export const SH = '/bin/sh';

/**
 * $1 QEMU's log, $2 how many words QEMU's command has, then those words (the
 * jailed command, src/jail/command.ts: it scrubs QEMU's environment itself),
 * then the monitor's command. The background list keeps only QEMU's words
 * (`for` expands its list once, so appending while it runs is safe) and gives
 * QEMU no stdin, its log for output and not the report pipe (fd 3). QEMU's
 * PID goes to the starter first (a line on fd 3), so that a monitor that dies
 * before its report does not leave QEMU running unseen.
 */
export const LAUNCH_SCRIPT = [
  'log=$1 n=$2',
  'shift 2',
  '{',
  '  i=0',
  '  for a do',
  '    [ "$i" -lt "$n" ] && set -- "$@" "$a"',
  '    i=$((i + 1))',
  '  done',
  '  shift "$i"',
  '  exec "$@" </dev/null >>"$log" 2>&1 3>&-',
  '} &',
  'pid=$!',
  `printf '{"t":"forked","pid":%s}\\n' "$pid" >&3`,
  'shift "$n"',
  'exec "$@" --qemu-pid "$pid"',
].join('\n');

export interface LaunchCommand {
  /** The words that start QEMU in its jail (`Launch.exec`). */
  qemuExec: readonly string[];
  /** Where QEMU's stdout and stderr go (appended). */
  qemuLog: string;
  /** The monitor's argv, Node first; the launcher appends `--qemu-pid PID`. */
  monitorArgv: readonly string[];
}

/** Pure: the launcher's argv (run it with the monitor's stdio and environment). */
export function launcherArgv(c: LaunchCommand): string[] {
  return [SH, '-c', LAUNCH_SCRIPT, 'goship-launch', c.qemuLog, String(c.qemuExec.length), ...c.qemuExec, ...c.monitorArgv];
}
