/**
 * Which device a user means: the text of a device field, msg.device or
 * --device, read the same way by the command line, the nodes and the
 * virtual radio.
 */
import { normalizeAddress, type Target } from './scanner';

/** A Bluetooth address as users write it: six hex pairs, colons or dashes between them. */
const ADDRESS = /^([0-9a-f]{2}[:-]){5}[0-9a-f]{2}$/i;

/** Whether the text (trimmed) is a Bluetooth address rather than a name. */
export function isAddress(text: string): boolean {
  return ADDRESS.test(text.trim());
}

/**
 * The target a device field names. Surrounding spaces are dropped (a field
 * pasted with them would otherwise name no device); an address becomes
 * noble's form (lower case, colons), so that events, logs and lookups show
 * one spelling for one device; anything else is an advertised name, kept
 * as typed (names are case-sensitive on air); empty text is no target:
 * the first device that advertises the OTA service.
 */
export function targetOf(text: string): Target {
  const value = text.trim();
  if (!value) return {};
  return isAddress(value) ? { address: normalizeAddress(value) } : { name: value };
}

/** Whether two device fields name the same device (an address however written, a name exactly). */
export function sameTarget(a: string, b: string): boolean {
  const x = targetOf(a);
  const y = targetOf(b);
  return x.address === y.address && x.name === y.name;
}
