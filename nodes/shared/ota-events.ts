/**
 * OTA state changes of every upload node, for ble-ota-status nodes to
 * listen to (as Node-RED's Status and Catch nodes listen to other nodes).
 */
import { EventEmitter } from 'node:events';
import type { UpdateResult } from '../../lib/client/ota-client';
import type { EspImageSummary } from '../../lib/image/esp-image';

export type OtaState =
  'queued' | 'connecting' | 'preparing' | 'uploading' | 'verifying' | 'restarting' | 'confirming' | 'confirmed' | 'updated' | 'skipped' | 'failed' | 'cancelled';

export interface OtaEvent {
  /** The upload node the event comes from. */
  source: { id: string; type: string; name: string };
  state: OtaState;
  /** The target as asked for (name or address), and the address once known. */
  device: { name?: string; address?: string };
  image?: EspImageSummary;
  percent?: number;
  bytesPerSecond?: number;
  /** Set on failed / cancelled. */
  error?: { code: string; message: string };
  result?: UpdateResult;
  /** Seconds since the update started. */
  durationS?: number;
  timestamp: number;
}

class OtaEventBus extends EventEmitter {
  publish(event: OtaEvent): void {
    this.emit('event', event);
  }
}

/** Process-wide: every flow's upload and status nodes meet here. */
export const otaEvents = new OtaEventBus();
otaEvents.setMaxListeners(0); // one listener per status node, however many there are
