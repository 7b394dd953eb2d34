// npm run bench [-- NAME…]: runs the benchmarks (all when none is named).
import { spawnSync } from 'node:child_process';

const ALL = ['lifecycle', 'agent', 'project', 'templates', 'suspend', 'monitor', 'apps', 'nodes', 'host-tools'];
const args = process.argv.slice(2);
const names = args.filter((a) => ALL.includes(a));
const rest = args.filter((a) => !ALL.includes(a));
let failed = false;
for (const name of names.length ? names : ALL) {
  console.log(`\n== ${name} ==`);
  const r = spawnSync(process.execPath, [new URL(`./${name}.mjs`, import.meta.url).pathname, ...rest], { stdio: 'inherit' });
  if (r.status !== 0) failed = true;
}
process.exitCode = failed ? 1 : 0;
