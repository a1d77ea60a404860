/**
 * What the edit dialogs say about a field's value, read from each node's
 * .html as Node-RED's editor runs it: the definition's `defaults` (and
 * `credentials`) with their `required`, `label` and `validate`, checked the
 * way Node-RED 4's validateNodeProperty checks them. A value the editor
 * refuses comes with a message that names the field and says what to give;
 * and the editor refuses what the runtime refuses, no less.
 */
import { strict as assert } from 'node:assert';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { runInNewContext } from 'node:vm';
import { parseDeviceId, parseSecret } from '../lib/client/session';
import { targetOf } from '../lib/client/target';
import { sampleImage } from '../lib/image/sample-image';
import { generateSigningKey } from '../lib/image/signature';
import { PRESETS } from '../lib/virtual/link-model';
import { DEFAULT_SLOW_PRESET, parseVirtualDevices } from '../lib/virtual/virtual-radio';
import { ROOT } from './support/node-red-process';

type Catalogue = { [key: string]: string | Catalogue };

/** A field of a node definition, as the editor reads it. */
interface Property {
  value?: unknown;
  type?: string;
  required?: boolean;
  label?: unknown;
  validate?: (this: EditedNode, value: unknown, opt: { label?: string }) => unknown;
}
interface Definition {
  defaults: Record<string, Property>;
  credentials?: Record<string, Property>;
}
type EditedNode = Record<string, unknown> & { _: (key: string, subs?: Record<string, unknown>) => string };

/** The message `key` (dots) of a node's en-US catalogue, with its __placeholders__ filled. */
function translate(node: string, key: string, subs: Record<string, unknown> = {}): string {
  const catalogue = JSON.parse(readFileSync(join(ROOT, `nodes/${node}/locales/en-US/${node}.json`), 'utf8')) as Catalogue;
  let at: string | Catalogue | undefined = catalogue;
  for (const part of key.split('.')) at = typeof at === 'object' ? at[part] : undefined;
  assert.equal(typeof at, 'string', `${node}: no message ${key}`);
  return (at as string).replace(/__(\w+)__/g, (_m, name: string) => String(subs[name]));
}

/** The node type's definition, as its .html registers it in the editor (which runs it with RED and jQuery at hand). */
function definition(type: string): Definition {
  const html = readFileSync(join(ROOT, `nodes/${type}/${type}.html`), 'utf8');
  const script = /<script type="text\/javascript">([\s\S]*?)<\/script>/.exec(html)?.[1];
  assert.ok(script, `${type}.html: the definition's script`);
  let registered: Definition | undefined;
  const RED = {
    nodes: {
      registerType: (name: string, def: Definition) => {
        if (name === type) registered = def;
      },
    },
    // 'module/set:key', as Node-RED names a node's catalogue.
    _: (key: string) => {
      const m = /^node-red-contrib-esp32-ble-ota\/([\w-]+):(.+)$/.exec(key);
      assert.ok(m, `RED._ of ${key}: not one of this package's catalogues`);
      return translate(m[1], m[2]);
    },
    // A typed input's own check: it passes what these tests give it.
    validators: { typedInput: () => () => true },
  };
  // Outside an open dialog: no element matches.
  const $ = () => ({ length: 0, val: () => undefined, prop: () => undefined });
  runInNewContext(script, { RED, $, BleOtaConfig: { currentVersion: () => 1 }, TextEncoder });
  assert.ok(registered, `${type}.html registers ${type}`);
  return registered;
}

/**
 * What the editor says of `value` in `field` of a node with `props`: true,
 * or the message its field shows (false: refused without a word). Node-RED
 * 4.1's validateNodeProperty: an empty required field is refused (with
 * "<label>: property value missing" where the field has a label); a field
 * with `required: false` is valid empty; a validator gets an options object
 * (with the label) and may return a message; a config node field without a
 * validator needs a config node when required.
 */
function verdict(type: string, field: string, value: unknown, props: Record<string, unknown> = {}): true | string | false {
  const def = definition(type);
  const property = def.defaults[field] ?? def.credentials?.[field];
  assert.ok(property, `${type} has no field ${field}`);
  const defaults = Object.fromEntries(Object.entries(def.defaults).map(([k, p]) => [k, p.value]));
  const node: EditedNode = { ...defaults, ...props, [field]: value, _: (key, subs) => translate(type, key, subs) };
  const label = typeof property.label === 'string' ? property.label : undefined;
  if (property.required && value === '') return label ? `${label}: property value missing` : false;
  if (property.validate) {
    if (property.required === false && value === '') return true;
    const result = property.validate.call(node, value, label ? { label } : {});
    return typeof result === 'string' ? result : result ? true : false;
  }
  if (property.type && (value === '' || value === '_ADD_')) {
    if (property.required === false) return true;
    return label ? `${label}: property value missing` : false;
  }
  return true;
}

/** Asserts that the editor refuses `value` with a message that starts with the field's label. */
function refusedSaying(type: string, field: string, value: unknown, label: string, props: Record<string, unknown> = {}): string {
  const said = verdict(type, field, value, props);
  assert.equal(typeof said, 'string', `${type}.${field} = ${JSON.stringify(value)}: refused without a message (${String(said)})`);
  assert.ok((said as string).startsWith(`${label}: `), `${type}.${field} = ${JSON.stringify(value)}: "${String(said)}" does not name the field`);
  return said as string;
}

const PEM_PUBLIC = '-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE\n-----END PUBLIC KEY-----';
const PEM_PRIVATE = '-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49\n-----END PRIVATE KEY-----';

describe('edit dialogs: what a field says of its value', () => {
  it('upload node: a private key in Public key is refused whether or not a signature is required (the runtime refuses every update while it is there)', () => {
    for (const requireSignature of [true, false]) {
      const said = refusedSaying('ble-ota-upload', 'publicKey', PEM_PRIVATE, 'Public key', { requireSignature });
      assert.match(said, /private key/);
      refusedSaying('ble-ota-upload', 'publicKey', `${PEM_PUBLIC}\n${PEM_PRIVATE}`, 'Public key', { requireSignature });
      assert.equal(verdict('ble-ota-upload', 'publicKey', PEM_PUBLIC, { requireSignature }), true);
    }
    refusedSaying('ble-ota-upload', 'publicKey', '', 'Public key', { requireSignature: true });
    assert.equal(verdict('ble-ota-upload', 'publicKey', '', { requireSignature: false }), true);
  });

  it('device node: In range is refused where the virtual radio refuses it at deploy, saying which option of which device', () => {
    const runtime = (text: string) => {
      try {
        parseVirtualDevices(text);
        return true;
      } catch {
        return false;
      }
    };
    const lists = [
      '',
      'esp32-a',
      'esp32-a\nesp32-b slow, esp32-c offline, esp32-d flaky',
      'AA:BB:CC:DD:EE:FF offline',
      ...PRESETS.map((p) => `esp32-a slow=${p.name}`),
      'esp32-a slow=nope',
      'esp32-a slow=',
      'esp32-a flaky=0',
      'esp32-a flaky=100',
      'esp32-a flaky=12.5',
      'esp32-a flaky=100.5',
      'esp32-a flaky=200',
      'esp32-a flaky=-1',
      'esp32-a flaky=often',
      'esp32-a offline=1',
      'esp32-a fast',
      ',',
      ' , esp32-a slow flaky=30 offline',
    ];
    for (const list of lists) {
      const said = verdict('ble-ota-device', 'virtualDevices', list);
      assert.equal(said === true, runtime(list), `${JSON.stringify(list)}: the editor says ${String(said)}`);
      if (said !== true) refusedSaying('ble-ota-device', 'virtualDevices', list, 'In range');
    }
    assert.match(refusedSaying('ble-ota-device', 'virtualDevices', 'esp32-a\nesp32-b slow=nope', 'In range'), /"esp32-b" has "slow=nope".*linux-noble-esp32, /);
    assert.match(refusedSaying('ble-ota-device', 'virtualDevices', 'esp32-a flaky=200', 'In range'), /from 0 to 100/);
    assert.match(refusedSaying('ble-ota-device', 'virtualDevices', 'esp32-a fast', 'In range'), /unknown option "fast"/);
    // The presets the editor knows are the radio's, `slow` alone the same one.
    const html = readFileSync(join(ROOT, 'nodes/ble-ota-device/ble-ota-device.html'), 'utf8');
    assert.deepEqual(
      JSON.parse(/var PRESETS = (\[[^\]]*\])/.exec(html)![1].replace(/'/g, '"')),
      PRESETS.map((p) => p.name),
    );
    assert.equal(/var DEFAULT_SLOW = '([^']+)'/.exec(html)![1], DEFAULT_SLOW_PRESET);
  });

  it('sample node: a Version typed in is refused where the sample cannot carry it (blank, longer than 31 bytes)', () => {
    const runtime = (version: string) => {
      try {
        sampleImage({ version, size: 1024 });
        return true;
      } catch {
        return false;
      }
    };
    for (const version of ['2.1.0', ' 2.1.0 ', 'v2-rc1+build.7', 'x'.repeat(31), 'x'.repeat(32), 'ä'.repeat(15), 'ä'.repeat(16), ' ', '\t']) {
      const said = verdict('ble-ota-sample', 'version', version, { versionType: 'str' });
      assert.equal(said === true, runtime(version), `${JSON.stringify(version)}: the editor says ${String(said)}`);
      if (said !== true) refusedSaying('ble-ota-sample', 'version', version, 'Version', { versionType: 'str' });
    }
    // From a message, context or the environment: the property's name, which Node-RED's own check takes.
    assert.equal(verdict('ble-ota-sample', 'version', 'x'.repeat(40), { versionType: 'msg' }), true);
  });

  it('device node: Device takes every name the runtime takes, also one that starts as an address does; part of an address is refused, saying so', () => {
    for (const name of [
      'esp32',
      'ac-unit',
      'de-lab-1',
      'be:ef kitchen',
      'AA:BB:CC:DD:EE:FF',
      'aa-bb-cc-dd-ee-ff',
      'aabbccddeeff',
      '0123456789abcdef0123456789abcdef',
      ' esp32 ',
      '',
    ]) {
      assert.equal(verdict('ble-ota-device', 'device', name), true, JSON.stringify(name));
      assert.doesNotThrow(() => targetOf(name));
    }
    for (const part of ['AA:BB', 'AA:BB:CC:DD:EE', 'aa-bb-cc-dd-ee-', 'AA:BB:CC:DD:EE:FF:00', 'ac-de']) {
      assert.match(refusedSaying('ble-ota-device', 'device', part, 'Device'), /part of a Bluetooth address: give all six pairs/, part);
    }
    // A fleet secret or a key's PEM text (an input field drops its line breaks), as the runtime refuses them.
    const pem = generateSigningKey('ecdsa256');
    for (const secretLike of ['ab'.repeat(32), pem, pem.replace(/\n/g, '')]) {
      assert.match(String(verdict('ble-ota-device', 'device', secretLike)), /^The Device field looks like a key or a secret, not a device name/);
      assert.throws(() => targetOf(secretLike), /looks like a key or a secret/);
    }
  });

  const NODES = ['ble-ota-device', 'ble-ota-upload', 'ble-ota-status', 'ble-ota-scan', 'ble-ota-sample'];

  it('no field is refused without a word: empty, or any of a few wrong values, is valid or says why', () => {
    const wrong = ['', ' ', 'x', '-1', '0', 'AA:BB', '1e9', '/x/', '-----BEGIN PRIVATE KEY-----'];
    for (const type of NODES) {
      const def = definition(type);
      for (const field of [...Object.keys(def.defaults), ...Object.keys(def.credentials ?? {})]) {
        for (const value of wrong) {
          for (const props of [{}, { requireSignature: true, report: 'selected', versionType: 'str' }]) {
            assert.notEqual(verdict(type, field, value, props), false, `${type}.${field} = ${JSON.stringify(value)} ${JSON.stringify(props)}: refused without a message`);
          }
        }
      }
    }
  });

  it('an empty field that must be set names itself: the device to use, numbers, the sample', () => {
    refusedSaying('ble-ota-upload', 'device', '', 'Device');
    refusedSaying('ble-ota-upload', 'device', '_ADD_', 'Device');
    refusedSaying('ble-ota-scan', 'device', '', 'Radio');
    assert.equal(verdict('ble-ota-status', 'device', ''), true, 'the status node needs no device for events');
    assert.match(refusedSaying('ble-ota-scan', 'duration', '', 'Scan time'), /from 1 to 120/);
    assert.match(refusedSaying('ble-ota-device', 'scanTimeout', '', 'Scan time'), /from 1 to 3600/);
    assert.match(refusedSaying('ble-ota-device', 'operationTimeout', ' ', 'Timeout'), /from 1 to 600/);
    refusedSaying('ble-ota-sample', 'projectName', '', 'Project');
    refusedSaying('ble-ota-sample', 'version', '', 'Version');
    assert.match(refusedSaying('ble-ota-sample', 'size', '', 'Size'), /from 1 to 16384/);
  });

  it('device node: Device ID and Fleet secret are refused where the runtime refuses them, saying what to give', () => {
    const takes = (parse: () => unknown) => {
      try {
        parse();
        return true;
      } catch {
        return false;
      }
    };
    for (const id of ['', '24:0a:c4:12:34:56', '240AC4123456', '24-0a-c4-12-34-56', ' 24:0a:c4:12:34:56 ', 'xyz', '24:0a:c4:12:34', '24:0a:c4:12:34:56:78']) {
      const said = verdict('ble-ota-device', 'deviceId', id);
      assert.equal(said === true, id === '' || takes(() => parseDeviceId(id)), `${JSON.stringify(id)}: the editor says ${String(said)}`);
      if (said !== true) assert.match(refusedSaying('ble-ota-device', 'deviceId', id, 'Device ID'), /factory MAC/);
    }
    for (const secret of ['', 'ab'.repeat(32), ` ${'AB'.repeat(32)} `, 'abc', 'ab'.repeat(31), `0x${'ab'.repeat(32)}`, 'zz'.repeat(32)]) {
      const said = verdict('ble-ota-device', 'secret', secret);
      assert.equal(said === true, secret === '' || takes(() => parseSecret(secret)), `a secret of ${secret.length} characters: the editor says ${String(said)}`);
      if (said !== true) assert.match(refusedSaying('ble-ota-device', 'secret', secret, 'Fleet secret'), /64 hex digits/);
    }
    assert.equal(verdict('ble-ota-device', 'secret', '__PWRD__'), true, 'the stored secret, which the editor never sees');
  });
});
