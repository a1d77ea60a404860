/**
 * Node status for each step of an update: yellow ring while connecting,
 * blue dot while busy, green dot when done, red ring on failure.
 */
import type { Progress, UpdateResult } from '../../lib/client/ota-client';
import { BleOtaError, BluetoothUnavailableError } from '../../lib/errors';
import type { Translate } from '../shared/i18n';
import type { NodeStatus } from '../shared/red';

const S = 'ble-ota-upload.status.';

const PHASES: Record<Progress['phase'], [NodeStatus['fill'], NodeStatus['shape'], string]> = {
  scanning: ['yellow', 'ring', 'scanning'],
  connecting: ['yellow', 'ring', 'connecting'],
  resuming: ['yellow', 'ring', 'reconnecting'],
  preparing: ['blue', 'dot', 'starting'],
  uploading: ['blue', 'dot', 'uploading'],
  verifying: ['blue', 'dot', 'verifying'],
  restarting: ['blue', 'dot', 'restarting'],
  confirming: ['blue', 'dot', 'confirming'],
};

export function statusForProgress(t: Translate, p: Progress): NodeStatus {
  const [fill, shape, key] = PHASES[p.phase];
  return { fill, shape, text: t(S + key, { percent: p.percent, rate: Math.round(p.bytesPerSecond / 1024) }) };
}

export function statusForResult(t: Translate, result: UpdateResult): NodeStatus {
  const version = result.image.version;
  if (result.skipped) return { fill: 'green', shape: 'ring', text: t(S + 'skipped', { version }) };
  return { fill: 'green', shape: 'dot', text: t(S + (result.confirmed ? 'confirmed' : 'updated'), { version }) };
}

export function statusForError(t: Translate, err: Error): NodeStatus {
  if (err instanceof BluetoothUnavailableError) return { fill: 'red', shape: 'ring', text: err.reason };
  const code = err instanceof BleOtaError ? err.code : '';
  const known = t(`${S}codes.${code}`);
  const text = code && known !== `${S}codes.${code}` ? known : t(S + (code.startsWith('IMAGE_') ? 'invalidImage' : 'failed'));
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
