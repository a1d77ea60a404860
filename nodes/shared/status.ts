/**
 * Status shared by the nodes that use the radio: what an error shows, and
 * a filter that keeps an unchanged status from being sent again.
 */
import { BleOtaError, BluetoothUnavailableError } from '../../lib/errors';
import type { Translate } from './i18n';
import type { NodeStatus } from './red';

/**
 * A red ring naming what went wrong, in the node's own words:
 * `<prefix>codes.<CODE>` where the node has a text for that code, else
 * `<prefix>invalidImage` for an image error (where the node has that text),
 * else `<prefix>failed`. A radio that cannot be used shows its reason
 * ("Bluetooth off"), the same in every node.
 *
 * prefix: the node's status keys (its name, then `.status.`).
 */
export function statusForError(t: Translate, prefix: string, err: unknown): NodeStatus {
  if (err instanceof BluetoothUnavailableError) return { fill: 'red', shape: 'ring', text: err.reason };
  const code = err instanceof BleOtaError ? err.code : '';
  const text = (code && known(t, `${prefix}codes.${code}`)) || (code.startsWith('IMAGE_') && known(t, `${prefix}invalidImage`)) || t(`${prefix}failed`);
  return { fill: 'red', shape: 'ring', text };
}

/** The text of a key, or undefined where the catalogue has none (the translator then gives the key back). */
function known(t: Translate, key: string): string | undefined {
  const text = t(key);
  return text === key ? undefined : text;
}

/** Passes a status unless it is the one shown already. */
export class StatusFilter {
  private last: string | undefined;

  accept(status: NodeStatus): boolean {
    const key = JSON.stringify([status.fill, status.shape, status.text]);
    if (key === this.last) return false;
    this.last = key;
    return true;
  }
}
