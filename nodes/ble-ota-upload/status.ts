/**
 * Node status for each step of an update: yellow ring while connecting,
 * blue dot while busy, green dot when done, red ring on failure.
 */
import type { Progress, UpdateResult } from '../../lib/client/ota-client';
import { BleOtaError, BluetoothUnavailableError } from '../../lib/errors';
import type { NodeStatus } from '../shared/red';

export function statusForProgress(p: Progress): NodeStatus {
  switch (p.phase) {
    case 'scanning':
      return { fill: 'yellow', shape: 'ring', text: 'scanning' };
    case 'connecting':
      return { fill: 'yellow', shape: 'ring', text: 'connecting' };
    case 'preparing':
      return { fill: 'blue', shape: 'dot', text: 'starting update' };
    case 'uploading':
      return { fill: 'blue', shape: 'dot', text: `uploading ${p.percent} % ${Math.round(p.bytesPerSecond / 1024)} KB/s` };
    case 'verifying':
      return { fill: 'blue', shape: 'dot', text: 'verifying' };
    case 'restarting':
      return { fill: 'blue', shape: 'dot', text: 'restarting' };
    case 'resuming':
      return { fill: 'yellow', shape: 'ring', text: 'reconnecting' };
    case 'confirming':
      return { fill: 'blue', shape: 'dot', text: 'confirming' };
  }
}

export function statusForResult(result: UpdateResult): NodeStatus {
  if (result.skipped) return { fill: 'green', shape: 'ring', text: `already ${result.image.version}` };
  const word = result.confirmed ? 'confirmed' : 'updated';
  return { fill: 'green', shape: 'dot', text: `${word} ${result.image.version}` };
}

const SHORT: Partial<Record<string, string>> = {
  BLUETOOTH_UNAVAILABLE: 'Bluetooth unavailable',
  DEVICE_NOT_FOUND: 'device not found',
  NOT_OTA_DEVICE: 'no OTA service',
  GATT_TIMEOUT: 'no answer',
  DISCONNECTED: 'connection lost',
  REQUEST_REFUSED: 'update refused',
  DEVICE_REJECTED_IMAGE: 'image rejected',
  TRANSFER_FAILED: 'transfer failed',
  CANCELLED: 'cancelled',
  ROLLED_BACK: 'rolled back',
  CONFIRM_FAILED: 'not confirmed',
  PROTOCOL_ERROR: 'refused',
  IMAGE_TOO_LARGE: 'image too large',
  IMAGE_WRONG_CHIP: 'wrong chip',
  DOWNGRADE_REFUSED: 'downgrade refused',
  BUSY: 'queue full',
};

export function statusForError(err: Error): NodeStatus {
  if (err instanceof BluetoothUnavailableError) return { fill: 'red', shape: 'ring', text: err.reason };
  const code = err instanceof BleOtaError ? err.code : '';
  const text = SHORT[code] ?? (code.startsWith('IMAGE_') ? 'invalid image' : 'failed');
  return { fill: 'red', shape: 'ring', text };
}

/**
 * Decides which progress reports leave the progress output: every change of
 * phase, and whole-percent changes at most every `intervalMs`, with the
 * last one (100 %) always.
 */
export class ProgressThrottle {
  private phase: string | undefined;
  private percent = -1;
  private at = 0;

  constructor(private readonly intervalMs: number) {}

  accept(p: Progress): boolean {
    const now = Date.now();
    const phaseChanged = p.phase !== this.phase;
    const percentChanged = p.percent !== this.percent;
    const due = percentChanged && (now - this.at >= this.intervalMs || p.percent === 100);
    if (!phaseChanged && !due) return false;
    this.phase = p.phase;
    this.percent = p.percent;
    this.at = now;
    return true;
  }
}
