/**
 * Message properties more than one node reads, checked the same way: a
 * value of the wrong type is an error that says what was given, never
 * silently taken for "not set" (a msg.device of 7 must not update the
 * configured device instead).
 */
import { hasSecretForm, hideSecretForms } from '../../lib/client/target';
import { BleOtaError } from '../../lib/errors';
import type { NodeMessage } from './red';

/**
 * A value as an error message shows it: a string quoted (cut short), a
 * number or boolean with its JavaScript type (`number 7`), else the type
 * alone (`object`, `array`).
 */
export function describeValue(value: unknown): string {
  if (typeof value === 'string') {
    const text = hideSecretForms(value); // a fleet secret put in the wrong property is not repeated
    return `"${text.length > 70 ? `${text.slice(0, 70)}…` : text}"`;
  }
  if (typeof value === 'number' || typeof value === 'boolean') return `${typeof value} ${String(value)}`;
  return Array.isArray(value) ? 'array' : value === null ? 'null' : typeof value;
}

/** The node's words for a msg.device it refuses. */
export interface DeviceOverrideTexts {
  /** A value that is no string, as describeValue shows it. */
  notString(value: string): string;
  /** A text of a fleet secret's form or with a key's PEM text (hasSecretForm), which the message must not repeat. */
  secretForm: string;
}

/**
 * msg.device: the name, address or Bluetooth id of the device the message
 * names instead of the configured one; undefined when it names none
 * (absent, null, or blank). Anything but a string is an INVALID_ARGUMENT
 * error whose message is `texts.notString(describeValue(value))`; a text of
 * a fleet secret's form or holding a key's PEM text (hasSecretForm) one whose
 * message is `texts.secretForm`, before the text reaches anything that shows
 * the device (status, events, logs).
 */
export function deviceOverride(msg: NodeMessage, texts: DeviceOverrideTexts): string | undefined {
  const value = (msg as { device?: unknown }).device;
  if (value === undefined || value === null) return undefined;
  if (typeof value !== 'string') throw new BleOtaError('INVALID_ARGUMENT', texts.notString(describeValue(value)));
  if (hasSecretForm(value)) throw new BleOtaError('INVALID_ARGUMENT', texts.secretForm);
  return value.trim() || undefined;
}
