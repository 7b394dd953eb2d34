/**
 * goshipctl's command table: each group (`vm`, `image`, `project`, …) is its
 * own cac program, as cac matches one-word commands only. Building one runs
 * nothing, so a test can read the very commands main.ts parses with.
 */
import { cac, type CAC } from 'cac';
import type { CommandContext } from './context.ts';
import { registerVm, vmRouting } from './commands/vm.ts';
import { imageRouting, registerImage } from './commands/image.ts';
import { projectRouting, registerProject } from './commands/project.ts';
import { appRouting, registerApp } from './commands/app.ts';
import { registerNode } from './commands/node.ts';
import { grammarOf, type Grammar, type GroupRouting } from './routing.ts';
import { VERSION } from './version.ts';

export type Register = (cli: CAC, ctx: CommandContext) => void;

/** The groups; `routing` says which of a group's commands run on a node (src/cli/routing.ts). */
export const GROUPS: Record<string, { register: Register; summary: string; routing?: GroupRouting }> = {
  project: { register: registerProject, summary: 'projects: one VM each, ready for work', routing: projectRouting },
  app: { register: registerApp, summary: 'apps: containers and supervised processes inside a project VM: deploy, list, info, start, stop, restart, remove, logs, exec', routing: appRouting },
  vm: { register: registerVm, summary: 'VMs: args, create, start, stop, destroy, list, status, console, qmp, ping, info, exec, cp', routing: vmRouting },
  image: { register: registerImage, summary: 'base images and their templates: build, list, info, warm, remove, import, push', routing: imageRouting },
  node: { register: registerNode, summary: "nodes: other hosts' GoShips over SSH: add, list, info, remove" },
};

/** One cac program: the global --json, the group's commands, --help and --version. */
export function program(name: string, ctx: CommandContext, register: Register): CAC {
  const cli = cac(name);
  cli.option('--json', 'machine-readable output on stdout');
  register(cli, ctx);
  cli.help();
  cli.version(VERSION);
  return cli;
}

/**
 * The routing grammar of `programs` (built by `program`, by group name), read
 * from their registered commands. main.ts builds the one group a command line
 * names; the unit test, every group.
 */
export function grammarFor(programs: Record<string, CAC>): Grammar {
  return grammarOf(Object.fromEntries(Object.entries(programs).map(([g, cli]) => [g, { cli, routing: GROUPS[g]?.routing }])));
}
