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
  const $ = () => ({ length: 0 });
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
});
