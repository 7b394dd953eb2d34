import { describe, expect, it } from 'vitest';
import { fileOptions, nodeFiles, routeOf, takeNodeOptions } from '../../src/nodes/index.ts';

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
