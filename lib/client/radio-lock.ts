/**
 * One update at a time per noble instance. noble drives one radio: two
 * updates at once would scan and connect over each other (one stops the
 * other's scan, two connection attempts to one device leave a connection
 * nobody owns), so a second update waits for the first, in the order they
 * were asked for, whichever client of that noble instance asked.
 *
 * Not re-entrant: an update that started another on the same noble
 * instance and waited for it would wait forever (nothing in the client
 * does). The Node-RED nodes' per-radio line (nodes/shared/adapter.ts) runs
 * one update at a time already; this lock, taken inside it, never waits
 * there.
 */
import { CancelledError } from '../errors';

/** Per noble instance: settles once the last update asked for has ended. */
const tails = new WeakMap<object, Promise<void>>();

/**
 * Waits until the updates asked for before on this noble instance have
 * ended; resolves with the release to call when this one ends. Aborting
 * `signal` while it waits rejects with CancelledError, and the updates
 * after it no longer wait for it.
 */
export function acquireRadio(noble: object, signal: AbortSignal | undefined): Promise<() => void> {
  if (signal?.aborted) return Promise.reject(new CancelledError());
  const before = tails.get(noble) ?? Promise.resolve();
  let release!: () => void;
  const ended = new Promise<void>((resolve) => (release = resolve));
  const tail = before.then(() => ended);
  tails.set(noble, tail);
  // The last one out leaves no chain behind.
  void tail.then(() => tails.get(noble) === tail && tails.delete(noble));
  return new Promise((resolve, reject) => {
    const onAbort = () => {
      release(); // its turn, when it comes, passes at once
      reject(new CancelledError());
    };
    signal?.addEventListener('abort', onAbort, { once: true });
    void before.then(() => {
      if (signal?.aborted) return;
      signal?.removeEventListener('abort', onAbort);
      resolve(release);
    });
  });
}
