'use strict';
// `npm run test:fast`: the fast tier in under a minute. The C host tests
// (plain and sanitizer builds, no fuzzing) run beside the build and the
// TypeScript tests of test/tiers.js; their output follows mocha's, and the
// exit status is 1 when either failed. `npm test` runs every test, as CI does.
const { spawn } = require('node:child_process');
const path = require('node:path');

const root = path.resolve(__dirname, '..');

/** Runs a command in the package folder; its output goes to ours, or is kept when `keep`. */
function run(command, args, keep) {
  return new Promise((resolve) => {
    const child = spawn(command, args, { cwd: root, stdio: keep ? ['ignore', 'pipe', 'pipe'] : 'inherit' });
    const output = [];
    if (keep) {
      child.stdout.on('data', (d) => output.push(d));
      child.stderr.on('data', (d) => output.push(d));
    }
    const started = Date.now();
    const seconds = () => Math.round((Date.now() - started) / 1000);
    child.on('error', (err) => resolve({ code: 1, output: [Buffer.from(`${command}: ${err.message}\n`)], seconds: seconds() }));
    child.on('close', (code, signal) => resolve({ code: code ?? (signal ? 1 : 0), output, seconds: seconds() }));
  });
}

async function main() {
  const started = Date.now();
  const hostTests = run('make', ['-s', '-C', 'firmware/host', 'test'], true);
  // Under npm, the same npm that runs this script; otherwise the one on PATH.
  const npm = process.env.npm_execpath ? [process.execPath, process.env.npm_execpath] : ['npm'];
  const build = await run(npm[0], [...npm.slice(1), 'run', '-s', 'build'], false);
  const mocha = build.code === 0 ? await run(process.execPath, [require.resolve('mocha/bin/mocha.js'), '--config', '.mocharc.fast.js'], false) : undefined;
  const host = await hostTests;
  process.stdout.write('\n--- C host tests (firmware/host: make test) ---\n');
  process.stdout.write(Buffer.concat(host.output));
  const failed = [build.code && 'build', mocha?.code && 'mocha', host.code && 'C host tests'].filter(Boolean);
  const seconds = Math.round((Date.now() - started) / 1000);
  const parts = `build ${build.seconds} s, mocha ${mocha ? `${mocha.seconds} s` : 'not run'}; C host tests ${host.seconds} s beside them`;
  process.stdout.write(failed.length ? `\ntest:fast: FAILED (${failed.join(', ')}) in ${seconds} s (${parts})\n` : `\ntest:fast: passed in ${seconds} s (${parts})\n`);
  process.exitCode = failed.length ? 1 : 0;
}

void main();
