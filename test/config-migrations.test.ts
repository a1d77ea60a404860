/**
 * Node configurations are versioned (configVersion) and migrated: every
 * shape a node was saved in along the way (from git history: as the
 * examples and docs wrote them) deploys in a real Node-RED and behaves as
 * the current shape does; a configuration from a newer package gives a
 * warning, not a crash; and the editor runs the same table, which it loads
 * from the runtime.
 */
import { strict as assert } from 'node:assert';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { runInNewContext } from 'node:vm';
import { buildAppImage } from '../lib/image/app-image-builder';
import { parseEspImage } from '../lib/image/esp-image';
import { Config, currentVersion, migrate, NODE_TYPES, savedVersion, showInEditor } from '../nodes/shared/migrations';
import { catchNode, deviceNode, exchange, helper, TestNode, uploadNode, useNodeRed } from './support/node-red';

/* eslint-disable @typescript-eslint/no-require-imports */
const scanNode = require('../nodes/ble-ota-scan/ble-ota-scan') as unknown;
const statusNode = require('../nodes/ble-ota-status/ble-ota-status') as unknown;
const sampleNode = require('../nodes/ble-ota-sample/ble-ota-sample') as unknown;
/* eslint-enable @typescript-eslint/no-require-imports */

const ROOT = join(__dirname, '../..');
type Msg = Record<string, unknown>;

/**
 * Each node's shapes before configVersion, oldest first, named by the commit
 * that introduced them (the example flows and docs of the time held these).
 */
const OLD_SHAPES: Record<string, Array<{ commit: string; config: Config }>> = {
  'ble-ota-device': [
    { commit: 'cc97d8e', config: { name: '', device: 'esp32', backend: 'bluetooth', scanTimeout: 15, operationTimeout: 5 } },
    { commit: '0b41a8d', config: { name: '', device: 'esp32', backend: 'bluetooth', scanTimeout: 15, operationTimeout: 5, allowUnauthenticated: false } },
    { commit: '6fe9883', config: { name: '', device: 'esp32', backend: 'bluetooth', scanTimeout: 15, operationTimeout: 5, allowUnauthenticated: false, deviceId: '' } },
    {
      commit: '9edd9bd',
      config: { name: '', device: 'esp32', backend: 'virtual', virtualDevices: 'esp32', scanTimeout: 15, operationTimeout: 5, allowUnauthenticated: false, deviceId: '' },
    },
  ],
  'ble-ota-upload': [
    { commit: 'cc97d8e', config: { name: '', device: 'dev' } },
    { commit: '12af9f3', config: { name: '', device: 'dev', confirm: 'client' } },
    { commit: 'a3b4bbe', config: { name: '', device: 'dev', confirm: 'client', skipSame: true, allowDowngrade: false } },
    { commit: '80b035b', config: { name: '', device: 'dev', confirm: 'client', skipSame: true, allowDowngrade: false, requireSignature: false } },
    { commit: '0b41a8d', config: { name: '', device: 'dev', confirm: 'client', skipSame: true, allowDowngrade: false, requireSignature: false, publicKey: '' } },
  ],
  'ble-ota-status': [{ commit: '65b3a1e', config: { name: '', device: 'dev', scope: 'all', uploads: [], report: 'all', states: [], template: '', topic: '' } }],
  'ble-ota-scan': [
    {
      commit: '19ed3e8',
      config: { name: '', device: 'dev', duration: 5, output: 'list', namePattern: '', minRssi: '', probe: false, readVersions: false, scanAtStart: false },
    },
  ],
  'ble-ota-sample': [{ commit: 'e2b6075', config: { name: '', projectName: 'sample-app', version: '2.0.0', versionType: 'str', chip: 'esp32', size: 128 } }],
};

/** The current shape, every field as the editor writes it for a new node. */
const CURRENT: Record<string, Config> = {
  'ble-ota-device': { name: '', device: '', backend: 'bluetooth', virtualDevices: '', scanTimeout: 15, operationTimeout: 5, allowUnauthenticated: false, deviceId: '' },
  'ble-ota-upload': { name: '', device: '', confirm: 'client', skipSame: true, allowDowngrade: false, delta: true, requireSignature: false, publicKey: '' },
  'ble-ota-status': { name: '', device: '', scope: 'all', uploads: [], report: 'all', states: [], template: '', topic: '' },
  'ble-ota-scan': { name: '', device: '', duration: 5, output: 'list', namePattern: '', minRssi: '', probe: false, readVersions: false, scanAtStart: false },
  'ble-ota-sample': { name: '', projectName: 'sample-app', version: '2.0.0', versionType: 'str', chip: 'esp32', size: 128 },
};

/** The editor's defaults of a node type: the field names and the literal values (`{ value: ... }`) its .html gives them. */
function editorDefaults(type: string): Record<string, string> {
  const html = readFileSync(join(ROOT, 'nodes', type, `${type}.html`), 'utf8');
  const block = /defaults: \{\n([\s\S]*?)\n\s*\},\n\s*(credentials|inputs|\/\/)/.exec(html)?.[1];
  assert.ok(block, `${type}: the editor's defaults`);
  const indent = /^(\s*)name:/m.exec(block)![1];
  const fields: Record<string, string> = {};
  for (const m of block.matchAll(new RegExp(`^${indent}(\\w+): \\{\\s*(?:\\n\\s*)?value: ([^,\\n]+?)\\s*(?:,|\\}|\\n)`, 'gm'))) fields[m[1]] = m[2];
  return fields;
}

describe('config versions: the migration table', () => {
  it('knows every node type of the package, each at version 1', () => {
    const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { 'node-red': { nodes: Record<string, string> } };
    assert.deepEqual([...NODE_TYPES].sort(), Object.keys(pkg['node-red'].nodes).sort());
    for (const type of NODE_TYPES) assert.equal(currentVersion(type), 1, type);
  });

  for (const type of NODE_TYPES) {
    it(`${type}: a new node's fields are the editor's defaults, with the same values`, () => {
      const editor = editorDefaults(type);
      const migrated = migrate(type, {}).config;
      assert.deepEqual(Object.keys(migrated).sort(), Object.keys(editor).sort(), 'a field the editor has and the migrations lack, or the reverse');
      assert.equal(editor.configVersion, `BleOtaConfig.currentVersion('${type}')`);
      for (const [field, literal] of Object.entries(editor)) {
        if (field === 'configVersion') continue;
        assert.equal(JSON.stringify(migrated[field]), JSON.stringify(runInNewContext(`(${literal})`)), `${type}.${field}`);
      }
      assert.deepEqual({ ...migrated, configVersion: undefined }, { ...CURRENT[type], configVersion: undefined });
    });

    for (const { commit, config } of OLD_SHAPES[type]) {
      it(`${type} as saved at ${commit}: the current shape, its own values kept; migrating again changes nothing`, () => {
        const { config: migrated, from, problem } = migrate(type, config);
        assert.equal(from, 0);
        assert.equal(problem, undefined);
        assert.deepEqual(migrated, { ...CURRENT[type], ...config, configVersion: 1 });
        assert.deepEqual(migrate(type, migrated).config, migrated);
        assert.deepEqual(config.configVersion, undefined, 'the stored object is left as it was');
      });
    }
  }

  it('the examples are saved in the current shape: nothing for a migration to add', () => {
    let seen = 0;
    for (const file of readdirSync(join(ROOT, 'examples')).filter((f) => f.endsWith('.json'))) {
      const flow = JSON.parse(readFileSync(join(ROOT, 'examples', file), 'utf8')) as Config[];
      for (const node of flow.filter((n) => typeof n.type === 'string' && n.type.startsWith('ble-ota-'))) {
        const type = node.type as string;
        assert.equal(node.configVersion, currentVersion(type), `${file}: ${type} ${String(node.id)}`);
        assert.deepEqual(migrate(type, node).config, node, `${file}: ${type} ${String(node.id)}`);
        seen++;
      }
    }
    assert.ok(seen >= 20, `${seen} nodes in the examples`);
  });

  it("a virtual device node saved before 'In range' existed declares the device it names; a Bluetooth one, or one with the field, does not", () => {
    assert.equal(migrate('ble-ota-device', { device: ' lamp ', backend: 'virtual' }).config.virtualDevices, 'lamp');
    assert.equal(migrate('ble-ota-device', { device: 'lamp', backend: 'bluetooth' }).config.virtualDevices, '');
    assert.equal(migrate('ble-ota-device', { device: 'lamp', backend: 'virtual', virtualDevices: '' }).config.virtualDevices, '');
    assert.equal(migrate('ble-ota-device', { device: 'lamp', backend: 'virtual', configVersion: 1 }).config.virtualDevices, undefined, 'version 1 is taken as it is');
  });

  it('a newer version is left as it is and said; one that is not a version reads as the oldest', () => {
    const newer = { configVersion: 7, device: 'dev', confirm: 'device', laterOption: 'x' };
    assert.deepEqual(migrate('ble-ota-upload', newer), { config: newer, from: 7, current: 1, problem: 'newer' });
    assert.equal(savedVersion('ble-ota-upload', newer), 7, 'an older editor keeps the newer number');
    for (const bad of ['abc', -1, 1.5, true, '1e3']) {
      const m = migrate('ble-ota-upload', { configVersion: bad, device: 'dev' });
      assert.equal(m.problem, 'invalid', String(bad));
      assert.equal(m.config.configVersion, 1);
      assert.equal(m.config.skipSame, true);
    }
    assert.equal(migrate('ble-ota-upload', { configVersion: ' 1 ' }).problem, undefined, 'a number typed as text');
    assert.equal(savedVersion('ble-ota-upload', {}), 1);
  });
});

describe('config versions: the editor', () => {
  before(function (done) {
    helper.startServer(done);
  });
  after(function (done) {
    helper.stopServer(done);
  });
  afterEach(() => helper.unload());

  for (const type of NODE_TYPES) {
    it(`${type}.html loads the table before its definition, migrates in oneditprepare and stores the version in oneditsave`, () => {
      const html = readFileSync(join(ROOT, 'nodes', type, `${type}.html`), 'utf8');
      const loader = html.indexOf('<script src="ble-ota/config-migrations.js"></script>');
      assert.ok(loader >= 0 && loader < html.indexOf('RED.nodes.registerType'), 'the table is loaded first');
      const prefix = type === 'ble-ota-device' ? 'node-config-input' : 'node-input';
      const prepare = html.slice(html.indexOf('oneditprepare'), html.indexOf('oneditsave'));
      assert.match(prepare, new RegExp(`BleOtaConfig\\.showInEditor\\('${type}', (this|node), '${prefix}', \\$\\)`));
      assert.match(html, new RegExp(`oneditsave: function \\(\\) \\{\\n\\s*this\\.configVersion = BleOtaConfig\\.savedVersion\\('${type}', this\\);`));
      // The hand-made patches of older flows are gone: the table does it.
      assert.doesNotMatch(html, /=== undefined\) \$\(/);
    });
  }

  it('the runtime serves the table as the editor loads it: a script that needs only window, and gives the runtime’s answers', async () => {
    await new Promise<void>((resolve) => helper.load([sampleNode], [{ id: 's', type: 'ble-ota-sample' }], resolve));
    const res = await helper.request().get('/ble-ota/config-migrations.js');
    assert.equal(res.status, 200);
    const text = (res as unknown as { text: string }).text;
    assert.match((res as unknown as { headers: Record<string, string> }).headers['content-type'], /^application\/javascript/);
    const window: { BleOtaConfig?: { migrate(type: string, c: Config): unknown; currentVersion(type: string): number } } = {};
    runInNewContext(text, { window }); // no require, no module: what a browser has
    const editor = window.BleOtaConfig!;
    for (const type of NODE_TYPES) {
      assert.equal(editor.currentVersion(type), currentVersion(type));
      for (const { config } of OLD_SHAPES[type]) assert.deepEqual(JSON.stringify(editor.migrate(type, config)), JSON.stringify(migrate(type, config)));
    }
  });

  it('the dialog of an older node shows the runtime’s values for what it lacks, and leaves what it has', () => {
    const inputs = new Map<string, { checkbox: boolean; value?: unknown; checked?: unknown }>([
      ['#node-input-confirm', { checkbox: false }],
      ['#node-input-skipSame', { checkbox: true }],
      ['#node-input-allowDowngrade', { checkbox: true }],
      ['#node-input-name', { checkbox: false }],
    ]);
    const $ = (selector: string) => {
      const input = inputs.get(selector);
      return {
        length: input ? 1 : 0,
        is: (s: string) => s === ':checkbox' && !!input?.checkbox,
        prop: (_name: string, value: unknown) => (input!.checked = value),
        val: (value: unknown) => (input!.value = value),
      };
    };
    const changed = showInEditor('ble-ota-upload', { name: 'mine', device: 'dev', allowDowngrade: true }, 'node-input', $);
    assert.deepEqual(changed.sort(), ['confirm', 'skipSame']);
    assert.equal(inputs.get('#node-input-confirm')!.value, 'client');
    assert.equal(inputs.get('#node-input-skipSame')!.checked, true);
    assert.equal(inputs.get('#node-input-allowDowngrade')!.checked, undefined, 'what the node has is left');
    assert.equal(inputs.get('#node-input-name')!.value, undefined);
    assert.deepEqual(showInEditor('ble-ota-upload', { configVersion: 9, device: 'dev' }, 'node-input', $), [], 'a newer node is shown as it is');
  });
});

/** Warnings Node-RED logged for a node (the test helper's log spy). */
function warningsOf(id: string): string[] {
  const spy = (helper as unknown as { log(): { args: Array<[{ level: number; id?: string; msg?: unknown }]>; WARN: number } }).log();
  return spy.args.filter(([e]) => e.level === spy.WARN && e.id === id).map(([e]) => String(e.msg));
}

describe('config versions: older flows in a real Node-RED', function () {
  this.timeout(60_000);
  useNodeRed();

  /** A flow of a device node, one node of `type` wired to `out`, and a Catch node wired to `errors`. */
  async function deploy(device: Config, node: Config, nodes: unknown[]): Promise<{ node: TestNode; out: TestNode; errors: TestNode }> {
    const flow = [
      { id: 'tab', type: 'tab' },
      { id: 'dev', type: 'ble-ota-device', ...device },
      { id: 'n', z: 'tab', wires: [['out']], ...node },
      { id: 'out', z: 'tab', type: 'helper' },
      { id: 'catcher', z: 'tab', type: 'catch', scope: null, uncaught: false, wires: [['errors']] },
      { id: 'errors', z: 'tab', type: 'helper' },
    ];
    await new Promise<void>((resolve) => helper.load([deviceNode, ...nodes, catchNode], flow, resolve));
    return { node: helper.getNode('n'), out: helper.getNode('out'), errors: helper.getNode('errors') };
  }

  /** What a flow sees of one input: the result's outcome, or the error's code. */
  async function outcome(wires: { node: TestNode; out: TestNode; errors: TestNode }, msg: Msg): Promise<string> {
    const { result, error } = await exchange(wires.node, msg, wires);
    if (error) return (error.error as { code?: string }).code ?? 'error';
    const r = result!.payload as { skipped: boolean; confirmed: boolean };
    return r.skipped ? 'skipped' : r.confirmed ? 'confirmed' : 'updated';
  }

  /** An update, the same build again, then an older one. */
  async function uploads(device: Config, upload: Config): Promise<string[]> {
    const wires = await deploy(device, { ...upload, type: 'ble-ota-upload', device: 'dev' }, [uploadNode]);
    const image = (version: string) => buildAppImage({ size: 24 * 1024, projectName: 'virtual-esp32', version, seed: 71 });
    const seen = [await outcome(wires, { payload: image('2.0.0') }), await outcome(wires, { payload: image('2.0.0') }), await outcome(wires, { payload: image('0.5.0') })];
    await helper.unload();
    return seen;
  }

  it('ble-ota-device and ble-ota-upload of the first commit (a virtual device by name, no options) behave as the current shape', async () => {
    const old = await uploads({ name: '', device: 'mig-old', backend: 'virtual', scanTimeout: 3, operationTimeout: 3 }, { name: '' });
    const now = await uploads(
      { ...CURRENT['ble-ota-device'], configVersion: 1, device: 'mig-new', backend: 'virtual', virtualDevices: 'mig-new', scanTimeout: 3, operationTimeout: 3 },
      { ...CURRENT['ble-ota-upload'], configVersion: 1 },
    );
    // Confirmed by the client, the same build skipped, an older one refused (no downgrade).
    assert.deepEqual(old, ['confirmed', 'skipped', 'DOWNGRADE_REFUSED']);
    assert.deepEqual(old, now);
  });

  it('every older upload shape updates as the current one does', async () => {
    for (const [i, { commit, config }] of OLD_SHAPES['ble-ota-upload'].entries()) {
      const name = `mig-up-${i}`;
      const seen = await uploads({ device: name, backend: 'virtual', virtualDevices: name, scanTimeout: 3, operationTimeout: 3 }, { ...config, device: 'dev' });
      assert.deepEqual(seen, ['confirmed', 'skipped', 'DOWNGRADE_REFUSED'], commit);
    }
  });

  it('older device shapes reach their device (each older Bluetooth shape, on the virtual radio it could name)', async () => {
    for (const [i, { commit, config }] of OLD_SHAPES['ble-ota-device'].entries()) {
      const name = `mig-dev-${i}`;
      const device = { ...config, device: name, backend: 'virtual', scanTimeout: 3, operationTimeout: 3, ...(config.virtualDevices === undefined ? {} : { virtualDevices: name }) };
      const wires = await deploy(device, { type: 'ble-ota-status', device: 'dev' }, [statusNode]);
      const { result, error } = await exchange(wires.node, {}, wires);
      assert.equal(error, undefined, `${commit}: ${JSON.stringify(error?.error)}`);
      assert.equal((result!.payload as { name: string }).name, name, commit);
      await helper.unload();
    }
  });

  it('the older status and scan shapes read and list the device as the current ones do', async () => {
    const device = { device: 'mig-look', backend: 'virtual', virtualDevices: 'mig-look', scanTimeout: 3, operationTimeout: 3 };
    const looks: Array<[string, string]> = [];
    for (const shape of [OLD_SHAPES['ble-ota-status'][0].config, { ...CURRENT['ble-ota-status'], configVersion: 1 }]) {
      const wires = await deploy(device, { ...shape, type: 'ble-ota-status', device: 'dev' }, [statusNode]);
      const { result } = await exchange(wires.node, {}, wires);
      const info = result!.payload as { name: string; version: string };
      looks.push([info.name, info.version]);
      await helper.unload();
    }
    for (const shape of [OLD_SHAPES['ble-ota-scan'][0].config, { ...CURRENT['ble-ota-scan'], configVersion: 1 }]) {
      const wires = await deploy(device, { ...shape, type: 'ble-ota-scan', device: 'dev', duration: 1 }, [scanNode]);
      const { result } = await exchange(wires.node, {}, wires);
      const found = result!.payload as Array<{ name: string }>;
      looks.push(['scan', found.map((d) => d.name).join(',')]);
      await helper.unload();
    }
    assert.deepEqual(looks, [
      ['mig-look', '1.0.0'],
      ['mig-look', '1.0.0'],
      ['scan', 'mig-look'],
      ['scan', 'mig-look'],
    ]);
  });

  it('the older sample shape, and one with no options at all, make the image the current shape makes', async () => {
    const images: string[] = [];
    for (const shape of [OLD_SHAPES['ble-ota-sample'][0].config, {}, { ...CURRENT['ble-ota-sample'], configVersion: 1 }]) {
      const flow = [
        { id: 'tab', type: 'tab' },
        { id: 'n', z: 'tab', type: 'ble-ota-sample', wires: [['out']], ...shape },
        { id: 'out', z: 'tab', type: 'helper' },
        { id: 'catcher', z: 'tab', type: 'catch', scope: null, wires: [['errors']] },
        { id: 'errors', z: 'tab', type: 'helper' },
      ];
      await new Promise<void>((resolve) => helper.load([sampleNode, catchNode], flow, resolve));
      const { result } = await exchange(helper.getNode('n'), {}, { out: helper.getNode('out'), errors: helper.getNode('errors') });
      const image = parseEspImage(result!.payload as Buffer);
      images.push(`${image.appDesc.projectName} ${image.appDesc.version} chip ${image.header.chipId} ${Math.round((result!.payload as Buffer).length / 1024)} KiB`);
      await helper.unload();
    }
    assert.deepEqual(images, Array(3).fill('sample-app 2.0.0 chip 0 128 KiB'));
  });

  it('a node saved by a newer package deploys with a warning saying what to do, and still works', async () => {
    const wires = await deploy(
      { device: 'mig-newer', backend: 'virtual', virtualDevices: 'mig-newer', scanTimeout: 3, operationTimeout: 3 },
      { type: 'ble-ota-upload', device: 'dev', configVersion: 5, confirm: 'client', skipSame: true, optionOfLater: 'x' },
      [uploadNode],
    );
    const warnings = warningsOf('n');
    assert.equal(warnings.length, 1, warnings.join('\n'));
    assert.match(
      warnings[0],
      /saved by a newer version of node-red-contrib-esp32-ble-ota \(configuration version 5; this version knows up to 1\)\. .*update node-red-contrib-esp32-ble-ota/,
    );
    const image = buildAppImage({ size: 24 * 1024, projectName: 'virtual-esp32', version: '2.0.0', seed: 72 });
    assert.equal(await outcome(wires, { payload: image }), 'confirmed');
  });

  it('every node type saved by a newer package deploys with that warning, once, and runs', async () => {
    const current = { device: 'mig-each', backend: 'virtual', virtualDevices: 'mig-each', scanTimeout: 3, operationTimeout: 3 };
    for (const type of NODE_TYPES) {
      const device = type === 'ble-ota-device' ? { ...current, configVersion: 99 } : current;
      const node = type === 'ble-ota-device' ? { type: 'ble-ota-status', device: 'dev' } : { type, device: 'dev', configVersion: 99 };
      await deploy(device, node, [uploadNode, statusNode, scanNode, sampleNode]);
      const id = type === 'ble-ota-device' ? 'dev' : 'n';
      assert.ok(helper.getNode(id), `${type} runs`);
      const warnings = warningsOf(id);
      assert.equal(warnings.length, 1, `${type}: ${warnings.join(' | ')}`);
      assert.match(warnings[0], /configuration version 99; this version knows up to 1/, type);
      await helper.unload();
    }
  });

  it('a scan time or timeout the editor would not take (a flow written by hand): a warning naming it, and the default runs', async () => {
    const wires = await deploy(
      { device: 'mig-times', backend: 'virtual', virtualDevices: 'mig-times', scanTimeout: 'soon', operationTimeout: 86_400 },
      { type: 'ble-ota-status', device: 'dev' },
      [statusNode],
    );
    assert.deepEqual(warningsOf('dev'), [
      'Scan time "soon" is no number of seconds from 1 to 3600: 15 s is used. Open the device node and correct it.',
      'Timeout "86400" is no number of seconds from 1 to 600: 5 s is used. Open the device node and correct it.',
    ]);
    assert.deepEqual((helper.getNode('dev') as unknown as { timeouts: unknown }).timeouts, { scanMs: 15_000, gattMs: 5_000 });
    const { result } = await exchange(wires.node, {}, wires);
    assert.equal((result!.payload as { name: string }).name, 'mig-times');
    await helper.unload();
    // Blank is the default, without a word; below the editor's 1 s is out of range as above, 1 s and fractions above it are taken.
    await deploy({ device: 'mig-times', backend: 'virtual', virtualDevices: 'mig-times', scanTimeout: '', operationTimeout: 0.5 }, { type: 'ble-ota-status', device: 'dev' }, [
      statusNode,
    ]);
    assert.deepEqual(warningsOf('dev'), ['Timeout "0.5" is no number of seconds from 1 to 600: 5 s is used. Open the device node and correct it.']);
    assert.deepEqual((helper.getNode('dev') as unknown as { timeouts: unknown }).timeouts, { scanMs: 15_000, gattMs: 5_000 });
    await helper.unload();
    await deploy({ device: 'mig-times', backend: 'virtual', virtualDevices: 'mig-times', scanTimeout: 1, operationTimeout: '1.5' }, { type: 'ble-ota-status', device: 'dev' }, [
      statusNode,
    ]);
    assert.deepEqual(warningsOf('dev'), []);
    assert.deepEqual((helper.getNode('dev') as unknown as { timeouts: unknown }).timeouts, { scanMs: 1_000, gattMs: 1_500 });
  });

  it("a scan node's Scan time or Min. RSSI the editor would not take (a flow written by hand): a warning naming it, and what runs", async () => {
    const device = { device: 'mig-scan', backend: 'virtual', virtualDevices: 'mig-scan', scanTimeout: 3, operationTimeout: 3 };
    await deploy(device, { type: 'ble-ota-scan', device: 'dev', duration: 0.3, minRssi: 'loud' }, [scanNode]);
    assert.deepEqual(warningsOf('n'), [
      'Scan time "0.3" is no number of seconds from 1 to 120: 1 s is used. Open the node and correct it.',
      'Min. RSSI "loud" is no number from -127 to 20 dBm: devices are not filtered by signal. Open the node and correct it.',
    ]);
    await helper.unload();
    await deploy(device, { type: 'ble-ota-scan', device: 'dev', duration: 'soon', minRssi: 50 }, [scanNode]);
    assert.equal(warningsOf('n').length, 2);
    assert.match(warningsOf('n')[0], /"soon" .*: 5 s is used/);
    await helper.unload();
    // Blank fields are the defaults, without a word; values in range are taken.
    await deploy(device, { type: 'ble-ota-scan', device: 'dev', duration: '', minRssi: '' }, [scanNode]);
    assert.deepEqual(warningsOf('n'), []);
    await helper.unload();
    await deploy(device, { type: 'ble-ota-scan', device: 'dev', duration: '2.5', minRssi: -90 }, [scanNode]);
    assert.deepEqual(warningsOf('n'), []);
    await helper.unload();
  });

  it('a Device ID or radio the editor would not take (a flow written by hand): a warning at deploy naming it', async () => {
    await deploy(
      { device: 'mig-id', backend: 'virtual', virtualDevices: 'mig-id', deviceId: 'kitchen', scanTimeout: 3, operationTimeout: 3 },
      { type: 'ble-ota-status', device: 'dev' },
      [statusNode],
    );
    assert.deepEqual(warningsOf('dev'), [
      'Device ID: "kitchen" is no device id: give the chip\'s MAC address (12 hex digits) as esptool.py read_mac prints it, e.g. 24:0a:c4:12:34:56. Every update through this device node is refused until you correct it and Deploy.',
    ]);
    await helper.unload();
    await deploy({ device: 'mig-id', backend: 'virtal', deviceId: '24:0a:c4:12:34:56', scanTimeout: 3, operationTimeout: 3 }, { type: 'ble-ota-status', device: 'dev' }, [
      statusNode,
    ]);
    assert.deepEqual(warningsOf('dev'), [
      'Radio "virtal" is neither the Bluetooth adapter (bluetooth) nor the virtual ESP32 (virtual): the Bluetooth adapter is used. Open the device node and choose the radio.',
    ]);
    await helper.unload();
    // A well-formed id on a known radio: not a word.
    await deploy(
      { device: 'mig-id', backend: 'virtual', virtualDevices: 'mig-id', deviceId: '240ac4123456', scanTimeout: 3, operationTimeout: 3 },
      { type: 'ble-ota-status', device: 'dev' },
      [statusNode],
    );
    assert.deepEqual(warningsOf('dev'), []);
  });

  it('a configVersion that is not a version: a warning naming it, and the node reads as the oldest shape', async () => {
    const wires = await deploy(
      { device: 'mig-bad', backend: 'virtual', virtualDevices: 'mig-bad', scanTimeout: 3, operationTimeout: 3 },
      { type: 'ble-ota-status', device: 'dev', configVersion: 'two' },
      [statusNode],
    );
    const warnings = warningsOf('n');
    assert.equal(warnings.length, 1, warnings.join('\n'));
    assert.match(warnings[0], /configVersion "two" is not a version/);
    const { result } = await exchange(wires.node, {}, wires);
    assert.equal((result!.payload as { name: string }).name, 'mig-bad');
  });
});
