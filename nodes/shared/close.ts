/**
 * Closing a node (redeploy, stop, removal) always finishes: the node's
 * work is cancelled first, then close waits for it to let go of the radio,
 * but no longer than CLOSE_TIMEOUT_MS. Node-RED itself gives up on a close
 * after 15 s (settings.js nodeCloseTimeout) and logs "Close timed out".
 */

/**
 * How long a close waits for cancelled work. A cancelled update tells the
 * device to discard what it received and drops the link: a few GATT round
 * trips, well within this on any link the client keeps.
 */
export const CLOSE_TIMEOUT_MS = 5000;

/**
 * Calls `cleanup` then `done` once every promise in `pending` has settled,
 * or after CLOSE_TIMEOUT_MS, whichever comes first; exactly once.
 */
export function closeWhenSettled(pending: Iterable<Promise<unknown>>, done: () => void, cleanup: () => void = () => undefined): void {
  let finished = false;
  const finish = (): void => {
    if (finished) return;
    finished = true;
    clearTimeout(timer);
    cleanup();
    done();
  };
  const timer = setTimeout(finish, CLOSE_TIMEOUT_MS);
  void Promise.allSettled([...pending]).then(finish);
}
