/**
 * Typed QMP commands. Each wrapper takes one object: the command's arguments
 * in camelCase, plus an optional `timeoutMs` for that call. Replies keep
 * QEMU's field names (see types.ts).
 */
import { ValidationError, type Issue } from '../errors.ts';
import { QmpClosedError, QmpHmpError } from './errors.ts';
import { QmpProtocol, type CallOptions, type ConnectOptions, type QmpListenerMap, type QmpProtocolOptions } from './protocol.ts';
import type {
  QmpBlockInfo,
  QmpChardevInfo,
  QmpCpuInfoFast,
  QmpJobInfo,
  QmpMigrationInfo,
  QmpStatusInfo,
  QmpVersionInfo,
} from './types.ts';

export interface QmpClientOptions extends QmpProtocolOptions, ConnectOptions {
  /** Receives every event from the first line on, including any sent during negotiation. */
  onEvent?: QmpListenerMap['event'];
}

export interface HumanMonitorCommandArgs extends CallOptions {
  /** The HMP command line (`info network`). */
  commandLine: string;
  /** The CPU HMP commands that need one act on (`cpu-index`). */
  cpuIndex?: number;
}

export interface HostfwdAddArgs extends CallOptions {
  /** The `-netdev user,id=…` to act on; default: QEMU's first user-mode netdev. */
  netdevId?: string;
  /** Default 'tcp'. */
  protocol?: 'tcp' | 'udp';
  /** Host IPv4 address to bind; default: all addresses. */
  hostAddr?: string;
  hostPort: number;
  /** Guest IPv4 address; default: the guest's DHCP address (10.0.2.15). */
  guestAddr?: string;
  guestPort: number;
}

export interface HostfwdRemoveArgs extends CallOptions {
  netdevId?: string;
  protocol?: 'tcp' | 'udp';
  hostAddr?: string;
  hostPort: number;
}

export interface RingbufReadArgs extends CallOptions {
  /** The ringbuf chardev id. */
  device: string;
  /** Most bytes to read. */
  size: number;
  /** How QEMU encodes the bytes: 'utf8' (default; invalid sequences replaced) or 'base64'. */
  format?: 'utf8' | 'base64';
}

const QEMU_ID = /^[A-Za-z][A-Za-z0-9._-]*$/;
const IPV4 = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/;

function callOptions(options: CallOptions): CallOptions {
  return options.timeoutMs === undefined ? {} : { timeoutMs: options.timeoutMs };
}

function checkPort(issues: Issue[], path: string, value: unknown): void {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 1 || value > 65535) {
    issues.push({ path, message: `expected a port number 1-65535, got ${JSON.stringify(value)}` });
  }
}

function checkHostfwd(args: HostfwdAddArgs | HostfwdRemoveArgs, withGuest: boolean): void {
  const issues: Issue[] = [];
  if (args.netdevId !== undefined && !QEMU_ID.test(args.netdevId)) {
    issues.push({
      path: 'netdevId',
      message: `expected a QEMU id (a letter, then letters, digits, '.', '_', '-'), got ${JSON.stringify(args.netdevId)}`,
    });
  }
  if (args.protocol !== undefined && args.protocol !== 'tcp' && args.protocol !== 'udp') {
    issues.push({ path: 'protocol', message: `expected 'tcp' or 'udp', got ${JSON.stringify(args.protocol)}` });
  }
  if (args.hostAddr !== undefined && args.hostAddr !== '' && !IPV4.test(args.hostAddr)) {
    issues.push({ path: 'hostAddr', message: `expected an IPv4 address, got ${JSON.stringify(args.hostAddr)}` });
  }
  checkPort(issues, 'hostPort', args.hostPort);
  if (withGuest) {
    const add = args as HostfwdAddArgs;
    if (add.guestAddr !== undefined && add.guestAddr !== '' && !IPV4.test(add.guestAddr)) {
      issues.push({ path: 'guestAddr', message: `expected an IPv4 address, got ${JSON.stringify(add.guestAddr)}` });
    }
    checkPort(issues, 'guestPort', add.guestPort);
  }
  if (issues.length > 0) {
    throw new ValidationError(issues, { subject: withGuest ? 'invalid hostfwd_add rule' : 'invalid hostfwd_remove rule' });
  }
}

/** `hostfwd_add [netdev_id] tcp|udp:[hostaddr]:hostport-[guestaddr]:guestport`, as HMP words. */
export function hostfwdAddCommandLine(args: HostfwdAddArgs): string {
  checkHostfwd(args, true);
  const rule = `${args.protocol ?? 'tcp'}:${args.hostAddr ?? ''}:${args.hostPort}-${args.guestAddr ?? ''}:${args.guestPort}`;
  return ['hostfwd_add', ...(args.netdevId === undefined ? [] : [args.netdevId]), rule].join(' ');
}

/** `hostfwd_remove [netdev_id] tcp|udp:[hostaddr]:hostport`, as HMP words. */
export function hostfwdRemoveCommandLine(args: HostfwdRemoveArgs): string {
  checkHostfwd(args, false);
  const rule = `${args.protocol ?? 'tcp'}:${args.hostAddr ?? ''}:${args.hostPort}`;
  return ['hostfwd_remove', ...(args.netdevId === undefined ? [] : [args.netdevId]), rule].join(' ');
}

/** A QMP client: the protocol engine plus one typed method per command GoShip uses. */
export class QmpClient extends QmpProtocol {
  /**
   * Connect to QEMU's QMP socket, read the greeting and negotiate, within
   * `timeoutMs` (default 5000). Rejects with `QmpConnectError` (EQMP_CONNECT).
   */
  static async connect(socketPath: string, options: QmpClientOptions = {}): Promise<QmpClient> {
    const { timeoutMs, onEvent, ...protocolOptions } = options;
    const client = new QmpClient(protocolOptions);
    if (onEvent !== undefined) client.on('event', onEvent);
    await client.connect(socketPath, timeoutMs === undefined ? {} : { timeoutMs });
    return client;
  }

  /** `query-status`: run state (`prelaunch`, `running`, `paused`, …). */
  queryStatus(options: CallOptions = {}): Promise<QmpStatusInfo> {
    return this.execute<QmpStatusInfo>('query-status', undefined, callOptions(options));
  }

  /** `query-version`. */
  queryVersion(options: CallOptions = {}): Promise<QmpVersionInfo> {
    return this.execute<QmpVersionInfo>('query-version', undefined, callOptions(options));
  }

  /** `cont`: start or resume the vCPUs (a RESUME event follows). */
  async cont(options: CallOptions = {}): Promise<void> {
    await this.execute('cont', undefined, callOptions(options));
  }

  /** `stop`: pause the vCPUs (a STOP event follows). */
  async stop(options: CallOptions = {}): Promise<void> {
    await this.execute('stop', undefined, callOptions(options));
  }

  /** `system_powerdown`: press the ACPI power button. Only a request: the guest may ignore it. */
  async systemPowerdown(options: CallOptions = {}): Promise<void> {
    await this.execute('system_powerdown', undefined, callOptions(options));
  }

  /** `system_reset`: hard reset (a RESET event follows). */
  async systemReset(options: CallOptions = {}): Promise<void> {
    await this.execute('system_reset', undefined, callOptions(options));
  }

  /**
   * `quit`: QEMU exits at once (SHUTDOWN with reason `host-qmp-quit`, then EOF).
   * If QEMU closes the connection before its reply arrives, that is success.
   */
  async quit(options: CallOptions = {}): Promise<void> {
    try {
      await this.execute('quit', undefined, callOptions(options));
    } catch (err) {
      if (err instanceof QmpClosedError && !err.byClient && err.command === 'quit') return;
      throw err;
    }
  }

  /**
   * `snapshot-save` (QEMU ≥ 6.0): a job that writes an internal snapshot `tag`
   * of each node in `devices` and the VM's memory and devices into `vmstate`
   * (one of them). The guest is paused while it runs. Wait for the job with
   * `queryJobs` and dismiss it.
   */
  async snapshotSave(args: { jobId: string; tag: string; vmstate: string; devices: string[] }, options: CallOptions = {}): Promise<void> {
    await this.execute('snapshot-save', { 'job-id': args.jobId, tag: args.tag, vmstate: args.vmstate, devices: args.devices }, callOptions(options));
  }

  /** `blockdev-snapshot-internal-sync`: an internal (qcow2) snapshot `name` of node `node`, the disk alone, taken while the guest runs. */
  async blockdevSnapshotInternal(node: string, name: string, options: CallOptions = {}): Promise<void> {
    await this.execute('blockdev-snapshot-internal-sync', { device: node, name }, callOptions(options));
  }

  /** `blockdev-snapshot-delete-internal-sync`: removes internal snapshot `name` of node `node`; the others stay whole. */
  async blockdevSnapshotDeleteInternal(node: string, name: string, options: CallOptions = {}): Promise<void> {
    await this.execute('blockdev-snapshot-delete-internal-sync', { device: node, name }, callOptions(options));
  }

  /** `query-jobs`: every job, with its status and, once concluded, its error. */
  queryJobs(options: CallOptions = {}): Promise<QmpJobInfo[]> {
    return this.execute<QmpJobInfo[]>('query-jobs', undefined, callOptions(options));
  }

  /** `job-dismiss`: forgets a concluded job. */
  async jobDismiss(id: string, options: CallOptions = {}): Promise<void> {
    await this.execute('job-dismiss', { id }, callOptions(options));
  }

  /** `query-block`. */
  queryBlock(options: CallOptions = {}): Promise<QmpBlockInfo[]> {
    return this.execute<QmpBlockInfo[]>('query-block', undefined, callOptions(options));
  }

  /** `human-monitor-command`: run an HMP command and return what it printed. */
  humanMonitorCommand(args: HumanMonitorCommandArgs): Promise<string> {
    const qmpArgs: Record<string, unknown> = { 'command-line': args.commandLine };
    if (args.cpuIndex !== undefined) qmpArgs['cpu-index'] = args.cpuIndex;
    return this.execute<string>('human-monitor-command', qmpArgs, callOptions(args));
  }

  /** `query-chardev`. */
  queryChardev(options: CallOptions = {}): Promise<QmpChardevInfo[]> {
    return this.execute<QmpChardevInfo[]>('query-chardev', undefined, callOptions(options));
  }

  /** `query-cpus-fast`. */
  queryCpusFast(options: CallOptions = {}): Promise<QmpCpuInfoFast[]> {
    return this.execute<QmpCpuInfoFast[]>('query-cpus-fast', undefined, callOptions(options));
  }

  /**
   * Add a user-mode (slirp) port forward with HMP `hostfwd_add` (QMP has no
   * command for it). HMP reports failure as printed text: any output is
   * turned into `QmpHmpError` (EQMP_HMP). Bad arguments: `ValidationError`.
   */
  async hostfwdAdd(args: HostfwdAddArgs): Promise<void> {
    const commandLine = hostfwdAddCommandLine(args);
    const output = await this.humanMonitorCommand({ commandLine, ...callOptions(args) });
    if (output.trim() !== '') throw new QmpHmpError(commandLine, output);
  }

  /** Remove a port forward with HMP `hostfwd_remove`; a rule that does not exist is `QmpHmpError`. */
  async hostfwdRemove(args: HostfwdRemoveArgs): Promise<void> {
    const commandLine = hostfwdRemoveCommandLine(args);
    const output = await this.humanMonitorCommand({ commandLine, ...callOptions(args) });
    // QEMU prints "host forwarding rule for RULE removed" or "… not found".
    if (!/\bremoved\s*$/.test(output)) throw new QmpHmpError(commandLine, output);
  }

  /** `ringbuf-read`: read (and consume) up to `size` bytes from a ringbuf chardev. */
  ringbufRead(args: RingbufReadArgs): Promise<string> {
    return this.execute<string>(
      'ringbuf-read',
      { device: args.device, size: args.size, ...(args.format === undefined ? {} : { format: args.format }) },
      callOptions(args),
    );
  }

  // ------------------------------------------------------------ migration (saving and restoring a VM's state)

  /**
   * `migrate-set-parameters` with the bandwidth cap: QEMU's default of
   * 128 MiB/s throttles a save to a local file; `bytesPerSecond` lifts it.
   */
  async migrateSetMaxBandwidth(bytesPerSecond: number, options: CallOptions = {}): Promise<void> {
    await this.execute('migrate-set-parameters', { 'max-bandwidth': bytesPerSecond }, callOptions(options));
  }

  /**
   * `migrate-set-capabilities` with `x-ignore-shared`: RAM mapped shared (a
   * template's memory file) is left out of a save, and a restore keeps the
   * memory the destination maps. Both ends must agree, and QEMU keeps it for
   * the next migration: a restored clone turns it off again.
   */
  async migrateIgnoreShared(state: boolean, options: CallOptions = {}): Promise<void> {
    await this.execute('migrate-set-capabilities', { capabilities: [{ capability: 'x-ignore-shared', state }] }, callOptions(options));
  }

  /** `migrate`: start sending the VM's state to `uri` (`unix:PATH`, `fd:NAME`); it runs on, `queryMigrate` says how it went. */
  async migrate(uri: string, options: CallOptions = {}): Promise<void> {
    await this.execute('migrate', { uri }, callOptions(options));
  }

  /** `migrate-incoming`: a QEMU started with `-incoming defer` starts receiving a state from `uri` (`unix:PATH`: it listens there). */
  async migrateIncoming(uri: string, options: CallOptions = {}): Promise<void> {
    await this.execute('migrate-incoming', { uri }, callOptions(options));
  }

  /** `query-migrate`: the state of the current (or last) migration, outgoing or incoming. */
  queryMigrate(options: CallOptions = {}): Promise<QmpMigrationInfo> {
    return this.execute<QmpMigrationInfo>('query-migrate', undefined, callOptions(options));
  }
}
