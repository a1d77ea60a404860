/**
 * The test tiers drop no test file: `npm test` (.mocharc.json, what CI
 * runs) takes every test file under test/; `npm run test:fast`
 * (.mocharc.fast.js, the names in test/tiers.js) takes only test files
 * that exist, each once; and no compiled test is left over from a source
 * that is gone (the full tier would still run it).
 */
import { strict as assert } from 'node:assert';
import { existsSync, readdirSync } from 'node:fs';
import { join, relative } from 'node:path';
import { ROOT } from './support/node-red-process';

interface MochaConfig {
  spec: string[];
}
// Mocha's own config loader and file lookup: the tiers as mocha reads them.
// eslint-disable-next-line @typescript-eslint/no-require-imports
const { loadConfig } = require('mocha/lib/cli/config') as { loadConfig(file: string): MochaConfig };
// eslint-disable-next-line @typescript-eslint/no-require-imports
const lookupFiles = require('mocha/lib/cli/lookup-files') as (path: string, extensions: string[], recursive: boolean) => string[] | string;
// eslint-disable-next-line @typescript-eslint/no-require-imports
const tiers = require(join(ROOT, 'test/tiers.js')) as { FAST: string[] };

/** Files under dir (recursively) whose names end with suffix, relative to dir, without it. */
function named(dir: string, suffix: string, prefix = ''): string[] {
  return readdirSync(dir, { withFileTypes: true })
    .flatMap((e) => (e.isDirectory() ? named(join(dir, e.name), suffix, join(prefix, e.name)) : e.name.endsWith(suffix) ? [join(prefix, e.name.slice(0, -suffix.length))] : []))
    .sort();
}

/** The test names (test/<name>.test.ts) a mocha config runs. */
function runs(configFile: string): string[] {
  const { spec } = loadConfig(join(ROOT, configFile));
  const files = spec.flatMap((pattern) => {
    const found = lookupFiles(join(ROOT, pattern), ['.js'], false);
    return Array.isArray(found) ? found : [found];
  });
  return files.map((f) => relative(join(ROOT, 'dist/test'), f).replace(/\.test\.js$/, '')).sort();
}

describe('test tiers', () => {
  const sources = named(join(ROOT, 'test'), '.test.ts');

  it('npm test runs every test file', () => {
    assert.deepEqual(runs('.mocharc.json'), sources);
  });

  it('npm run test:fast runs test files that exist, each once, and none of the slow kind', () => {
    const missing = tiers.FAST.filter((name) => !sources.includes(name));
    assert.deepEqual(missing, [], 'test/tiers.js names test files that do not exist (renamed or removed?)');
    assert.equal(new Set(tiers.FAST).size, tiers.FAST.length, 'a file named twice');
    assert.deepEqual(runs('.mocharc.fast.js'), [...tiers.FAST].sort());
    // The machine's single btvirt, and downloads: never in a tier run beside others.
    for (const exclusive of ['emulated-controller', 'node-red-5']) assert.ok(!tiers.FAST.includes(exclusive), exclusive);
  });

  it('no compiled test outlives its source', () => {
    const compiled = existsSync(join(ROOT, 'dist/test')) ? named(join(ROOT, 'dist/test'), '.test.js') : [];
    assert.deepEqual(
      compiled.filter((name) => !sources.includes(name)),
      [],
      'compiled tests without a source (npm run build removes them)',
    );
  });
});
