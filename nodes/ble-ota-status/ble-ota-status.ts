/**
 * ble-ota-status: two roles.
 *
 * - On input, connects to the configured device (or msg.device) through the
 *   radio's line and reports its firmware information as msg.payload.
 * - Like Node-RED's Status and Catch nodes, it listens to the OTA events of
 *   all or selected ble-ota-upload nodes and sends one message per event,
 *   msg.payload optionally rendered by a Mustache template.
 *
 * Errors of an information request go to Catch nodes through done(err);
 * closing removes the event listener and cancels what is still running.
 */
import { deviceInfoView, type DeviceInfoView } from '../../lib/device-info';
import { sameTarget } from '../../lib/client/target';
import { BleOtaError } from '../../lib/errors';
import type { DeviceNode } from '../ble-ota-device/device-node';
import { closeWhenSettled } from '../shared/close';
import { checkConfigAtDeploy } from '../shared/deploy';
import { nodeConfig, serveMigrations } from '../shared/config';
import { translator } from '../shared/i18n';
import { deviceOverride } from '../shared/message';
import { OtaEvent, otaEvents } from '../shared/ota-events';
import type { Node, NodeDef, NodeMessage, RED } from '../shared/red';
import { statusForError } from '../shared/status';
import { statusForInfo } from './device-info';
import { checkTemplate, eventView, render, Report, reportedStates } from './event-view';

interface StatusNodeDef extends NodeDef {
  /** A ble-ota-device config node, for information requests; optional. */
  device?: string;
  /** Whose events to report: every upload node, those in `uploads`, or none. */
  scope?: 'all' | 'selected' | 'none';
  uploads?: string[];
  /** Which states to report: all, the final ones, or those in `states`. */
  report?: Report;
  states?: string[];
  /** Mustache template for msg.payload; empty: the event object. */
  template?: string;
  /** Mustache template for msg.topic; empty: no topic. */
  topic?: string;
}

/** Information requests that may wait for the radio at once. */
const WAITING_LIMIT = 10;

const S = 'ble-ota-status.';

function messageOf(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

export = function register(RED: RED): void {
  const t = translator(RED, __dirname, 'ble-ota-status');
  serveMigrations(RED);

  function BleOtaStatusNode(this: Node, stored: StatusNodeDef) {
    RED.nodes.createNode(this, stored);
    const def = nodeConfig(this, stored, t);
    const node = this;
    const config = def.device ? (RED.nodes.getNode(def.device) as DeviceNode | null) : null;
    const closing = new AbortController();
    const running = new Set<Promise<void>>();

    checkConfigAtDeploy(node, config, undefined); // the device node is optional: events need none

    // --- OTA events of upload nodes ------------------------------------------

    const uploads = def.scope === 'selected' ? new Set((Array.isArray(def.uploads) ? def.uploads : []).map(String)) : undefined;
    const states = reportedStates(def.report, def.states);
    const template = typeof def.template === 'string' ? def.template : '';
    const topic = typeof def.topic === 'string' ? def.topic : '';
    let listening = def.scope !== 'none';
    for (const [field, text] of listening
      ? ([
          ['template', template],
          ['topic', topic],
        ] as const)
      : []) {
      try {
        checkTemplate(text);
      } catch (err) {
        listening = false;
        node.error(t(S + 'errors.template', { field: t(S + 'label.' + field), message: messageOf(err) }));
        node.status({ fill: 'red', shape: 'ring', text: t(S + 'status.templateError') });
      }
    }

    // Called synchronously from an upload node's publish(): nothing may escape.
    const onEvent = (event: OtaEvent): void => {
      let msg: NodeMessage | undefined;
      try {
        if (uploads && !uploads.has(event.source.id)) return;
        if (!states.has(event.state)) return;
        const copy = structuredClone(event); // each message its own: flows may change it
        msg = { payload: copy, event: copy };
        if (template || topic) {
          const view = eventView(copy);
          if (template) msg.payload = render(template, view);
          if (topic) msg.topic = render(topic, view);
        }
        node.send(msg);
      } catch (err) {
        node.error(t(S + 'errors.render', { message: messageOf(err) }), msg);
      }
    };
    // An invalid template was reported at deploy; events are not sent with it.
    if (listening) otaEvents.on('event', onEvent);

    // --- information on input ------------------------------------------------

    async function readInfo(device: DeviceNode, override: string | undefined): Promise<DeviceInfoView> {
      const signal = closing.signal;
      return device.adapter.run(async () => {
        const { client, target } = await device.prepare(override);
        // The configured device id belongs to the configured device, not to one msg.device names.
        const deviceId = override === undefined || sameTarget(override, device.device) ? device.deviceId : undefined;
        const connection = await client.connect(target, { signal, secret: device.secret, allowUnauthenticated: device.allowUnauthenticated, deviceId });
        try {
          return deviceInfoView(await connection.info());
        } catch (err) {
          if (err instanceof BleOtaError) throw err;
          throw new BleOtaError('PROTOCOL_ERROR', t(S + 'errors.unreadable', { message: messageOf(err) }), { cause: err });
        } finally {
          await connection.close();
        }
      }, signal);
    }

    node.on('input', (msg, send, done) => {
      if (!config) {
        node.status({ fill: 'red', shape: 'ring', text: t(S + 'status.noDevice') });
        done(new BleOtaError('INVALID_ARGUMENT', t(S + 'errors.noDevice')));
        return;
      }
      if (running.size >= WAITING_LIMIT) {
        done(new BleOtaError('BUSY', t(S + 'errors.busy', { limit: WAITING_LIMIT })));
        return;
      }
      let override: string | undefined;
      try {
        override = deviceOverride(msg, { notString: (value) => t(S + 'errors.badDevice', { value }), secretForm: t(S + 'errors.deviceIsSecret') });
      } catch (err) {
        node.status(statusForError(t, S + 'status.', err));
        done(err as Error);
        return;
      }
      node.status({ fill: 'yellow', shape: 'ring', text: t(S + 'status.connecting') });
      const job: Promise<void> = readInfo(config, override)
        .then(
          (info) => {
            node.status(statusForInfo(t, info));
            msg.payload = info;
            send(msg);
            done();
          },
          (err: unknown) => {
            const error = err instanceof Error ? err : new Error(String(err));
            const hint = err instanceof BleOtaError && err.code === 'DEVICE_NOT_FOUND' ? config.notFoundHint(override) : undefined;
            if (hint) error.message = `${error.message} ${hint}`;
            node.status(statusForError(t, S + 'status.', error));
            done(error);
          },
        )
        .finally(() => running.delete(job));
      running.add(job);
    });

    node.on('close', (_removed, done) => {
      otaEvents.off('event', onEvent);
      closing.abort(); // requests waiting for the radio leave the line; a running one drops its link
      closeWhenSettled(running, done, () => node.status({}));
    });
  }

  RED.nodes.registerType('ble-ota-status', BleOtaStatusNode);
};
