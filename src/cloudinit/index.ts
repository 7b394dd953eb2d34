// The cloud-init NoCloud seed: pure renderers, the `{path, bytes}` entries,
// and the one function that writes them to a `cidata` ISO.
export { renderMetaData, renderUserData, renderNetworkConfig, agentInstallParts } from './render.ts';
export { seedEntries, validateSeed } from './seed.ts';
export { writeSeedIso, buildSeed, xorrisoArgs } from './seed-iso.ts';
export type { WriteSeedIsoOptions } from './seed-iso.ts';
export { SeedError, SEED_SUBJECT } from './errors.ts';
export { SSH_KEY_TYPES, checkSshKey } from './validate.ts';
export {
  SEED_VOLUME_ID,
  SEED_FILES,
  DEFAULT_USER,
  AGENT_BUNDLE_PATH,
  AGENT_UNIT_NAME,
  AGENT_UNIT_PATH,
  AGENT_START_PATH,
  AGENT_SETUP_PATH,
} from './constants.ts';
export type {
  Argv,
  AgentInstall,
  MetaDataOptions,
  NetworkOptions,
  SeedEntry,
  SeedOptions,
  UserDataOptions,
  UserOptions,
  WriteFile,
} from './types.ts';
