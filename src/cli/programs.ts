/**
 * goshipctl's command table: each group (`vm`, `image`, `project`, …) is its
 * own cac program, as cac matches one-word commands only. Building one runs
 * nothing, so a test can read the very commands main.ts parses with.
 */
import { cac, type CAC } from 'cac';
import type { CommandContext } from './context.ts';
import { registerVm } from './commands/vm.ts';
import { registerImage } from './commands/image.ts';
import { registerProject } from './commands/project.ts';
import { registerApp } from './commands/app.ts';
import { registerNode } from './commands/node.ts';
import { VERSION } from './version.ts';

export type Register = (cli: CAC, ctx: CommandContext) => void;

export const GROUPS: Record<string, { register: Register; summary: string }> = {
  project: { register: registerProject, summary: 'projects: one VM each, ready for work' },
  app: { register: registerApp, summary: 'apps: containers and supervised processes inside a project VM: deploy, list, info, start, stop, restart, remove, logs, exec' },
  vm: { register: registerVm, summary: 'VMs: args, create, start, stop, destroy, list, status, console, qmp, ping, info, exec, cp' },
  image: { register: registerImage, summary: 'base images: build, list, info, remove, import, push' },
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
