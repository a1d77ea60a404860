/**
 * Message properties more than one node reads, checked the same way: a
 * value of the wrong type is an error that says what was given, never
 * silently taken for "not set" (a msg.device of 7 must not update the
 * configured device instead).
 */
import { BleOtaError } from '../../lib/errors';
import type { NodeMessage } from './red';

/**
 * A value as an error message shows it: a string quoted (cut short), a
 * number or boolean with its JavaScript type (`number 7`), else the type
 * alone (`object`, `array`).
 */
export function describeValue(value: unknown): string {
  if (typeof value === 'string') return `"${value.length > 70 ? `${value.slice(0, 70)}…` : value}"`;
  if (typeof value === 'number' || typeof value === 'boolean') return `${typeof value} ${String(value)}`;
  return Array.isArray(value) ? 'array' : value === null ? 'null' : typeof value;
}

/**
 * msg.device: the name or address of the device the message names instead
 * of the configured one; undefined when it names none (absent, null, or
 * blank). Anything but a string is an INVALID_ARGUMENT error whose message
 * is `text(describeValue(value))`.
 */
export function deviceOverride(msg: NodeMessage, text: (value: string) => string): string | undefined {
  const value = (msg as { device?: unknown }).device;
  if (value === undefined || value === null) return undefined;
  if (typeof value !== 'string') throw new BleOtaError('INVALID_ARGUMENT', text(describeValue(value)));
  return value.trim() || undefined;
}
