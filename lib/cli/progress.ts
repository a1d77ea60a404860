/**
 * The upload's progress: on a terminal one line redrawn in place with \r
 * (phase, bar, percent, rate); anywhere else (a pipe, a CI log) plain lines,
 * one per phase and one per tenth of the image, so logs stay short and
 * readable.
 */
import type { Phase, Progress } from '../client/ota-client';
import { formatRate } from './output';

export interface ProgressStream {
  /** Text; bytes only where a command writes a file to standard output (sample-image --out -). */
  write(data: string | Uint8Array): unknown;
  isTTY?: boolean;
  columns?: number;
}

const PHASE_TEXT: Record<Phase, string> = {
  scanning: 'looking for the device',
  connecting: 'connecting',
  preparing: 'preparing',
  uploading: 'uploading',
  resuming: 'link lost, resuming',
  verifying: 'verifying',
  restarting: 'restarting',
  confirming: 'confirming',
};

/**
 * Phases that carry a meaningful percentage and rate ('resuming' reports 0 %
 * until the device says where to continue).
 */
const TRANSFER_PHASES: ReadonlySet<Phase> = new Set<Phase>(['uploading']);

/** A terminal redraw this often at most: faster only costs CPU and flicker. */
const REDRAW_MS = 100;

export class ProgressReporter {
  private readonly tty: boolean;
  private lastPhase: Phase | undefined;
  private lastTenth = -1;
  private lastDraw = 0;
  /** Something is drawn on the terminal line: a newline is due before other output. */
  private drawn = false;

  constructor(
    private readonly stream: ProgressStream,
    private readonly now: () => number = Date.now,
  ) {
    this.tty = stream.isTTY === true;
  }

  update(p: Progress): void {
    if (this.tty) this.draw(p);
    else this.line(p);
    this.lastPhase = p.phase;
  }

  /** Ends the progress display so that what follows starts on its own line. */
  finish(): void {
    if (this.tty && this.drawn) this.stream.write('\n');
    this.drawn = false;
  }

  private line(p: Progress): void {
    const tenth = Math.floor(p.percent / 10);
    if (p.phase !== this.lastPhase) {
      this.lastTenth = TRANSFER_PHASES.has(p.phase) ? tenth : -1;
      this.stream.write(describe(p) + '\n');
    } else if (TRANSFER_PHASES.has(p.phase) && tenth > this.lastTenth) {
      this.lastTenth = tenth;
      this.stream.write(describe(p) + '\n');
    }
  }

  private draw(p: Progress): void {
    const t = this.now();
    const changed = p.phase !== this.lastPhase || p.percent === 100;
    if (!changed && t - this.lastDraw < REDRAW_MS) return;
    this.lastDraw = t;
    // A pseudo-terminal without a size reports 0 columns.
    const width = this.stream.columns || 80;
    let text: string;
    if (TRANSFER_PHASES.has(p.phase)) {
      const label = PHASE_TEXT[p.phase].padEnd(10);
      // Fixed width, so the bar does not jump as the rate gains a digit.
      const tail = ` ${String(p.percent).padStart(3)} %  ${formatRate(p.bytesPerSecond).padStart(12)}`;
      const barWidth = Math.max(10, Math.min(40, width - label.length - tail.length - 4));
      const full = Math.round((barWidth * p.percent) / 100);
      text = `${label} [${'#'.repeat(full)}${'.'.repeat(barWidth - full)}]${tail}`;
    } else {
      text = describe(p);
    }
    // \x1b[K clears what a longer previous line left to the right.
    this.stream.write(`\r${text.slice(0, width - 1)}\x1b[K`);
    this.drawn = true;
  }
}

function describe(p: Progress): string {
  const text = PHASE_TEXT[p.phase];
  return TRANSFER_PHASES.has(p.phase) ? `${text} ${p.percent} % ${formatRate(p.bytesPerSecond)}` : text;
}
