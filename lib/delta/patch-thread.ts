/**
 * Computes patches on a worker thread, so that the process (a Node-RED
 * runtime with other flows) keeps answering while one is computed:
 * computePatch takes about 0.5 s of CPU per MB of image, all of it
 * synchronous.
 *
 * One thread, started on first use and kept while patches are asked for:
 * its compiled matcher stays warm (a fresh thread compiles it again, which
 * costs about as much as a 1 MB patch). It ends after IDLE_MS without work,
 * and never keeps the process alive on its own. A patch whose update was
 * cancelled stops rather than hold up the next one for seconds.
 *
 * The same module is the worker's script: run as a worker, it computes the
 * patch of each pair of images it is sent and posts it back.
 */
import { isMainThread, parentPort, Worker } from 'node:worker_threads';
import { computePatch } from './diff';

/** Below this many bytes of new image a patch is computed in place: the round trip to the thread costs about as much. */
export const THREAD_FROM = 256 * 1024;
/** The thread ends after this long without a patch to compute. */
export const IDLE_MS = 60_000;

interface Job {
  id: number;
  old: Uint8Array;
  nw: Uint8Array;
}

type Answer = { id: number; patch: Uint8Array } | { id: number; error: string };

/** A patch asked for: on the thread (`current`), or waiting for it. */
interface Pending extends Job {
  resolve: (patch: Buffer) => void;
  reject: (err: Error) => void;
}

/**
 * What the thread did, for tests and diagnostics: threads started, jobs
 * withdrawn before they reached the thread, threads ended because the job
 * on them was abandoned.
 */
export const patchThreadCounts = { threads: 0, withdrawn: 0, terminated: 0 };

let worker: Worker | undefined;
let idle: NodeJS.Timeout | undefined;
let nextId = 0;
/**
 * The thread holds one job at a time and the others wait here, in order:
 * a job abandoned while it waits is withdrawn, and one abandoned on the
 * thread ends the thread (a synchronous computation cannot be told to
 * stop), the waiting ones going on on a fresh thread.
 */
let current: Pending | undefined;
const waiting: Pending[] = [];

function thread(): Worker {
  if (worker) return worker;
  const w = new Worker(__filename);
  patchThreadCounts.threads++;
  w.on('message', (answer: Answer) => {
    const job = current;
    // A thread ended for an abandoned job may still have posted its answer.
    if (w !== worker || !job || job.id !== answer.id) return;
    current = undefined;
    if ('error' in answer) job.reject(new Error(`computing the delta patch failed: ${answer.error}`));
    else job.resolve(Buffer.from(answer.patch.buffer, answer.patch.byteOffset, answer.patch.byteLength));
    next();
  });
  const fail = (err: Error) => {
    if (w !== worker) return; // ended on purpose
    worker = undefined;
    // A thread that failed (memory, a bug) fails every job asked of it so far.
    const failed = [...(current ? [current] : []), ...waiting.splice(0)];
    current = undefined;
    for (const job of failed) job.reject(err);
  };
  w.on('error', fail);
  w.on('exit', (code) => fail(new Error(`the delta patch thread stopped (exit code ${code})`)));
  worker = w;
  return w;
}

/** The next waiting job onto the thread; with none, the thread no longer holds the process, and ends unless used again soon. */
function next(): void {
  if (current) return;
  const job = waiting.shift();
  if (job) {
    try {
      const w = thread();
      clearTimeout(idle);
      w.ref(); // a patch under way keeps the process alive, as a computation in place would
      current = job;
      // The images are copied to the thread (structured clone): the caller keeps its own.
      w.postMessage({ id: job.id, old: job.old, nw: job.nw } satisfies Job);
    } catch (err) {
      // No thread to be had (memory, a process limit): this patch fails, as the caller's plan allows; the next one tries again.
      current = undefined;
      job.reject(err instanceof Error ? err : new Error(String(err)));
      next();
    }
    return;
  }
  if (!worker) return;
  worker.unref();
  const w = worker;
  clearTimeout(idle);
  idle = setTimeout(() => {
    if (worker === w && !current) {
      worker = undefined;
      void w.terminate();
    }
  }, IDLE_MS);
  idle.unref();
}

/** Stops an abandoned job: withdrawn if it waits, its thread ended if it is on it. */
function abandon(job: Pending, reason: Error): void {
  const at = waiting.indexOf(job);
  if (at >= 0) {
    waiting.splice(at, 1);
    patchThreadCounts.withdrawn++;
  } else if (current === job && worker) {
    const w = worker;
    worker = undefined;
    current = undefined;
    patchThreadCounts.terminated++;
    void w.terminate();
  } else {
    return; // answered already
  }
  job.reject(reason);
  next();
}

/**
 * The patch that rebuilds `newImage` from `oldImage` (computePatch),
 * computed off the main thread for large images. When `signal` aborts
 * first, the computation stops (withdrawn, or its thread ended: the next
 * patch compiles the matcher again on a fresh one) and the promise rejects
 * with the signal's reason; other callers' patches go on.
 */
export function computePatchOffThread(oldImage: Uint8Array, newImage: Uint8Array, signal?: AbortSignal): Promise<Buffer> {
  if (signal?.aborted) return Promise.reject(abortReason(signal));
  if (newImage.length < THREAD_FROM) return Promise.resolve(computePatch(oldImage, newImage));
  return new Promise((resolve, reject) => {
    const onAbort = () => abandon(job, abortReason(signal!));
    const done = () => signal?.removeEventListener('abort', onAbort);
    const job: Pending = {
      id: nextId++,
      old: oldImage,
      nw: newImage,
      resolve: (patch) => (done(), resolve(patch)),
      reject: (err) => (done(), reject(err)),
    };
    signal?.addEventListener('abort', onAbort, { once: true });
    waiting.push(job);
    next();
  });
}

function abortReason(signal: AbortSignal): Error {
  return signal.reason instanceof Error ? signal.reason : new Error('the delta patch was abandoned');
}

if (!isMainThread && parentPort) {
  const port = parentPort;
  port.on('message', ({ id, old, nw }: Job) => {
    try {
      const patch = computePatch(old, nw);
      // The patch is a view of a larger buffer: send its bytes only, and move them rather than copy.
      const out = new Uint8Array(patch.length);
      out.set(patch);
      port.postMessage({ id, patch: out } satisfies Answer, [out.buffer]);
    } catch (err) {
      port.postMessage({ id, error: (err as Error).message } satisfies Answer);
    }
  });
}
