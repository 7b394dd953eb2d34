/**
 * Template directories on real files (no VM): the newest generation is the
 * one read, a record that is not a template's is an error, and removing an
 * image's templates leaves other images' alone.
 */
import { mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Layout } from '../../src/layout.ts';
import { listTemplates, readTemplate, removeTemplatesOf, templatesDir, type TemplateRecord } from '../../src/runtime/templates.ts';

let root: string;
let layout: Layout;
beforeEach(async () => {
  root = await mkdtemp(join(tmpdir(), 'gst-'));
  layout = new Layout(join(root, 'h'), join(root, 'r'));
});
afterEach(async () => {
  await rm(root, { recursive: true, force: true });
});

const GiB = 1024 * 1024 * 1024;
function record(image: string, createdAt: string): TemplateRecord {
  return { format: 2, name: `${image}-1c-1024m-10240m`, image, imageKey: 'k', qemuVersion: '7.2.22', cpus: 1, memoryBytes: GiB, diskBytes: 10 * GiB, argvShape: [], stateBytes: 4, createdAt, bootMs: 1, saveMs: 1 };
}
async function put(dirName: string, r: TemplateRecord | string): Promise<void> {
  const dir = join(templatesDir(layout), dirName);
  await mkdir(dir, { recursive: true });
  await writeFile(join(dir, 'template.json'), typeof r === 'string' ? r : JSON.stringify(r));
  await writeFile(join(dir, 'state'), 'QEVM');
}

describe('template directories', () => {
  it('reads the newest generation of a template and lists each template once', async () => {
    await put('default-1c-1024m-10240m.a', record('default', 'old'));
    await put('default-1c-1024m-10240m.b', record('default', 'new'));
    await put('tools-1c-1024m-10240m.a', record('tools', 'only'));
    expect((await readTemplate(layout, 'default-1c-1024m-10240m'))?.createdAt).toBe('new');
    expect((await listTemplates(layout)).map((t) => [t.name, t.createdAt])).toEqual([
      ['default-1c-1024m-10240m', 'new'],
      ['tools-1c-1024m-10240m', 'only'],
    ]);
    expect(await readTemplate(layout, 'other-1c-1024m-10240m')).toBeUndefined();
  });

  it('refuses a record that is not a template of this GoShip', async () => {
    await put('default-1c-1024m-10240m.a', JSON.stringify({ format: 99 }));
    await expect(readTemplate(layout, 'default-1c-1024m-10240m')).rejects.toMatchObject({ code: 'EVMSTATE' });
  });

  it("removes every generation of an image's templates and nothing else", async () => {
    await put('default-1c-1024m-10240m.a', record('default', 'old'));
    await put('default-2c-1024m-10240m.b', { ...record('default', 'x'), name: 'default-2c-1024m-10240m', cpus: 2 });
    await put('tools-1c-1024m-10240m.a', record('tools', 'only'));
    await removeTemplatesOf(layout, 'default');
    expect(await readdir(templatesDir(layout))).toEqual(['tools-1c-1024m-10240m.a']);
  });
});
