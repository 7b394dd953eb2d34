/**
 * Every name the cloud-init seed uses, in one place: the NoCloud file names,
 * the volume label, the default user and where the agent install puts things.
 */

/**
 * The volume label cloud-init's NoCloud datasource looks for (it accepts
 * `cidata` or `CIDATA`). Lower case is what `cloud-localds` writes.
 */
export const SEED_VOLUME_ID = 'cidata';

/** The file names NoCloud reads from the root of the seed volume. */
export const SEED_FILES = {
  metaData: 'meta-data',
  userData: 'user-data',
  networkConfig: 'network-config',
} as const;

/** The first line of user-data that makes cloud-init read it as cloud-config. */
export const CLOUD_CONFIG_HEADER = '#cloud-config';

/** The account cloud-init creates when the caller names none. */
export const DEFAULT_USER = 'goship';
/** `users[0].shell` when not given. */
export const DEFAULT_SHELL = '/bin/bash';
/** `users[0].sudo` when not given: the control plane logs in without a password. */
export const DEFAULT_SUDO = 'ALL=(ALL) NOPASSWD:ALL';

/** `write_files[].permissions` when not given. */
export const DEFAULT_FILE_PERMISSIONS = 0o644;
/** `write_files[].owner` when not given. */
export const DEFAULT_FILE_OWNER = 'root:root';

/** network-config: the ethernets key used with a `match.name` glob. */
export const NETWORK_ETHERNET_ID = 'primary';
/** network-config: the glob that selects the first (only) virtio NIC when nothing else is given. */
export const DEFAULT_NETWORK_MATCH = 'e*';

/** Where the agent install writes the bundled agent (one ESM file). */
export const AGENT_BUNDLE_PATH = '/usr/local/lib/goship/goship-agent.mjs';
/** The systemd unit name of the agent. */
export const AGENT_UNIT_NAME = 'goship-agent.service';
/** Where the agent install writes the unit. */
export const AGENT_UNIT_PATH = `/etc/systemd/system/${AGENT_UNIT_NAME}`;
/** Where the agent install writes the unit's start script. */
export const AGENT_START_PATH = '/usr/local/lib/goship/agent-start';
/** Where the agent install writes the runtime setup script, run before the unit is enabled. */
export const AGENT_SETUP_PATH = '/usr/local/lib/goship/node-setup';
/** Mode of the agent bundle (and of its scripts). */
export const AGENT_BUNDLE_PERMISSIONS = 0o755;
/** Mode of the agent unit. */
export const AGENT_UNIT_PERMISSIONS = 0o644;

/** The program that writes the ISO (Debian package `xorriso`). */
export const XORRISO = 'xorriso';
/** How long xorriso may take for a few kilobytes before we give up. */
export const XORRISO_TIMEOUT_MS = 60_000;
