import { describe, expect, it } from 'vitest';
import { fileOptions, routeOf, takeNodeOptions } from '../../src/nodes/index.ts';

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
    expect(routeOf(['project', 'create', 'web', '--node', 'a', '--memory', '1G', '--node=b'])).toEqual({ kind: 'create', project: 'web', nodes: ['a', 'b'], args: ['project', 'create', 'web', '--memory', '1G'] });
    // After --, --node belongs to the program in the guest.
    expect(takeNodeOptions(['vm', 'exec', 'web', '--', 'prog', '--node', 'x'])).toEqual({ args: ['vm', 'exec', 'web', '--', 'prog', '--node', 'x'], nodes: [] });
  });

  it('everything else runs here: lists, images, hosts, help, create without --node', () => {
    for (const argv of [['project', 'list'], ['project', 'create', 'web'], ['image', 'list'], ['vm', 'args', 'x.yaml'], ['host'], ['node', 'list'], ['vm', 'exec', 'web', '--help'], ['app', 'list']]) {
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
