/**
 * What the caller describes; the renderers turn it into NoCloud files.
 * Each field names the cloud-init key it maps to.
 */

/** meta-data. */
export interface MetaDataOptions {
  /**
   * meta-data `instance-id`. cloud-init runs its once-per-instance modules
   * (users, keys, write_files, runcmd) only when this changes: keep it stable
   * for the life of a VM, change it to provision again.
   */
  instanceId: string;
  /** meta-data `local-hostname` and user-data `hostname`: one RFC 1123 label. */
  hostname: string;
}

/** The account cloud-init creates (`users[0]`). */
export interface UserOptions {
  /** `users[0].name`. */
  name: string;
  /** `users[0].shell`. Default `/bin/bash`. */
  shell?: string;
  /** `users[0].sudo`: a sudoers rule, or `false` for none. Default `ALL=(ALL) NOPASSWD:ALL`. */
  sudo?: string | false;
}

/** One file cloud-init writes (`write_files[]`). */
export interface WriteFile {
  /** `write_files[].path`: absolute, without `.`, `..` or empty segments. */
  path: string;
  /**
   * `write_files[].content`: a string is written as text; bytes are sent
   * base64 (`encoding: b64`) and written as they are.
   */
  content: string | Uint8Array;
  /** `write_files[].permissions`, e.g. `0o600`. Default `0o644`. */
  permissions?: number;
  /** `write_files[].owner`, `user` or `user:group`. Default `root:root`. */
  owner?: string;
  /**
   * `write_files[].defer`: write in the final stage, after users exist.
   * Default: true when the owner is the user cloud-init creates, false otherwise.
   */
  defer?: boolean;
}

/**
 * Install the guest agent on an image that does not have it baked in:
 * `write_files` puts the bundle and the unit in place, `runcmd` enables it.
 */
export interface AgentInstall {
  /** The bundled agent, written base64 to `/usr/local/lib/goship/goship-agent.mjs`, mode 0755. */
  bundle: Uint8Array;
  /** The systemd unit text, written to `/etc/systemd/system/goship-agent.service`, mode 0644. */
  unit: string;
  /** The unit's start script (sh), written to `/usr/local/lib/goship/agent-start`, mode 0755. */
  start: string;
  /**
   * A sh script written to `/usr/local/lib/goship/node-setup`, mode 0755, and run
   * before the unit is enabled: it provides the runtime the agent needs (Node.js).
   */
  setup: string;
}

/** An argv array, run without a shell (`runcmd[]` list form). */
export type Argv = readonly string[];

/** user-data (`#cloud-config`). */
export interface UserDataOptions {
  /** `hostname` (with `preserve_hostname: false`). */
  hostname: string;
  /** `fqdn`: `<hostname>.<domain>`. */
  fqdn?: string;
  /** `users[0].ssh_authorized_keys`: OpenSSH public key lines. May be empty (agent-only access). */
  sshKeys: readonly string[];
  /** The account to create. Default: `goship`, `/bin/bash`, passwordless sudo. */
  user?: UserOptions;
  /** `write_files`. */
  writeFiles?: readonly WriteFile[];
  /** `runcmd`: argv arrays only, run in order in the final stage. */
  runcmd?: readonly Argv[];
  /** The agent install (files and commands appended after the caller's). */
  agent?: AgentInstall;
}

/**
 * network-config, version 2, one ethernet. Without `addresses` the NIC uses
 * DHCP (`dhcp4: true`).
 */
export interface NetworkOptions {
  /** `ethernets.primary.match.name`: a glob selecting the NIC. Default `e*`. */
  match?: string;
  /**
   * The exact interface name, used as the `ethernets` key without `match`
   * (e.g. `enp0s2`). Needed when the guest's cloud-init renders ifupdown or
   * networkd configuration, which ignore `match.name`. Excludes `match`.
   */
  interface?: string;
  /** `addresses`: static addresses in CIDR form (`10.0.2.15/24`). */
  addresses?: readonly string[];
  /** `routes: [{to: 0.0.0.0/0 (or ::/0), via: gateway}]`. Needs `addresses`. */
  gateway?: string;
  /** `nameservers.addresses`. */
  nameservers?: readonly string[];
}

/** Everything in the seed: what `buildSeed` and `seedEntries` take. */
export interface SeedOptions extends MetaDataOptions, UserDataOptions {
  /** network-config; when absent no file is written and cloud-init falls back to DHCP on the first NIC. */
  network?: NetworkOptions;
}

/** One file of the seed volume: a name at its root and its exact bytes. */
export interface SeedEntry {
  path: string;
  bytes: Uint8Array;
}
