/**
 * The docs users rely on stay true to the code: every error code has its
 * row in the troubleshooting table, and the files the README links exist.
 */
import { strict as assert } from 'node:assert';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ROOT } from './support/node-red-process';

describe('docs', () => {
  it('docs/TROUBLESHOOTING.md has a row for every error code', () => {
    const errors = readFileSync(join(ROOT, 'lib/errors.ts'), 'utf8');
    const union = /export type BleOtaErrorCode =([^;]+);/.exec(errors);
    assert.ok(union, 'the error code union is in lib/errors.ts');
    const codes = [...union[1].matchAll(/'([A-Z0-9_]+)'/g)].map((m) => m[1]);
    assert.ok(codes.length > 20);
    const table = readFileSync(join(ROOT, 'docs/TROUBLESHOOTING.md'), 'utf8');
    const missing = codes.filter((code) => !table.includes(`| \`${code}\` |`));
    assert.deepEqual(missing, []);
  });

  it('every file the README links exists', () => {
    const readme = readFileSync(join(ROOT, 'README.md'), 'utf8');
    const links = [...readme.matchAll(/\]\(([^)#]+)(#[^)]*)?\)/g)].map((m) => m[1]).filter((l) => !/^[a-z]+:/.test(l));
    assert.ok(links.length > 5);
    const missing = links.filter((l) => !existsSync(join(ROOT, l)));
    assert.deepEqual(missing, []);
  });
});
