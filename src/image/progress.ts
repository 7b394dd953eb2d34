/** Progress of an image build, reported per phase so a CLI can show a spinner or a bar. */

/** The phases of a build, in order. `cached`: nothing to do, the image exists with the same key. */
export type BuildPhase = 'check' | 'bootstrap' | 'customize' | 'kernel' | 'mkfs' | 'convert' | 'finish' | 'cached';

export interface BuildProgress {
  phase: BuildPhase;
  /** One line for a person: what is happening now. */
  message: string;
  /** 0..1 over the whole build, when it can be estimated. */
  fraction?: number;
}

export type ProgressListener = (p: BuildProgress) => void;

/** Where each phase starts on the 0..1 scale (bootstrap dominates: downloads and dpkg). */
export const PHASE_START: Record<BuildPhase, number> = {
  check: 0,
  bootstrap: 0.02,
  customize: 0.7,
  kernel: 0.78,
  mkfs: 0.8,
  convert: 0.86,
  finish: 0.98,
  cached: 1,
};
