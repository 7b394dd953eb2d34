import { execFileSync } from 'node:child_process';

/** Tests that spawn `goshipctl` run the bundled CLI: build it once. */
export default function setup(): void {
  execFileSync(process.execPath, ['scripts/build.mjs'], { stdio: 'inherit' });
}
