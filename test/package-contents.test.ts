/**
 * What `npm pack` puts in the package: never a firmware build's sdkconfig
 * (it holds keys and local settings), build folders, ESP-IDF's managed
 * components or dependencies.lock, keys, or the demo's folder, even when
 * the firmware was built inside the package folder as firmware/README.md
 * suggests; no compiled file whose source is gone (a moved module, the
 * benchmark's model); and still everything the virtual ESP32 is built
 * from. And the lock file stays in step with package.json.
 */
import { strict as assert } from 'node:assert';
import { execFile } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { delimiter, dirname, join, resolve, sep } from 'node:path';

const ROOT = resolve(__dirname, '../..');

/** What a firmware build, the demo and a careless owner leave in the package folder. */
const PLANTED = [
  'firmware/sdkconfig',
  'firmware/sdkconfig.old',
  'firmware/sdkconfig.esp32s3',
  'firmware/build/ble_ota_firmware.bin',
  'firmware/build/config/sdkconfig.h',
  'firmware/host/build/virtual-esp32',
  'firmware/host/build/obj/host_port.o',
  'firmware/managed_components/espressif__cjson/idf_component.yml',
  'firmware/dependencies.lock',
  'firmware/main/idf_component.yml.bak',
  'firmware/secure_boot_signing_key.pem',
  'firmware/fleet.secret',
  'firmware/key.bin',
  'firmware/host/fuzz_corpus/crash-1',
  '.node-red-demo/flows.json',
  '.node-red-demo/flows_cred.json',
  'ble-ota.log',
];

/**
 * Runs cmd in cwd as from a shell: without the npm_* variables of an npm or
 * npx that ran the tests (npm_config_local_prefix would point a child npm
 * at this package's folder instead of cwd, and others change what it
 * writes), and without node_modules/.bin on the PATH (where Node-RED's own
 * npm, an older one that writes the lock file differently, would be found).
 */
function run(cmd: string, args: string[], cwd: string): Promise<string> {
  const env = Object.fromEntries(Object.entries(process.env).filter(([key]) => !/^npm_/i.test(key)));
  env.PATH = (process.env.PATH ?? '')
    .split(delimiter)
    .filter((dir) => !dir.split(sep).includes('node_modules'))
    .join(delimiter);
  return new Promise((done, fail) =>
    execFile(cmd, args, { cwd, env, timeout: 120_000, maxBuffer: 16 * 1024 * 1024 }, (error, stdout, stderr) =>
      error ? fail(new Error(`${cmd} ${args.join(' ')}: ${error.message}\n${stderr}`)) : done(stdout),
    ),
  );
}

describe('the npm package', function () {
  this.timeout(180_000);
  let dir: string;
  let packed: string[];

  before(async () => {
    // A copy of the package folder (what is committed, and a built dist), with a firmware build's leftovers in it.
    dir = mkdtempSync(join(tmpdir(), 'ble-ota-pack-'));
    const skip = new Set(['node_modules', '.git', 'build', 'managed_components', '.node-red-demo', 'test', 'bench']);
    cpSync(ROOT, dir, {
      recursive: true,
      filter: (src) =>
        !skip.has(
          src
            .slice(ROOT.length + 1)
            .split('/')
            .pop()!,
        ) || src === ROOT,
    });
    for (const file of PLANTED) {
      mkdirSync(dirname(join(dir, file)), { recursive: true });
      writeFileSync(join(dir, file), 'CONFIG_SECRET="planted"\n');
    }
    const [report] = JSON.parse(await run('npm', ['pack', '--dry-run', '--json', '--ignore-scripts'], dir)) as Array<{
      files: Array<{ path: string }>;
    }>;
    packed = report.files.map((f) => f.path).sort();
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('leaves out sdkconfig, build folders, managed components, dependencies.lock, keys and the demo folder', () => {
    for (const file of PLANTED) assert.ok(!packed.includes(file), `${file} is in the package`);
    const leaked = packed.filter((p) => /(^|\/)(sdkconfig(?!\.defaults)|build\/|managed_components|dependencies\.lock|\.node-red-demo)|\.(pem|secret|log)$/.test(p));
    assert.deepEqual(leaked, []);
  });

  it('holds only the built code, the docs, examples, icons and the firmware sources', () => {
    const outside = packed.filter((p) => !/^(dist\/(lib|nodes)\/|docs\/|examples\/|icons\/|firmware\/)/.test(p) && !['package.json', 'README.md', 'LICENSE'].includes(p));
    assert.deepEqual(outside, []);
    assert.ok(!packed.some((p) => p.startsWith('dist/test/') || p.startsWith('dist/bench/')), 'no tests or benchmarks');
    // tsc never deletes: npm run build (prepack) removes what it left from sources moved or deleted.
    const orphans = packed.filter((p) => /^dist\/.*\.(js|js\.map|d\.ts)$/.test(p) && !existsSync(join(ROOT, p.slice('dist/'.length).replace(/\.(js|js\.map|d\.ts)$/, '.ts'))));
    assert.deepEqual(orphans, [], 'compiled files without a source');
    const defaults = packed.filter((p) => p.startsWith('firmware/sdkconfig'));
    assert.deepEqual(
      defaults,
      ['esp32', 'esp32c3', 'esp32c6', 'esp32h2', 'esp32s3'].reduce((list, chip) => [...list, `firmware/sdkconfig.defaults.${chip}`], ['firmware/sdkconfig.defaults']),
    );
    for (const file of ['firmware/main/main.c', 'firmware/partitions.csv', 'firmware/components/ble_ota_core/include/ble_ota_core.h']) {
      assert.ok(packed.includes(file), file);
    }
    assert.ok(!packed.some((p) => /^firmware\/host\/(test|smoke|fuzz)/.test(p)), 'no host tests or fuzzers');
  });

  it('has a package-lock.json in step with package.json: npm, offline, leaves it as it is', async () => {
    // Offline with an empty cache: a lock in step needs nothing fetched; one out of step fails here
    // (a dependency npm would have to look up) or comes back changed.
    const copy = mkdtempSync(join(tmpdir(), 'ble-ota-lock-'));
    try {
      for (const file of ['package.json', 'package-lock.json']) cpSync(join(ROOT, file), join(copy, file));
      await run('npm', ['install', '--package-lock-only', '--ignore-scripts', '--offline', '--no-audit', '--no-fund', '--cache', join(copy, 'cache')], copy);
      const before = readFileSync(join(ROOT, 'package-lock.json'), 'utf8');
      const after = readFileSync(join(copy, 'package-lock.json'), 'utf8');
      if (after !== before) {
        const changed = after
          .split('\n')
          .filter((line, i) => line !== before.split('\n')[i])
          .slice(0, 5);
        assert.fail(`npm install --package-lock-only changes package-lock.json (run it and commit the result), from: ${changed.join(' | ')}`);
      }
    } finally {
      rmSync(copy, { recursive: true, force: true });
    }
  });

  it('has everything the virtual ESP32 is built from: its files alone build it', async () => {
    const only = mkdtempSync(join(tmpdir(), 'ble-ota-packed-'));
    try {
      for (const file of packed.filter((p) => p.startsWith('firmware/'))) {
        mkdirSync(dirname(join(only, file)), { recursive: true });
        cpSync(join(dir, file), join(only, file));
      }
      await run('make', ['-s', '-C', join(only, 'firmware/host'), `BUILD_DIR=${join(only, 'out')}`, 'virtual'], only);
      const usage = await new Promise<string>((done) => execFile(join(only, 'out/virtual-esp32'), ['--help'], (_error, stdout, stderr) => done(stdout + stderr)));
      assert.match(usage, /usage: virtual-esp32 \[--name NAME\]/);
    } finally {
      rmSync(only, { recursive: true, force: true });
    }
  });
});
