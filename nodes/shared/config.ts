/**
 * Where the nodes meet the migrations (migrations.ts): each constructor
 * reads its configuration through nodeConfig, and the editor loads the
 * same table from the admin API.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { hideSecretForms } from '../../lib/client/target';
import type { Translate } from './i18n';
import { Config, migrate } from './migrations';
import type { Node, RED } from './red';

/** The package's name, for a warning that says what to update. */
const PACKAGE = 'node-red-contrib-esp32-ble-ota';

/**
 * The node's configuration in the current shape. A configuration saved by
 * a newer version of this package is used as it is, with a warning (what
 * this version does not know is ignored, nothing fails); a version that is
 * not a number is read as the oldest, with a warning.
 *
 * t: the node's translator; its catalogue has `<type>.warnings.newerConfig`
 * and `<type>.warnings.badConfigVersion`.
 */
export function nodeConfig<D extends Config>(node: Node, def: D, t: Translate): D {
  const migration = migrate(node.type, def);
  if (migration.problem === 'newer') {
    node.warn(t(`${node.type}.warnings.newerConfig`, { found: migration.from, known: migration.current, package: PACKAGE }));
  } else if (migration.problem === 'invalid') {
    node.warn(t(`${node.type}.warnings.badConfigVersion`, { value: hideSecretForms(String(def.configVersion)).slice(0, 40), known: migration.current }));
  }
  return migration.config as D;
}

let servedTo: WeakSet<object> | undefined;

/**
 * GET /ble-ota/config-migrations.js: migrations.ts as the editor loads it
 * (each node's .html names it in a <script src>), defining
 * window.BleOtaConfig. Registered once, by whichever node type loads first.
 *
 * Without a permission check, as Node-RED serves nodes' resources/: the
 * editor loads it with a plain script element, which carries no access
 * token, and it holds no data, only the table and its functions.
 */
export function serveMigrations(RED: RED): void {
  servedTo ??= new WeakSet();
  if (servedTo.has(RED.httpAdmin)) return;
  servedTo.add(RED.httpAdmin);
  let script: string | undefined;
  RED.httpAdmin.get('/ble-ota/config-migrations.js', (_req, res) => {
    // The compiled module (CommonJS, no imports) in a function that gives it its own exports.
    script ??= `(function () {\n  var module = { exports: {} };\n  var exports = module.exports;\n${readFileSync(join(__dirname, 'migrations.js'), 'utf8').replace(/^\/\/# sourceMappingURL=.*$/m, '')}\n  window.BleOtaConfig = module.exports;\n})();\n`;
    res.set('Content-Type', 'application/javascript; charset=utf-8').set('Cache-Control', 'no-cache').send(script);
  });
}
