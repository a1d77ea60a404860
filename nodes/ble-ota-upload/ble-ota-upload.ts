/**
 * ble-ota-upload: updates an ESP32 with the image in msg.payload.
 *
 * The image is validated before any connection; uploads run one at a time
 * (later messages wait in a bounded queue); progress shows in the status;
 * the result goes out as a message and failures go to Catch nodes through
 * done(err). Closing the node cancels the upload, and the device discards
 * what it received.
 */
import type { ConfirmMode, Progress, UpdateResult } from '../../lib/client/ota-client';
import { BleOtaError } from '../../lib/errors';
import { validateImage } from '../../lib/image/validate';
import type { DeviceNode } from '../ble-ota-device/device-node';
import type { Node, NodeDef, NodeDone, NodeMessage, NodeSend, RED } from '../shared/red';
import { statusForError, statusForProgress, statusForResult } from './status';

interface UploadNodeDef extends NodeDef {
  device: string;
  /** Who confirms the new image: the client after the restart, or the device itself. */
  confirm?: ConfirmMode;
}

interface Job {
  msg: NodeMessage;
  send: NodeSend;
  done: NodeDone;
}

/** Messages that may wait while an upload runs. */
const QUEUE_LIMIT = 10;

export = function register(RED: RED): void {
  function BleOtaUploadNode(this: Node, def: UploadNodeDef) {
    RED.nodes.createNode(this, def);
    const node = this;
    const config = RED.nodes.getNode(def.device) as DeviceNode | null;
    const queue: Job[] = [];
    let current: { abort: AbortController; finished: Promise<void> } | undefined;

    if (!config) {
      node.status({ fill: 'red', shape: 'ring', text: 'no device configured' });
    } else {
      const problem = config.problem();
      if (problem) {
        node.status({ fill: 'red', shape: 'ring', text: problem.reason });
        node.warn(problem.message);
      } else {
        node.status({});
      }
    }

    node.on('input', (msg, send, done) => {
      if (!config) {
        done(new BleOtaError('INVALID_ARGUMENT', 'no device is configured: open the node and choose or add a BLE OTA device'));
        return;
      }
      if (current && queue.length >= QUEUE_LIMIT) {
        done(new BleOtaError('BUSY', `${QUEUE_LIMIT} updates are already waiting; send fewer messages or wait for the running update to finish`));
        return;
      }
      queue.push({ msg, send, done });
      if (!current) void runQueue(config);
    });

    async function runQueue(config: DeviceNode): Promise<void> {
      let job: Job | undefined;
      while ((job = queue.shift())) {
        const abort = new AbortController();
        let finish!: () => void;
        current = { abort, finished: new Promise((resolve) => (finish = resolve)) };
        try {
          const result = await upload(config, job.msg, abort.signal);
          node.status(statusForResult(result));
          node.log(
            `updated ${result.device.name ?? result.device.address} to ${result.image.project} ${result.image.version} in ${(result.durationMs / 1000).toFixed(1)} s (${result.protocol}${result.confirmed ? ', confirmed' : ''})`,
          );
          job.msg.payload = result;
          job.send(job.msg);
          job.done();
        } catch (err) {
          const error = err instanceof Error ? err : new Error(String(err));
          node.status(statusForError(error));
          job.done(error);
        } finally {
          current = undefined;
          finish();
        }
      }
    }

    async function upload(config: DeviceNode, msg: NodeMessage, signal: AbortSignal): Promise<UpdateResult> {
      validateImage(msg.payload); // before anything touches the radio
      const override = typeof msg.device === 'string' && msg.device.trim() ? msg.device : undefined;
      node.status({ fill: 'yellow', shape: 'ring', text: 'connecting' });
      const { client, target } = await config.prepare(override);
      return client.update({
        target,
        image: msg.payload as Buffer,
        signal,
        confirm: def.confirm === 'device' ? 'device' : 'client',
        onProgress: (p: Progress) => node.status(statusForProgress(p)),
      });
    }

    node.on('close', (_removed, done) => {
      // Messages still waiting end with an error, the running upload is cancelled.
      for (const job of queue.splice(0)) job.done(new BleOtaError('CANCELLED', 'the node was closed before the update started'));
      const running = current;
      if (!running) return done();
      running.abort.abort();
      const timer = setTimeout(done, 5000);
      void running.finished.then(() => {
        clearTimeout(timer);
        node.status({});
        done();
      });
    });
  }

  RED.nodes.registerType('ble-ota-upload', BleOtaUploadNode);
};
