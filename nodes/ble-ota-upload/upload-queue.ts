/**
 * The upload node's line of updates: one runs at a time, at most `limit`
 * wait behind it, a cancel drops the waiting ones and aborts the running
 * one, and close waits for the running one to end. Knows nothing of
 * Node-RED or the radio: what a job does is the `run` function's.
 */

/** What the queue needs of a job: a way to abort it. */
export interface Abortable {
  readonly abort: AbortController;
}

/** What became of a job handed to the queue. */
export type Admission = 'started' | 'queued' | 'full';

export class UploadQueue<J extends Abortable> {
  private readonly waiting: J[] = [];
  private running: { job: J; finished: Promise<void> } | undefined;

  /**
   * run: does a job and reports its outcome itself (a rejection is a bug,
   * passed to onUnexpected, and the line goes on).
   * limit: how many jobs may wait while one runs.
   */
  constructor(
    private readonly run: (job: J) => Promise<void>,
    readonly limit: number,
    private readonly onUnexpected: (err: unknown, job: J) => void = () => undefined,
  ) {}

  /** The job running now. */
  get current(): J | undefined {
    return this.running?.job;
  }

  /** How many jobs wait behind the running one. */
  get length(): number {
    return this.waiting.length;
  }

  /** Whether a job added now would be refused: one runs and `limit` wait. */
  get full(): boolean {
    return this.running !== undefined && this.waiting.length >= this.limit;
  }

  /** Starts the job, or lines it up behind the running one; 'full' (and nothing done) when `limit` wait already. */
  add(job: J): Admission {
    if (this.full) return 'full';
    this.waiting.push(job);
    if (this.running) return 'queued';
    void this.drain();
    return 'started';
  }

  /** Drops every waiting job (each passed to `dropped`, oldest first) and aborts the running one. */
  cancelAll(dropped: (job: J) => void): void {
    for (const job of this.waiting.splice(0)) dropped(job);
    this.running?.job.abort.abort();
  }

  /** cancelAll, then resolves once the running job has ended (at once when none runs). */
  close(dropped: (job: J) => void): Promise<void> {
    this.cancelAll(dropped);
    return this.running?.finished ?? Promise.resolve();
  }

  private async drain(): Promise<void> {
    let job: J | undefined;
    while ((job = this.waiting.shift())) {
      let finish!: () => void;
      this.running = { job, finished: new Promise((resolve) => (finish = resolve)) };
      try {
        await this.run(job);
      } catch (err) {
        this.onUnexpected(err, job);
      } finally {
        this.running = undefined;
        finish();
      }
    }
  }
}
