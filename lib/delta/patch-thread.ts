/**
 * Computes a patch on a worker thread, so that the process (a Node-RED
 * runtime with other flows) keeps answering while it runs: computePatch
 * takes about 0.5 s of CPU per MB of image, all of it synchronous.
 *
 * The same module is the worker's script: run as a worker, it computes the
 * patch of the two images it was given and posts it back.
 */
import { isMainThread, parentPort, Worker, workerData } from 'node:worker_threads';
import { computePatch } from './diff';

/** Below this many bytes of new image a patch is computed in place: a thread's start costs about as much. */
export const THREAD_FROM = 256 * 1024;

interface Job {
  old: Uint8Array;
  nw: Uint8Array;
}

/** The patch that rebuilds `newImage` from `oldImage` (computePatch), computed off the main thread for large images. */
export function computePatchOffThread(oldImage: Uint8Array, newImage: Uint8Array): Promise<Buffer> {
  if (newImage.length < THREAD_FROM) return Promise.resolve(computePatch(oldImage, newImage));
  return new Promise((resolve, reject) => {
    // The images are copied to the thread (structured clone): the caller keeps its own.
    const worker = new Worker(__filename, { workerData: { old: oldImage, nw: newImage } satisfies Job });
    let done = false;
    worker.once('message', (patch: Uint8Array) => {
      done = true;
      resolve(Buffer.from(patch.buffer, patch.byteOffset, patch.byteLength));
    });
    worker.once('error', (err) => {
      done = true;
      reject(err);
    });
    worker.once('exit', (code) => {
      if (!done) reject(new Error(`the patch thread stopped (exit code ${code}) before it answered`));
    });
  });
}

if (!isMainThread && parentPort && (workerData as Partial<Job> | null)?.nw) {
  const { old, nw } = workerData as Job;
  const patch = computePatch(old, nw);
  // The patch is a view of a larger buffer: send its bytes only, and move them rather than copy.
  const out = new Uint8Array(patch.length);
  out.set(patch);
  parentPort.postMessage(out, [out.buffer]);
}
