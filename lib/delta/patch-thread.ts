/**
 * Computes patches on a worker thread, so that the process (a Node-RED
 * runtime with other flows) keeps answering while one is computed:
 * computePatch takes about 0.5 s of CPU per MB of image, all of it
 * synchronous.
 *
 * One thread, started on first use and kept while patches are asked for:
 * its compiled matcher stays warm (a fresh thread compiles it again, which
 * costs about as much as a 1 MB patch). It ends after IDLE_MS without work,
 * and never keeps the process alive on its own.
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

let worker: Worker | undefined;
let idle: NodeJS.Timeout | undefined;
let nextId = 0;
const pending = new Map<number, { resolve: (patch: Buffer) => void; reject: (err: Error) => void }>();

function thread(): Worker {
  if (worker) return worker;
  const w = new Worker(__filename);
  w.on('message', (answer: Answer) => {
    const job = pending.get(answer.id);
    if (!job) return;
    pending.delete(answer.id);
    if ('error' in answer) job.reject(new Error(`computing the delta patch failed: ${answer.error}`));
    else job.resolve(Buffer.from(answer.patch.buffer, answer.patch.byteOffset, answer.patch.byteLength));
    settle();
  });
  const fail = (err: Error) => {
    if (worker === w) worker = undefined;
    for (const job of pending.values()) job.reject(err);
    pending.clear();
  };
  w.on('error', fail);
  w.on('exit', (code) => fail(new Error(`the delta patch thread stopped (exit code ${code})`)));
  worker = w;
  return w;
}

/** Nothing pending: the thread no longer holds the process, and ends unless used again soon. */
function settle(): void {
  if (pending.size > 0 || !worker) return;
  worker.unref();
  const w = worker;
  clearTimeout(idle);
  idle = setTimeout(() => {
    if (worker === w && pending.size === 0) {
      worker = undefined;
      void w.terminate();
    }
  }, IDLE_MS);
  idle.unref();
}

/** The patch that rebuilds `newImage` from `oldImage` (computePatch), computed off the main thread for large images. */
export function computePatchOffThread(oldImage: Uint8Array, newImage: Uint8Array): Promise<Buffer> {
  if (newImage.length < THREAD_FROM) return Promise.resolve(computePatch(oldImage, newImage));
  return new Promise((resolve, reject) => {
    const w = thread();
    clearTimeout(idle);
    w.ref(); // a patch under way keeps the process alive, as a computation in place would
    const id = nextId++;
    pending.set(id, { resolve, reject });
    // The images are copied to the thread (structured clone): the caller keeps its own.
    w.postMessage({ id, old: oldImage, nw: newImage } satisfies Job);
  });
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
