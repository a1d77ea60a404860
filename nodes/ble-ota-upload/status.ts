/**
 * Node status for each step of an update: yellow ring while connecting,
 * blue dot while busy, green dot when done (a failure's red ring is
 * shared/status.ts's statusForError, with this node's texts).
 */
import type { Progress, UpdateResult } from '../../lib/client/ota-client';
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
  // A rate only where data moved: none before the first bytes, nor when the device already held them.
  const withRate = key === 'uploading' && p.bytesPerSecond > 0 ? 'uploadingRate' : key;
  return { fill, shape, text: t(S + withRate, { percent: p.percent, rate: Math.round(p.bytesPerSecond / 1024) }) };
}

/** secretUnused: a fleet secret is set but the device proved nothing (a warning, yellow). */
export function statusForResult(t: Translate, result: UpdateResult, secretUnused = false): NodeStatus {
  const version = result.image.version;
  const key = result.skipped ? 'skipped' : result.confirmed ? 'confirmed' : 'updated';
  if (secretUnused) return { fill: 'yellow', shape: result.skipped ? 'ring' : 'dot', text: t(S + 'notAuthenticated', { status: t(S + key, { version }) }) };
  return { fill: 'green', shape: result.skipped ? 'ring' : 'dot', text: t(S + key, { version }) };
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

  /** now: the clock (a test's own, to count without racing a real one). */
  constructor(
    private readonly intervalMs: number,
    private readonly now: () => number = Date.now,
  ) {}

  accept(p: Progress): boolean {
    const now = this.now();
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
