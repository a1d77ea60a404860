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
 */
import { normalizeAddress, type Target } from './scanner';

/** A Bluetooth address as users write it: six hex pairs, colons or dashes between them. */
const ADDRESS = /^([0-9a-f]{2}[:-]){5}[0-9a-f]{2}$/i;

/** noble's id of a device: 12 hex digits (Linux, Windows), 32 (macOS), or those 32 as a UUID. */
const PERIPHERAL_ID = /^(?:[0-9a-f]{12}|[0-9a-f]{32}|[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})$/i;

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
 * text is no target: the first device that advertises the OTA service.
 */
export function targetOf(text: string): Target {
  const value = text.trim();
  if (!value) return {};
  if (isAddress(value)) return { address: normalizeAddress(value) };
  if (isPeripheralId(value)) return { id: value.replace(/-/g, '').toLowerCase(), name: value, alsoByName: true };
  return { name: value };
}

/** Whether two device fields name the same device (an address or an id however written, a name exactly). */
export function sameTarget(a: string, b: string): boolean {
  const x = targetOf(a);
  const y = targetOf(b);
  return x.address === y.address && (x.id ?? x.name) === (y.id ?? y.name);
}
