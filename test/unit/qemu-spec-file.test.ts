import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { GoshipError } from '../../src/errors.ts';
import { loadSpecFile, parseSpecJson, parseSpecYaml } from '../../src/qemu/spec-file.ts';

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'gsf-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function fail(p: Promise<unknown>): Promise<GoshipError> {
  try {
    await p;
  } catch (e) {
    return e as GoshipError;
  }
  throw new Error('expected an error');
}

describe('loadSpecFile', () => {
  test('YAML', async () => {
    const file = join(dir, 'web.yaml');
    await writeFile(file, 'name: web\nmemory: 2G\ndisks:\n  - path: /vms/web/disk.qcow2\n    readOnly: true\nnetwork:\n  forwards:\n    - { host: 2222, guest: 22 }\n');
    expect(await loadSpecFile(file)).toEqual({
      name: 'web',
      memory: '2G',
      disks: [{ path: '/vms/web/disk.qcow2', readOnly: true }],
      network: { forwards: [{ host: 2222, guest: 22 }] },
    });
  });

  test('JSON', async () => {
    const file = join(dir, 'web.json');
    await writeFile(file, '{"name": "web", "cpu": {"count": 2}}');
    expect(await loadSpecFile(file)).toEqual({ name: 'web', cpu: { count: 2 } });
  });

  test('YAML 1.2: "yes" stays a string, 0x10 is a number', async () => {
    const file = join(dir, 'y12.yml');
    await writeFile(file, 'agent: yes\nconfidential: { type: sev, policy: 0x10 }\n');
    expect(await loadSpecFile(file)).toEqual({ agent: 'yes', confidential: { type: 'sev', policy: 16 } });
  });

  test('a JSON syntax error names the file, line and column', async () => {
    const file = join(dir, 'bad.json');
    await writeFile(file, '{\n  "name": "web",\n  "memory": 2G\n}\n');
    const e = await fail(loadSpecFile(file));
    expect(e).toBeInstanceOf(GoshipError);
    expect(e.code).toBe('EPARSE');
    expect(e.message).toBe(`cannot parse VM spec ${file}:3:14: Expected ',' or '}' after property value`);
    expect(e.hint).toBe(`fix the syntax at line 3, column 14 of ${file}`);
  });

  test('a YAML syntax error names the file, line and column', async () => {
    const file = join(dir, 'bad.yaml');
    await writeFile(file, 'name: web\ndisks: [\n  { path: /a }\nmemory: 1G\n');
    const e = await fail(loadSpecFile(file));
    expect(e.code).toBe('EPARSE');
    expect(e.message).toMatch(new RegExp(`^cannot parse VM spec ${file}:\\d+:\\d+: `));
  });

  test('a duplicate YAML key is a parse error at the key', () => {
    expect(() => parseSpecYaml('name: a\nname: b\n', 's.yaml')).toThrow('cannot parse VM spec s.yaml:2:1: Map keys must be unique');
  });

  test('an unterminated JSON document points at its end', () => {
    expect(() => parseSpecJson('{"name": "web",\n', 's.json')).toThrow(/^cannot parse VM spec s\.json:2:1: /);
  });

  test('a missing file', async () => {
    const e = await fail(loadSpecFile(join(dir, 'nope.yaml')));
    expect(e.code).toBe('EREAD');
    expect(e.message).toBe(`cannot read VM spec ${join(dir, 'nope.yaml')}: no such file`);
  });
});
