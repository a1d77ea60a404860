'use strict';
// `npm run lint`: ESLint and `prettier --check` over the TypeScript and
// JavaScript sources, `clang-format --dry-run -Werror` over the C sources,
// each over the repository's files (tracked, and new ones git does not
// ignore). `npm run format` (--write) applies Prettier and clang-format in
// place; ESLint's findings are left to the author.
//
// clang-format's output differs between its major versions: the C sources
// follow clang-format 14, Debian 12's `clang-format` package (.ci/run
// installs it). CLANG_FORMAT names another binary of that version.
const { spawnSync } = require('node:child_process');
const { existsSync } = require('node:fs');
const path = require('node:path');

const root = path.resolve(__dirname, '..');
const CLANG_FORMAT_MAJOR = 14;
const write = process.argv.includes('--write');
const count = (files) => `${files.length} ${files.length === 1 ? 'file' : 'files'}`;

/** A development dependency's command-line script, from its package.json. */
function binOf(pkg, name = pkg) {
  let manifest;
  try {
    manifest = require.resolve(`${pkg}/package.json`, { paths: [root] });
  } catch {
    throw new Error(`${pkg} is not installed: npm install (it is a development dependency) installs it`);
  }
  const { bin } = require(manifest);
  return path.join(path.dirname(manifest), typeof bin === 'string' ? bin : bin[name]);
}

function gitFiles() {
  const r = spawnSync('git', ['ls-files', '-z', '--cached', '--others', '--exclude-standard'], { cwd: root, encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`git ls-files failed (${r.error ? r.error.message : r.stderr.trim()}): lint runs in a git checkout of the repository`);
  return r.stdout.split('\0').filter((f) => f !== '' && existsSync(path.join(root, f)));
}

/** Runs a command on the files, a few hundred at a time; true when every run exited 0. */
function runOn(command, args, files) {
  let ok = true;
  for (let i = 0; i < files.length; i += 200) {
    const r = spawnSync(command, [...args, ...files.slice(i, i + 200)], { cwd: root, stdio: 'inherit' });
    if (r.error) throw r.error;
    ok = ok && r.status === 0;
  }
  return ok;
}

/** The clang-format binary of the pinned major version, or why there is none. */
function clangFormat() {
  const candidates = process.env.CLANG_FORMAT ? [process.env.CLANG_FORMAT] : ['clang-format', `clang-format-${CLANG_FORMAT_MAJOR}`];
  const found = [];
  for (const bin of candidates) {
    const r = spawnSync(bin, ['--version'], { encoding: 'utf8' });
    if (r.error) continue;
    const major = Number(/version (\d+)\./.exec(r.stdout)?.[1]);
    if (major === CLANG_FORMAT_MAJOR) return { bin };
    found.push(`${bin} is ${r.stdout.trim()}`);
  }
  const install = `install clang-format ${CLANG_FORMAT_MAJOR} (Debian 12: apt-get install clang-format), or set CLANG_FORMAT to a clang-format-${CLANG_FORMAT_MAJOR} binary`;
  return { why: found.length ? `${found.join('; ')}: the C sources are formatted by version ${CLANG_FORMAT_MAJOR}; ${install}` : `clang-format not found: ${install}` };
}

function main() {
  const files = gitFiles();
  const scripts = files.filter((f) => /\.(ts|js)$/.test(f));
  const c = files.filter((f) => /\.(c|h)$/.test(f));
  const failed = [];
  const step = (name, ok) => {
    if (!ok) failed.push(name);
  };

  if (!write) {
    process.stdout.write(`ESLint: ${count(scripts)}\n`);
    step('ESLint', runOn(process.execPath, [binOf('eslint'), '--no-warn-ignored', '--max-warnings', '0'], scripts));
  }
  process.stdout.write(`Prettier: ${count(scripts)}\n`);
  step('Prettier', runOn(process.execPath, [binOf('prettier'), write ? '--write' : '--check', '--log-level', 'warn'], scripts));

  const clang = clangFormat();
  process.stdout.write(`clang-format: ${count(c)}\n`);
  if (clang.bin) step('clang-format', runOn(clang.bin, write ? ['-i'] : ['--dry-run', '-Werror'], c));
  else {
    process.stderr.write(`${clang.why}\n`);
    failed.push('clang-format');
  }

  if (failed.length) {
    const hint = write ? '' : failed.some((f) => f !== 'ESLint') ? ' (npm run format rewrites what Prettier and clang-format report)' : '';
    process.stderr.write(`${write ? 'format' : 'lint'}: FAILED (${failed.join(', ')})${hint}\n`);
    process.exitCode = 1;
  } else process.stdout.write(`${write ? 'format: done' : 'lint: passed'}\n`);
}

try {
  main();
} catch (err) {
  process.stderr.write(`${process.argv.includes('--write') ? 'format' : 'lint'}: ${err.message}\n`);
  process.exitCode = 1;
}
