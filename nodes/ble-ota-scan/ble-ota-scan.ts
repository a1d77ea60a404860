/**
 * ble-ota-scan: lists the OTA-capable devices in range, on input or at
 * deploy, one message per device or one list; filters by name and signal;
 * msg.stop ends a running scan early with what it found.
 */
import { discoverOtaDevices, DiscoveredDevice } from '../../lib/client/discovery';
import { BleOtaError } from '../../lib/errors';
import { sharedVirtualRadio } from '../../lib/virtual/virtual-radio';
import type { DeviceNode } from '../ble-ota-device/device-node';
import { closeWhenSettled } from '../shared/close';
import { checkConfigAtDeploy } from '../shared/deploy';
import { nodeConfig, serveMigrations } from '../shared/config';
import { translator } from '../shared/i18n';
import type { Node, NodeDef, NodeMessage, RED } from '../shared/red';
import { statusForError } from '../shared/status';

interface ScanNodeDef extends NodeDef {
  device: string;
  duration?: string | number;
  output?: 'each' | 'list';
  namePattern?: string;
  minRssi?: string | number;
  probe?: boolean;
  readVersions?: boolean;
  scanAtStart?: boolean;
}

/** Scan time: the editor's range, and what a blank field means. */
const MIN_SECONDS = 1;
const MAX_SECONDS = 120;
const DEFAULT_SECONDS = 5;

export = function register(RED: RED): void {
  const t = translator(RED, __dirname, 'ble-ota-scan');
  serveMigrations(RED);

  function BleOtaScanNode(this: Node, stored: ScanNodeDef) {
    RED.nodes.createNode(this, stored);
    const def = nodeConfig(this, stored, t);
    const node = this;
    const config = RED.nodes.getNode(def.device) as DeviceNode | null;
    const blank = (value: unknown) => value === undefined || value === null || String(value).trim() === '';
    // The editor takes 1 to 120 s and -127 to 20 dBm; a flow written by hand is checked here, at deploy.
    let durationMs = DEFAULT_SECONDS * 1000;
    if (!blank(def.duration)) {
      const n = Number(def.duration);
      const used = Number.isFinite(n) ? Math.min(Math.max(n, MIN_SECONDS), MAX_SECONDS) : DEFAULT_SECONDS;
      if (used !== n) node.warn(t('ble-ota-scan.warnings.duration', { value: String(def.duration).slice(0, 40), min: MIN_SECONDS, max: MAX_SECONDS, used }));
      durationMs = used * 1000;
    }
    let minRssi: number | undefined;
    if (!blank(def.minRssi)) {
      const n = Number(def.minRssi);
      if (Number.isFinite(n) && n >= -127 && n <= 20) minRssi = n;
      else node.warn(t('ble-ota-scan.warnings.minRssi', { value: String(def.minRssi).slice(0, 40) }));
    }
    let running: { abort: AbortController; finished: Promise<void> } | undefined;

    checkConfigAtDeploy(node, config, t('ble-ota-scan.status.noDevice'));

    async function scan(msg: NodeMessage, send: (m: NodeMessage | null) => void): Promise<void> {
      if (!config) throw new BleOtaError('INVALID_ARGUMENT', t('ble-ota-scan.errors.noDevice'));
      const problem = config.problem();
      if (problem) throw problem;
      const abort = new AbortController();
      let finish!: () => void;
      running = { abort, finished: new Promise((r) => (finish = r)) };
      node.status({ fill: 'yellow', shape: 'ring', text: t('ble-ota-scan.status.scanning') });
      try {
        // The declared virtual devices, started first: where no virtual ESP32 can run (no C
        // compiler) the scan fails saying so, rather than finding nothing.
        if (config.backend === 'virtual') await sharedVirtualRadio().startDeclared();
        const devices: DiscoveredDevice[] = await config.adapter.run(
          () =>
            discoverOtaDevices(config.adapter.client(config.timeouts), {
              durationMs,
              namePattern: def.namePattern || undefined,
              minRssi,
              probe: def.probe === true,
              readVersions: def.readVersions === true,
              signal: abort.signal,
            }),
          abort.signal,
        );
        node.status({ fill: 'green', shape: 'dot', text: t('ble-ota-scan.status.found', { count: devices.length }) });
        if (def.output === 'each') {
          // The device's name, unless the input had a topic of its own (an Inject node's default topic is empty);
          // without a name its address, or its id where the platform hides addresses (macOS).
          const topic = typeof msg.topic === 'string' && msg.topic !== '' ? msg.topic : undefined;
          for (const d of devices) send({ ...msg, topic: topic ?? d.name ?? (d.address || d.id), payload: d });
        } else {
          send({ ...msg, payload: devices });
        }
      } finally {
        running = undefined;
        finish();
      }
    }

    function report(err: unknown): Error {
      const error = err instanceof Error ? err : new Error(String(err));
      node.status(statusForError(t, 'ble-ota-scan.status.', error));
      return error;
    }

    node.on('input', (msg, send, done) => {
      // As the help says: true, not any value (a "false" from a form or a query string would stop it).
      if (msg.stop === true || msg.payload === 'stop') {
        running?.abort.abort();
        done();
        return;
      }
      if (running) {
        done(new BleOtaError('BUSY', t('ble-ota-scan.errors.busy')));
        return;
      }
      scan(msg, (m) => m && send(m)).then(
        () => done(),
        (err) => done(report(err)),
      );
    });

    if (def.scanAtStart && config) {
      // After deploy, once every node of the flow is running.
      const timer = setTimeout(() => scan({}, (m) => m && node.send(m)).catch((err) => node.error(report(err))), 100);
      node.on('close', (_removed, done) => {
        clearTimeout(timer);
        done();
      });
    }

    node.on('close', (_removed, done) => {
      const scanning = running;
      if (!scanning) return done();
      scanning.abort.abort();
      closeWhenSettled([scanning.finished], done, () => node.status({}));
    });
  }

  RED.nodes.registerType('ble-ota-scan', BleOtaScanNode);
};
