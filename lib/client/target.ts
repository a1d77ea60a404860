/**
 * Which device a user means: the text of a device field, msg.device or
 * --device, read the same way by the command line, the nodes and the
 * virtual radio.
 *
 * One rule tells the three apart: six hex pairs with colons or dashes
 * between them are an address; 12 or 32 hex digits (32 also as a UUID is
 * written, 8-4-4-4-12) are noble's id of a device, as a scan reports it
 * (12 on Linux and Windows: the address without separators; 32 on macOS,
 * which hides addresses); anything else is an advertised name. An id-shaped
 * text also finds a device advertising exactly that text as its name: it
 * was read as a name before ids were taken, and such a flow keeps working.
 *
 * A text of a fleet secret's form, or holding a key's PEM text, names no
 * device: it is the secret or the key pasted into the wrong field, and is
 * refused without being repeated (a device's name is shown in errors,
 * statuses, events and logs).
 */
import { BleOtaError } from '../errors';
import { normalizeAddress, type Target } from './scanner';

/** A Bluetooth address as users write it: six hex pairs, colons or dashes between them. */
const ADDRESS = /^([0-9a-f]{2}[:-]){5}[0-9a-f]{2}$/i;

/** noble's id of a device: 12 hex digits (Linux, Windows), 32 (macOS), or those 32 as a UUID. */
const PERIPHERAL_ID = /^(?:[0-9a-f]{12}|[0-9a-f]{32}|[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})$/i;

/**
 * A fleet secret's form: 64 hex digits, as the secret file and the device
 * node's credential hold it (read trimmed), also after a 0x, as tools print
 * keys. No device advertises such a name: a legacy advertisement has room
 * for 29 bytes of one, and this package's firmware puts at most 23 there.
 */
const SECRET_FORM = /^(?:0x)?[0-9a-f]{64}$/i;

/** Why a text hasSecretForm finds is refused, in the words of the client and the command line's library use. */
export const SECRET_AS_DEVICE =
  "The device named looks like a key or a secret, not a device name (64 hex digits, a fleet secret's form, or a key's PEM text), so it is not repeated here: a device is named by its advertised name, its address or its Bluetooth id, and the fleet secret is given as the secret.";

/**
 * Whether the text (trimmed) has the form of a fleet secret, or holds a
 * key's PEM text (what hideSecretForms hides as such): refused wherever a
 * device is named.
 */
export function hasSecretForm(text: string): boolean {
  return SECRET_FORM.test(text.trim()) || hidePemText(text) !== text;
}

/**
 * A key's PEM text from its BEGIN line (a label in capitals, so not the words
 * "-----BEGIN ... KEY-----" of an error's advice) to its END line, or to the
 * end of the text when that was cut off: a signing key's, given where a path
 * or a value goes.
 */
const PEM_TEXT = /-----BEGIN [A-Z0-9][\s\S]*?(?:-----END [A-Z0-9 ]*-----|$)/g;

/**
 * `text` with every run of a fleet secret's form (64 hex digits, no more,
 * after 0x too) and every key's PEM text replaced by words that say what
 * stood there: for values an error, a warning or a status repeats.
 */
export function hideSecretForms(text: string): string {
  return hidePemText(text).replace(SECRET_RUN, SECRET_HIDDEN);
}

/** A run of a fleet secret's form within a text. */
const SECRET_RUN = /(?<![0-9a-f])(?:0x)?[0-9a-f]{64}(?![0-9a-f])/gi;
const SECRET_HIDDEN = '[64 hex digits, not repeated]';

/** `text` with every key's PEM text replaced by words that say what stood there. */
export function hidePemText(text: string): string {
  return text.replace(PEM_TEXT, '[PEM text, not repeated]');
}

/**
 * `text` with what `typed` holds of a secret's form hidden wherever it
 * appears (in a file name, a resolved path), and any PEM text: for errors
 * that repeat what a user typed beside figures of the same form (a key's
 * SHA-256), which stay.
 */
export function hideTypedSecrets(text: string, typed: readonly string[]): string {
  let shown = hidePemText(text);
  for (const word of typed) for (const run of word.match(SECRET_RUN) ?? []) shown = shown.split(run).join(SECRET_HIDDEN);
  return shown;
}

/**
 * Refuses, before any radio work (INVALID_ARGUMENT), a target that names no
 * device as meant: no object (a bare name), a field that is no text, only
 * empty fields (they would match any device), an address of another form,
 * or a text hasSecretForm finds in any field, whether or not it is matched
 * (errors show it either way; the text is not repeated).
 */
export function checkTarget(target: Target): void {
  // A program in plain JavaScript can pass anything: a bare name would read as {}, the first device with the OTA service.
  if (typeof target !== 'object' || target === null || Array.isArray(target)) {
    const given: unknown = target;
    const what = typeof given === 'string' ? `the text "${hideSecretForms(given).slice(0, 40)}"` : Array.isArray(given) ? 'an array' : String(given);
    throw new BleOtaError(
      'INVALID_ARGUMENT',
      `The target must be an object naming the device, { name }, { address } or { id } (a scan's id), or {} for the first device advertising the OTA service; not ${what}`,
    );
  }
  const fields = ['address', 'id', 'name'] as const;
  for (const field of fields) {
    const value: unknown = target[field];
    if (value !== undefined && typeof value !== 'string')
      throw new BleOtaError('INVALID_ARGUMENT', `The target's ${field} must be a string, not ${value === null ? 'null' : `a ${typeof value}`}`);
  }
  if (fields.some((field) => hasSecretForm(target[field] ?? ''))) throw new BleOtaError('INVALID_ARGUMENT', SECRET_AS_DEVICE);
  const named = fields.filter((field) => target[field] !== undefined);
  // { address: '' } (a macOS scan's address) would name no device, and so match any.
  if (named.length > 0 && named.every((field) => target[field]!.trim() === '')) {
    throw new BleOtaError(
      'INVALID_ARGUMENT',
      `The target's ${named[0]} is empty: name the device by its name, its address or its id (macOS hides addresses: give { id } from a scan), or give {} for the first device advertising the OTA service`,
    );
  }
  if (target.address && !target.id && !/^[0-9a-f]{12}$/i.test(target.address.replace(/[:-]/g, ''))) {
    throw new BleOtaError(
      'INVALID_ARGUMENT',
      `The target's address "${hideSecretForms(target.address).slice(0, 40)}" is not a Bluetooth address; write it as AA:BB:CC:DD:EE:FF, or give the name as { name }`,
    );
  }
}

/** Whether the text (trimmed) is a Bluetooth address rather than a name. */
export function isAddress(text: string): boolean {
  return ADDRESS.test(text.trim());
}

/** Whether the text (trimmed) has the form of noble's id of a device (it may still be a name: see targetOf). */
export function isPeripheralId(text: string): boolean {
  return PERIPHERAL_ID.test(text.trim());
}

/**
 * The target a device field names. Surrounding spaces are dropped (a field
 * pasted with them would otherwise name no device); an address becomes
 * noble's form (lower case, colons), and an id noble's form (lower case, no
 * dashes), so that events, logs and lookups show one spelling for one
 * device; an id also matches a device of that name, kept as typed (names
 * are case-sensitive on air); anything else is an advertised name; empty
 * text is no target: the first device that advertises the OTA service. A
 * text hasSecretForm finds is refused (INVALID_ARGUMENT, SECRET_AS_DEVICE).
 */
export function targetOf(text: string): Target {
  const value = text.trim();
  if (!value) return {};
  if (hasSecretForm(value)) throw new BleOtaError('INVALID_ARGUMENT', SECRET_AS_DEVICE);
  if (isAddress(value)) return { address: normalizeAddress(value) };
  if (isPeripheralId(value)) return { id: value.replace(/-/g, '').toLowerCase(), name: value, alsoByName: true };
  return { name: value };
}

/**
 * Whether two device fields name the same device: an address or an id
 * however written, a name exactly. An address and a 12-digit id of the same
 * digits are one device (noble's id on Linux and Windows is the address).
 */
export function sameTarget(a: string, b: string): boolean {
  const key = (t: Target) => (t.address !== undefined ? `device:${t.address.replace(/:/g, '')}` : t.id !== undefined ? `device:${t.id}` : `name:${t.name ?? ''}`);
  return key(targetOf(a)) === key(targetOf(b));
}
