/**
 * The seed's files as `{path, bytes}` entries. Pure: all input is checked at
 * once, then each file is rendered.
 */
import type { Issue } from '../errors.ts';
import { SEED_FILES } from './constants.ts';
import { throwIfIssues } from './errors.ts';
import { renderMetaData, renderNetworkConfig, renderUserData } from './render.ts';
import type { SeedEntry, SeedOptions } from './types.ts';
import { validateMetaData, validateNetwork, validateUserData } from './validate.ts';

/** Every problem in the options, each once (meta-data and user-data both check the hostname). */
export function validateSeed(opts: SeedOptions): Issue[] {
  const seen = new Set<string>();
  return [...validateMetaData(opts), ...validateUserData(opts), ...validateNetwork(opts.network)].filter((issue) => {
    const key = `${issue.path}\0${issue.message}`;
    if (seen.has(key)) return false;
    seen.add(key);
    return true;
  });
}

/** meta-data, user-data and, when `network` is given, network-config. */
export function seedEntries(opts: SeedOptions): SeedEntry[] {
  throwIfIssues(validateSeed(opts));
  const encoder = new TextEncoder();
  const entries: SeedEntry[] = [
    { path: SEED_FILES.metaData, bytes: encoder.encode(renderMetaData(opts)) },
    { path: SEED_FILES.userData, bytes: encoder.encode(renderUserData(opts)) },
  ];
  if (opts.network !== undefined) {
    entries.push({ path: SEED_FILES.networkConfig, bytes: encoder.encode(renderNetworkConfig(opts.network)) });
  }
  return entries;
}
