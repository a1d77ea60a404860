/**
 * Runtime strings of a node, from its message catalogue
 * (nodes/<node>/locales/<lang>/<node>.json) through Node-RED's RED._(),
 * in the runtime's language (settings.js `lang`, else the system's locale).
 *
 * A text that depends on a number has plural forms, `<key>_one` and
 * `<key>_other`, which RED._ (i18next) picks by `count`.
 *
 * Where RED._ has no catalogue loaded (node-red-node-test-helper's RED._
 * returns the key) the node's en-US catalogue is read directly, plural
 * forms included, so a node never shows a bare key.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { RED } from './red';

type Catalogue = Record<string, unknown>;

function lookup(catalogue: Catalogue, key: string): string | undefined {
  let value: unknown = catalogue;
  for (const part of key.split('.')) {
    if (typeof value !== 'object' || value === null) return undefined;
    value = (value as Catalogue)[part];
  }
  return typeof value === 'string' ? value : undefined;
}

function fill(template: string, values: Record<string, unknown> = {}): string {
  return template.replace(/__(\w+)__/g, (whole, name: string) => (name in values ? String(values[name]) : whole));
}

export type Translate = (key: string, values?: Record<string, unknown>) => string;

/** A translator for the node whose catalogue is `<dir>/locales/en-US/<node>.json`. */
export function translator(RED: RED, dir: string, node: string): Translate {
  let fallback: Catalogue | undefined;
  return (key, values) => {
    const translated = RED._(key, values);
    if (translated !== key) return translated;
    fallback ??= JSON.parse(readFileSync(join(dir, 'locales', 'en-US', `${node}.json`), 'utf8')) as Catalogue;
    const count = values?.count;
    const plural = typeof count === 'number' ? lookup(fallback, `${key}_${count === 1 ? 'one' : 'other'}`) : undefined;
    const template = plural ?? lookup(fallback, key);
    return template === undefined ? key : fill(template, values);
  };
}
