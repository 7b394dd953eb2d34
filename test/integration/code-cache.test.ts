// src/boot's code cache in real processes: a `node` loading a CommonJS bundle
// through loadCached (bundled by esbuild), its cache file written at exit and
// used by the next process; a rebuilt bundle of the same length never runs
// another build's bytecode; a cache anyone may write is not trusted.
import { execFile } from 'node:child_process';
import { chmod, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { build } from 'esbuild';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const run = promisify(execFile);
let tmp: string;
let loader: string;
let bundle: string;

/** A bundle whose exports say which build it is; `pad` keeps two builds the same length. */
const source = (answer: string): string => `module.exports = { answer: ${JSON.stringify(answer)}, twice: (n) => n * 2 };\n`;

/** One process: loads the bundle, prints the cache status and the exports. */
async function load(): Promise<{ status: string; answer: string; twice: number }> {
  const { stdout } = await run(process.execPath, [loader, bundle]);
  return JSON.parse(stdout) as { status: string; answer: string; twice: number };
}

beforeAll(async () => {
  tmp = await mkdtemp(join(tmpdir(), 'goship-code-cache-'));
  const entry = join(tmp, 'driver.ts');
  await writeFile(
    entry,
    `import { loadCached } from ${JSON.stringify(join(process.cwd(), 'src/boot/index.ts'))};\n` +
      `let status = '';\n` +
      `const m = loadCached(process.argv[2], (s) => (status = s));\n` +
      `process.stdout.write(JSON.stringify({ status, answer: m.answer, twice: m.twice(21) }));\n`,
  );
  loader = join(tmp, 'driver.mjs');
  await build({ entryPoints: [entry], bundle: true, platform: 'node', format: 'esm', target: 'node20', outfile: loader, logLevel: 'warning' });
  bundle = join(tmp, 'bundle.cjs');
});

afterAll(async () => {
  await rm(tmp, { recursive: true, force: true });
});

describe('loadCached', () => {
  it('writes the cache at the first run and uses it at the next', async () => {
    await writeFile(bundle, source('one'));
    expect(await load()).toEqual({ status: 'none', answer: 'one', twice: 42 });
    const cache = await readFile(`${bundle}.cache`);
    const header = cache.toString('latin1', 0, cache.indexOf(10));
    const st = await stat(bundle, { bigint: true });
    expect(header).toBe(`goship-code-cache ${process.version} ${st.size} ${st.mtimeNs} ${st.ino}`);
    expect(cache.length).toBeGreaterThan(header.length + 1);
    expect(await load()).toEqual({ status: 'hit', answer: 'one', twice: 42 });
  });

  it('a rebuilt bundle of the same length runs its own code, and the cache is made again', async () => {
    await writeFile(bundle, source('one'));
    await load();
    // Another build, byte for byte as long: V8's own check (the length) would take the old cache.
    await rm(bundle);
    await writeFile(bundle, source('two'));
    expect(await load()).toEqual({ status: 'stale', answer: 'two', twice: 42 });
    expect(await load()).toEqual({ status: 'hit', answer: 'two', twice: 42 });
  });

  it('a cache that others may write is neither used nor replaced', async () => {
    await writeFile(bundle, source('one'));
    await load();
    await chmod(`${bundle}.cache`, 0o666);
    const before = await readFile(`${bundle}.cache`);
    expect(await load()).toEqual({ status: 'untrusted', answer: 'one', twice: 42 });
    expect(await readFile(`${bundle}.cache`)).toEqual(before);
    await rm(`${bundle}.cache`);
  });

  it('a cache of garbage under the right header is rejected by V8 and made again', async () => {
    await writeFile(bundle, source('one'));
    await load();
    const cache = await readFile(`${bundle}.cache`);
    const nl = cache.indexOf(10);
    await writeFile(`${bundle}.cache`, Buffer.concat([cache.subarray(0, nl + 1), Buffer.alloc(cache.length - nl - 1, 0x5a)]), { mode: 0o644 });
    expect(await load()).toEqual({ status: 'rejected', answer: 'one', twice: 42 });
    expect(await load()).toEqual({ status: 'hit', answer: 'one', twice: 42 });
  });
});
