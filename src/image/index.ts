// Base images: the builder (mmdebstrap → ext4 → qcow2) and the catalogue.
// The only public door of src/image.
export { buildImage, sweepStaleBuilds } from './build.ts';
export type { BuildImageOptions } from './build.ts';
export {
  imageCacheKey,
  customisationTexts,
  mirrorsFor,
  mmdebstrapArgs,
  validateBuildInputs,
  fsSizeFor,
  DPKG_EXCLUDES,
  WAIT_ONLINE_DROPIN,
  INITRAMFS_CONF,
  IMAGE_BUILDER_VERSION,
  ROOT_LABEL,
  IMAGE_HOSTNAME,
  DEFAULT_CMDLINE,
  DEFAULT_MIRROR,
  DEFAULT_PACKAGES,
  INITRAMFS_MODULES,
  MASKED_UNITS,
  MASKED_GENERATORS,
  SOCKET_ACTIVATED_UNITS,
  CLOUD_CFG,
  PROBE_PORT_NAME,
  PROBE_UNIT,
} from './recipe.ts';
export type { KeyInputs } from './recipe.ts';
export {
  listImages,
  imageInfo,
  imageInfoFromDir,
  removeImage,
  detachImage,
  importImage,
  receiveImage,
  extractOnly,
  qemuImgInfo,
  validateImageName,
  imageNameIssues,
  IMAGE_NAME_RE,
  IMPORT_DEFAULT_CMDLINE,
} from './catalog.ts';
export type { ImageEntry, ImageInfo, ImportOptions } from './catalog.ts';
export { MANIFEST_FORMAT, ManifestSchema, parseManifest, readManifest, writeManifest, sha256File } from './manifest.ts';
export type { ImageManifest } from './manifest.ts';
export { AGENT_UNIT, AGENT_UNIT_NAME, AGENT_UNIT_GUEST_PATH, AGENT_GUEST_DIR, AGENT_GUEST_PATH, AGENT_GUEST_NODE, AGENT_START_GUEST_PATH } from './agent-unit.ts';
export { AGENT_START_SCRIPT, NODE_SETUP_SCRIPT, AGENT_NODE_MIN, NO_NODE_MARKER } from './agent-start.ts';
export { PHASE_START } from './progress.ts';
export type { BuildPhase, BuildProgress, ProgressListener } from './progress.ts';
