/**
 * The OTA events ble-ota-status passes on: which states it reports, and
 * the view its Mustache templates (payload and topic) are rendered from:
 * the event itself plus convenience fields, so that
 * `{{device.name}} updated to {{image.version}} in {{durationS}} s` needs
 * no Function node. The fields are listed in the node's help.
 */
import Mustache from 'mustache';
import type { OtaEvent, OtaState } from '../shared/ota-events';

export const STATES: readonly OtaState[] = [
  'queued',
  'connecting',
  'preparing',
  'uploading',
  'verifying',
  'restarting',
  'confirming',
  'confirmed',
  'updated',
  'skipped',
  'failed',
  'cancelled',
];

/** States after which the upload node is done with that message. */
export const FINAL_STATES: readonly OtaState[] = ['confirmed', 'updated', 'skipped', 'failed', 'cancelled'];
const SUCCEEDED: readonly OtaState[] = ['confirmed', 'updated', 'skipped'];

export type Report = 'all' | 'final' | 'selected';

/** The states a node reports: every one, the final ones, or those chosen. */
export function reportedStates(report: unknown, chosen: unknown): Set<OtaState> {
  if (report === 'final') return new Set(FINAL_STATES);
  if (report === 'selected') {
    const list = Array.isArray(chosen) ? chosen : [];
    return new Set(STATES.filter((s) => list.includes(s)));
  }
  return new Set(STATES);
}

export interface EventView extends Omit<OtaEvent, 'device' | 'durationS'> {
  device: { name?: string; address?: string; label: string };
  /** Seconds since the update started, with one decimal ("12.3"). */
  durationS?: string;
  /** Transfer rate in whole KB/s with its unit ("61 KB/s"). */
  rate?: string;
  /** ISO 8601 time of the event. */
  time: string;
  final: boolean;
  succeeded: boolean;
  /** is.<state> is true for the event's state: {{#is.failed}}...{{/is.failed}}. */
  is: Partial<Record<OtaState, true>>;
  // The result's fields, at the top level too.
  protocol?: string;
  bytes?: number;
  bytesSent?: number;
  confirmed?: boolean;
  runningVersion?: string;
  previousVersion?: string;
  resumes?: number;
  skipped?: boolean;
  restarted?: boolean;
}

function defined<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined && v !== null)) as Partial<T>;
}

export function eventView(event: OtaEvent): EventView {
  const result = event.result;
  const device = { ...defined(event.device), ...(result ? defined(result.device) : {}) };
  const seconds = result ? result.durationMs / 1000 : event.durationS;
  const bytesPerSecond = event.bytesPerSecond ?? result?.bytesPerSecond;
  const percent = event.percent ?? (SUCCEEDED.includes(event.state) ? 100 : undefined);
  return {
    ...event,
    ...(result
      ? {
          protocol: result.protocol,
          bytes: result.bytes,
          bytesSent: result.bytesSent,
          confirmed: result.confirmed,
          runningVersion: result.runningVersion,
          previousVersion: result.previousVersion,
          resumes: result.resumes,
          skipped: result.skipped,
          restarted: result.restarted,
        }
      : {}),
    device: { ...device, label: device.name ?? device.address ?? '' },
    image: event.image ?? result?.image,
    percent,
    bytesPerSecond,
    // Only where data moved: a skipped update, or one the device already held, sent nothing (bytesPerSecond 0).
    rate: bytesPerSecond ? `${Math.round(bytesPerSecond / 1024)} KB/s` : undefined,
    durationS: seconds !== undefined ? seconds.toFixed(1) : undefined,
    time: new Date(event.timestamp).toISOString(),
    final: FINAL_STATES.includes(event.state),
    succeeded: SUCCEEDED.includes(event.state),
    is: { [event.state]: true },
  };
}

/** Values go in as they are: the output is a notification or a topic, not HTML. */
const RAW = { escape: (value: unknown) => String(value) };

/** Throws the parser's error when the template is not valid Mustache. */
export function checkTemplate(template: string): void {
  Mustache.parse(template);
}

export function render(template: string, view: EventView): string {
  return Mustache.render(template, view, undefined, RAW);
}
