/** What of a build directory goes to the VM (src/runtime/build-context.ts): Docker's .dockerignore rules. */
import { describe, expect, it } from 'vitest';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildContextStream, contextFilter } from '../../src/runtime/build-context.ts';

describe('contextFilter', () => {
  const sent = (rules: string, paths: Array<[string, boolean?]>) => {
    const keep = contextFilter(rules);
    return paths.filter(([p, dir]) => keep(p, dir === true)).map(([p]) => p);
  };

  it('no .dockerignore (or only comments): everything goes', () => {
    expect(sent('', [['./a'], ['./.env']])).toEqual(['./a', './.env']);
    expect(sent('# nothing\n\n', [['./.git', true]])).toEqual(['./.git']);
  });

  it('.git, .env and **/*.log are kept on the host; the Dockerfile and .dockerignore always go', () => {
    const rules = '.git\n.env\n**/*.log\nDockerfile\n.dockerignore\n';
    expect(
      sent(rules, [['./'], ['./.git', true], ['./.git/config'], ['./.env'], ['./src/app.js'], ['./src/debug.log'], ['./build.log'], ['./Dockerfile'], ['./.dockerignore'], ['./.envrc']]),
    ).toEqual(['./', './src/app.js', './Dockerfile', './.dockerignore', './.envrc']);
  });

  it('an exception (!) re-includes a file inside an excluded directory: the directory is walked, its files judged one by one', () => {
    const rules = 'secrets\n!secrets/public.pem\n';
    expect(sent(rules, [['./secrets', true], ['./secrets/key.pem'], ['./secrets/public.pem'], ['./app']])).toEqual(['./secrets', './secrets/public.pem', './app']);
  });

  it('the last matching rule wins', () => {
    expect(sent('*.md\n!README.md\n', [['./README.md'], ['./NOTES.md']])).toEqual(['./README.md']);
    expect(sent('!README.md\n*.md\n', [['./README.md'], ['./NOTES.md']])).toEqual([]);
  });
});

describe('buildContextStream', () => {
  it('the tar stream of a real directory leaves out what its .dockerignore excludes, and keeps the Dockerfile and .dockerignore', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'gs-ctx-'));
    try {
      for (const [name, text] of [['.env', 'TOKEN=x'], ['app', 'y'], ['Dockerfile', 'FROM scratch'], ['.dockerignore', '.env']]) await writeFile(join(dir, name!), text!);
      const chunks: Buffer[] = [];
      for await (const c of await buildContextStream(dir)) chunks.push(c as Buffer);
      const tar = Buffer.concat(chunks).toString('latin1');
      expect(['./app', './.env', './Dockerfile', './.dockerignore', 'TOKEN=x'].map((n) => tar.includes(n))).toEqual([true, false, true, true, false]);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
