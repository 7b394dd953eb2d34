// npm run bench [-- NAME…]: runs the benchmarks (all when none is named).
import { spawnSync } from 'node:child_process';

const ALL = ['lifecycle', 'agent', 'project', 'templates', 'suspend', 'monitor', 'apps', 'nodes', 'host-tools'];
// `project` is a project's create from both sides: booted (project.mjs) and restored from a template (templates.mjs).
const WITH = { project: ['project', 'templates'] };
const args = process.argv.slice(2);
const names = [...new Set(args.filter((a) => ALL.includes(a)).flatMap((a) => WITH[a] ?? [a]))];
const rest = args.filter((a) => !ALL.includes(a));
let failed = false;
for (const name of names.length ? names : ALL) {
  console.log(`\n== ${name} ==`);
  const r = spawnSync(process.execPath, [new URL(`./${name}.mjs`, import.meta.url).pathname, ...rest], { stdio: 'inherit' });
  if (r.status !== 0) failed = true;
}
process.exitCode = failed ? 1 : 0;
