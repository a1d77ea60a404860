/**
 * Node configurations carry `configVersion`, and a flow saved by an older
 * version of this package is brought to the current shape by the steps
 * below, in order: by the runtime when a node starts, and by the editor
 * when its dialog opens (the editor loads this file, compiled, from
 * GET /ble-ota/config-migrations.js: one table for both).
 *
 * A step takes a configuration of the version before it and returns one of
 * its own version, the fields unknown to it untouched. A new field, a
 * renamed one, or a value whose meaning changes gets a step here (and the
 * editor's default), so that a flow from any earlier version still behaves
 * as it did.
 *
 * `configVersion`, not `version`: the sample node's `version` is the app
 * version it writes into its image.
 *
 * This file runs in the browser too: no imports, and nothing but plain
 * objects and functions.
 */

/** A node's configuration as a flow file holds it. */
export type Config = Record<string, unknown>;

interface Step {
  /** The version this step produces. */
  to: number;
  up(config: Config): Config;
}

/** Fields a configuration lacks get the value the runtime took for them when they were missing. */
function withDefaults(defaults: Config): (config: Config) => Config {
  return (config) => {
    const out: Config = { ...config };
    for (const [field, value] of Object.entries(defaults)) {
      if (out[field] === undefined) out[field] = Array.isArray(value) ? [...(value as unknown[])] : value;
    }
    return out;
  };
}

/**
 * Version 1 (0.1.0): the first with `configVersion`. Before it, options
 * added along the way were simply missing from older flows, and the runtime
 * and the editor each filled them in (the editor by hand in oneditprepare);
 * now the step does, once, with the same values.
 */
const STEPS: Record<string, Step[]> = {
  'ble-ota-device': [
    {
      to: 1,
      up: (config) => {
        // A virtual device node saved before 'In range' (virtualDevices) existed reached any
        // name it was given; now only declared devices exist, so it declares the one it names.
        const inRange = config.virtualDevices === undefined && config.backend === 'virtual' ? String(config.device ?? '').trim() : '';
        return withDefaults({
          name: '',
          device: '',
          backend: 'bluetooth',
          virtualDevices: inRange,
          scanTimeout: 15,
          operationTimeout: 5,
          allowUnauthenticated: false,
          deviceId: '',
        })(config);
      },
    },
  ],
  'ble-ota-upload': [
    {
      to: 1,
      up: withDefaults({ name: '', device: '', confirm: 'client', skipSame: true, allowDowngrade: false, delta: true, requireSignature: false, publicKey: '' }),
    },
  ],
  'ble-ota-status': [
    {
      to: 1,
      up: withDefaults({ name: '', device: '', scope: 'all', uploads: [], report: 'all', states: [], template: '', topic: '' }),
    },
  ],
  'ble-ota-scan': [
    {
      to: 1,
      up: withDefaults({
        name: '',
        device: '',
        duration: 5,
        output: 'list',
        namePattern: '',
        minRssi: '',
        probe: false,
        readVersions: false,
        scanAtStart: false,
      }),
    },
  ],
  'ble-ota-sample': [
    {
      to: 1,
      up: withDefaults({ name: '', projectName: 'sample-app', version: '2.0.0', versionType: 'str', chip: 'esp32', size: 128 }),
    },
  ],
};

/** The node types this package has, each with its steps. */
export const NODE_TYPES = Object.keys(STEPS);

/** The configuration version this package writes for a node type. */
export function currentVersion(type: string): number {
  const steps = STEPS[type];
  return steps && steps.length ? steps[steps.length - 1].to : 0;
}

export interface Migration {
  /** The configuration in the current shape (the one given, unchanged, when it is newer than this package). */
  config: Config;
  /** The version it was saved with: 0 for a flow from before versions. */
  from: number;
  /** The version this package knows. */
  current: number;
  /** What is wrong with the stored version, when anything is: `newer` (saved by a later package), `invalid` (not a version). */
  problem?: 'newer' | 'invalid';
}

/**
 * Brings a node's configuration to the current version. A version newer
 * than this package knows is left as it is (the node does what it can
 * with the fields it knows); one that is not a whole number from 0 is read
 * as 0, the oldest, whose steps only add what is missing.
 */
export function migrate(type: string, config: Config): Migration {
  const current = currentVersion(type);
  const stored = config.configVersion;
  let from = 0;
  let problem: Migration['problem'];
  if (stored !== undefined && stored !== '') {
    const n = typeof stored === 'number' ? stored : typeof stored === 'string' && /^\s*\d+\s*$/.test(stored) ? Number(stored) : NaN;
    if (Number.isInteger(n) && n >= 0) from = n;
    else problem = 'invalid';
  }
  if (from > current) return { config, from, current, problem: 'newer' };
  let out: Config = { ...config };
  for (const step of STEPS[type] ?? []) if (step.to > from) out = step.up(out);
  out.configVersion = current;
  return { config: out, from, current, ...(problem ? { problem } : {}) };
}

/**
 * In the editor's oneditsave: the version to store, the current one, or the
 * stored one where it is newer (a dialog saved in an older editor does not
 * hide that a newer package wrote the node).
 */
export function savedVersion(type: string, node: Config): number {
  const { from, current, problem } = migrate(type, node);
  return problem === 'newer' ? from : current;
}

/** The part of jQuery the editor helper uses. */
interface EditorInput {
  length: number;
  is(selector: string): boolean;
  prop(name: string, value: unknown): unknown;
  val(value: unknown): unknown;
}

/**
 * In the editor's oneditprepare: shows the migrated values in the dialog's
 * inputs (`#<prefix>-<field>`) where they differ from what the node holds,
 * so that saving the dialog stores the current shape. Returns the fields
 * shown changed.
 */
export function showInEditor(type: string, node: Config, prefix: string, $: (selector: string) => EditorInput): string[] {
  const { config, problem } = migrate(type, node);
  if (problem === 'newer') return [];
  const changed: string[] = [];
  for (const [field, value] of Object.entries(config)) {
    if (field === 'configVersion' || node[field] === value) continue;
    const input = $(`#${prefix}-${field}`);
    if (!input.length || typeof value === 'object') continue; // lists are drawn by the node's own code, from the node
    if (input.is(':checkbox')) input.prop('checked', value === true);
    else input.val(value);
    changed.push(field);
  }
  return changed;
}
