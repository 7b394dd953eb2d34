import { describe, expect, it } from 'vitest';
import { CommandContext } from '../../src/cli/context.ts';
import { Output } from '../../src/cli/output.ts';
import { GROUPS, grammarFor, program } from '../../src/cli/programs.ts';
import * as routing from '../../src/cli/routing.ts';
import { takeNodeOptions } from '../../src/cli/routing.ts';

/** The grammar of goshipctl's real command table: every group's cac program, built as main.ts builds one, never run. */
const ctx = new CommandContext(new Output({ json: false }), []);
const grammar = grammarFor(Object.fromEntries(Object.keys(GROUPS).map((g) => [g, program(`goshipctl ${g}`, ctx, GROUPS[g]!.register)])));
const routeOf = (argv: readonly string[]) => routing.routeOf(grammar, argv);
const fileOptions = (args: readonly string[]) => routing.fileOptions(grammar, args);
const nodeFiles = (args: readonly string[]) => routing.nodeFiles(grammar, args);

describe('which project a command line is about', () => {
  it('project, vm and app commands name their project; options with values are skipped', () => {
    expect(routeOf(['project', 'info', 'web'])).toEqual({ kind: 'project', project: 'web', args: ['project', 'info', 'web'] });
    expect(routeOf(['project', 'port', 'add', 'web', '8080:80'])).toMatchObject({ kind: 'project', project: 'web' });
    expect(routeOf(['vm', 'exec', '--cwd', '/srv', '--env', 'A=1', '-t', 'web', '--', 'ls', 'other'])).toMatchObject({ kind: 'project', project: 'web' });
    expect(routeOf(['vm', 'cp', './f', 'web:/tmp/f'])).toMatchObject({ kind: 'project', project: 'web' });
    expect(routeOf(['vm', 'cp', 'web:/etc/os-release', '-'])).toMatchObject({ kind: 'project', project: 'web' });
    expect(routeOf(['app', 'deploy', 'web', 'api', '--image', 'nginx', '--port', '8080:80'])).toMatchObject({ kind: 'project', project: 'web' });
    expect(routeOf(['app', 'logs', '--tail', '5', 'web', 'api'])).toMatchObject({ kind: 'project', project: 'web' });
  });

  it('--node picks one node of a project and is taken out of the argv; create with --node goes to the nodes', () => {
    expect(routeOf(['app', 'list', 'web', '--node', 'box'])).toEqual({ kind: 'project', project: 'web', node: 'box', args: ['app', 'list', 'web'] });
    expect(routeOf(['project', 'create', 'web', '--node', 'a', '--memory', '1G', '--node=b'])).toEqual({ kind: 'create', project: 'web', nodes: ['a', 'b'], args: ['project', 'create', 'web', '--memory', '1G'], image: 'default' });
    expect(routeOf(['project', 'create', 'web', '--image=tools', '--node', 'a', '--', '--image', 'x'])).toMatchObject({ kind: 'create', image: 'tools' });
    // After --, --node belongs to the program in the guest.
    expect(takeNodeOptions(['vm', 'exec', 'web', '--', 'prog', '--node', 'x'])).toEqual({ args: ['vm', 'exec', 'web', '--', 'prog', '--node', 'x'], nodes: [] });
  });

  it('image warm, list, info and remove with --node run on those nodes; warm names the image the node needs', () => {
    expect(routeOf(['image', 'warm', '--node', 'box'])).toEqual({ kind: 'nodes', nodes: ['box'], args: ['image', 'warm'], image: 'default' });
    expect(routeOf(['image', 'warm', '--cpus', '2', 'tools', '--node', 'a', '--node=b', '--json'])).toEqual({ kind: 'nodes', nodes: ['a', 'b'], args: ['image', 'warm', '--cpus', '2', 'tools', '--json'], image: 'tools' });
    expect(routeOf(['image', 'list', '--node', 'box'])).toEqual({ kind: 'nodes', nodes: ['box'], args: ['image', 'list'] });
    expect(routeOf(['image', 'rm', 'tools', '--node', 'box'])).toEqual({ kind: 'nodes', nodes: ['box'], args: ['image', 'rm', 'tools'] });
    // build, import and push are this host's (push names its node as an operand).
    expect(routeOf(['image', 'build', 'tools', '--node', 'box'])).toEqual({ kind: 'local' });
  });

  it('everything else runs here: lists, images, hosts, help, create without --node', () => {
    for (const argv of [['project', 'list'], ['project', 'create', 'web'], ['image', 'list'], ['image', 'warm'], ['vm', 'args', 'x.yaml'], ['host'], ['node', 'list'], ['vm', 'exec', 'web', '--help'], ['app', 'list']]) {
      expect(routeOf(argv)).toEqual({ kind: 'local' });
    }
  });

  it('file options: flag, path and where they are, in both spellings; none after --', () => {
    expect(fileOptions(['app', 'deploy', 'w', 'a', '--env-file', '.env', '--binary=./srv', '--', '--build', 'x'])).toEqual([
      { flag: '--env-file', path: '.env', at: 4 },
      { flag: '--binary', path: './srv', at: 6 },
    ]);
  });
});

describe('nodeFiles', () => {
  it('file options as the words to replace, --build as a directory, --env-file staged as a file (its values never become argv words)', () => {
    expect(nodeFiles(['app', 'deploy', 'web', 'bb', '--binary', './busybox', '--env-file', 'e.env', '--', 'httpd'])).toEqual([
      { kind: 'file', path: './busybox', flag: '--binary', at: 4, width: 2 },
      { kind: 'file', path: 'e.env', flag: '--env-file', at: 6, width: 2 },
    ]);
    expect(nodeFiles(['app', 'deploy', 'web', 'site', '--build=ctx', '--port', '8080:80'])).toEqual([{ kind: 'dir', path: 'ctx', flag: '--build', at: 4, width: 1 }]);
    expect(nodeFiles(['project', 'create', 'web', '--ssh-key', 'k.pub', '--image-archive', 'a.tar'])).toEqual([
      { kind: 'file', path: 'k.pub', flag: '--ssh-key', at: 3, width: 2 },
      { kind: 'file', path: 'a.tar', flag: '--image-archive', at: 5, width: 2 },
    ]);
  });

  it('vm cp: the local side, sent for an upload, fetched for a download', () => {
    expect(nodeFiles(['vm', 'cp', './f', 'web:/tmp/f'])).toEqual([{ kind: 'file', path: './f', at: 2, width: 1 }]);
    expect(nodeFiles(['vm', 'cp', '--mode', '0755', 'web:/etc/hostname', 'out'])).toEqual([{ kind: 'fetch', path: 'out', at: 5, width: 1 }]);
    expect(nodeFiles(['vm', 'exec', 'web', '--', 'cat', 'x:y'])).toEqual([]);
  });

  it('words after -- are the program\'s, never files', () => {
    expect(nodeFiles(['app', 'deploy', 'web', 'x', '--command', '--', '/bin/app', '--binary', 'f'])).toEqual([]);
  });
});

describe('nodeFiles and stdio', () => {
  it('vm cp with - on the local side streams through ssh: nothing to stage', () => {
    expect(nodeFiles(['vm', 'cp', 'web:/etc/os-release', '-'])).toEqual([]);
    expect(nodeFiles(['vm', 'cp', '-', 'web:/tmp/in'])).toEqual([]);
  });
});

describe('help and the program\'s own flags', () => {
  it('-h after -- belongs to the program: the command is still routed', () => {
    expect(routeOf(['app', 'deploy', 'web', 'bb', '--command', '--', 'httpd', '-f', '-h', '/srv'])).toMatchObject({ kind: 'project', project: 'web' });
    expect(routeOf(['vm', 'exec', 'web', '-h'])).toEqual({ kind: 'local' });
  });
});

describe('the routing grammar is the command table', () => {
  const programs = Object.keys(GROUPS).map((g) => ({ group: g, cli: program(`goshipctl ${g}`, ctx, GROUPS[g]!.register) }));
  const routed = programs.flatMap(({ group, cli }) =>
    cli.commands.map((cmd) => ({ group, cmd, route: grammar.commands[group]![cmd.name]!.route })).filter((c) => c.route.kind !== 'local'),
  );
  /** A line of `cmd` about project `proj`, `words` (options) before its positionals. */
  const lineOf = (c: (typeof routed)[number], words: string[]): string[] => {
    const at = 'at' in c.route ? c.route.at : -1;
    const operands = c.route.kind === 'copy' ? ['./f', 'proj:/tmp/f'] : c.cmd.args.filter((a, i) => a.required || i <= at).map((a, i) => (i === at ? 'proj' : 'x'));
    return [c.group, c.cmd.name, ...words, ...operands, ...(c.route.kind === 'create' || c.route.kind === 'nodes' ? ['--node', 'n'] : [])];
  };

  it('routes the commands the hand-kept lists did, and only those', () => {
    expect(routed.map((c) => `${c.group} ${c.cmd.name} ${c.route.kind}${'at' in c.route ? ` ${c.route.at}` : ''}`).sort()).toEqual(
      [
        ...['info', 'start', 'suspend', 'resume', 'stop', 'delete'].map((s) => `project ${s} project 0`),
        'project port project 1',
        'project mount project 1',
        'project snapshot project 1',
        'project create create 0',
        ...['start', 'stop', 'destroy', 'status', 'console', 'qmp', 'ping', 'info', 'exec', 'tunnel'].map((s) => `vm ${s} project 0`),
        'vm cp copy',
        ...['deploy', 'list', 'info', 'start', 'stop', 'restart', 'remove', 'logs', 'exec'].map((s) => `app ${s} project 0`),
        ...['warm', 'list', 'info', 'remove'].map((s) => `image ${s} nodes`),
      ].sort(),
    );
  });

  it('every option of a routed command that takes a value is skipped with its value; a boolean one takes none', () => {
    let checked = 0;
    for (const c of routed) {
      for (const o of c.cmd.options) {
        for (const flag of o.rawName.replace(/[<[].*/, '').split(',').map((f) => f.trim())) {
          const spellings = o.isBoolean ? [[flag]] : [[flag, 'val:ue'], [`${flag}=val:ue`]];
          for (const words of spellings) {
            expect(routeOf(lineOf(c, words)), `${lineOf(c, words).join(' ')}`).toMatchObject(c.route.kind === 'nodes' ? { kind: 'nodes', nodes: ['n'] } : { project: 'proj' });
            checked++;
          }
        }
      }
    }
    expect(checked).toBeGreaterThan(50);
  });

  it('--wait of project create and start takes a value; vm start\'s --wait is its --no-wait, which takes none', () => {
    expect(routeOf(['project', 'start', '--wait', 'agent', 'web'])).toMatchObject({ kind: 'project', project: 'web' });
    expect(routeOf(['project', 'create', '--wait', 'boot', 'web', '--node', 'a'])).toMatchObject({ kind: 'create', project: 'web', nodes: ['a'] });
    expect(routeOf(['vm', 'start', '--wait', 'web'])).toMatchObject({ kind: 'project', project: 'web' });
    expect(routeOf(['vm', 'start', '--no-wait', 'web'])).toMatchObject({ kind: 'project', project: 'web' });
  });

  it('the command is found as cac finds it: the first positional, read with its own options', () => {
    expect(routeOf(['app', '--tail', '5', 'logs', 'web', 'api'])).toMatchObject({ kind: 'project', project: 'web' });
    expect(routeOf(['project', '--json', 'info', 'web'])).toMatchObject({ kind: 'project', project: 'web' });
    expect(routeOf(['vm', 'frobnicate', 'web'])).toEqual({ kind: 'local' });
  });

  it('file options are the ones their commands declare, each an option that takes a value', () => {
    expect(grammar.files).toEqual({ '--build': 'dir', '--image-archive': 'file', '--binary': 'file', '--env-file': 'file', '--ssh-key': 'file' });
    for (const flag of Object.keys(grammar.files)) {
      expect(routed.some((c) => c.cmd.options.some((o) => !o.isBoolean && o.rawName.startsWith(`${flag} `)))).toBe(true);
    }
  });

  it('a routing that names what is not registered is refused when the grammar is built', () => {
    const vm = () => program('goshipctl vm', ctx, GROUPS.vm!.register);
    expect(() => routing.grammarOf({ vm: { cli: vm(), routing: { project: 'name', commands: { snapshot: { route: 'local' } } } } })).toThrow(/snapshot is not a command/);
    expect(() => routing.grammarOf({ vm: { cli: vm(), routing: { project: 'name', commands: { exec: { files: { '--tty': 'file' } } } } } })).toThrow(/--tty is not an option of it that takes a value/);
    expect(() => routing.grammarOf({ vm: { cli: vm(), routing: { project: 'name', commands: { list: { route: 'create' } } } } })).toThrow(/list has no <name>/);
    expect(() => routing.grammarOf({ vm: { cli: vm(), routing: { project: 'name', commands: { exec: { image: '--image' } } } } })).toThrow(/exec has no --image option/);
    expect(() => routing.grammarOf({ vm: { cli: vm(), routing: { project: 'name', commands: { list: { route: 'nodes', image: 'operand' } } } } })).toThrow(/list has no operand to name an image/);
  });
});
