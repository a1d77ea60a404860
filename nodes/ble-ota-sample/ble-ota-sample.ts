/**
 * ble-ota-sample: puts a sample ESP32 app image in msg.payload, where File
 * In would put a build's .bin, so that a flow can be tried with nothing
 * prepared: a valid image (lib/image/sample-image.ts) with the project,
 * version, chip and size set in the node, whose code is filler. Virtual
 * ESP32s install it; the upload node refuses to send it over a real radio.
 *
 * Where Node-RED's virtual devices take only images signed with a key
 * (BLE_OTA_VIRTUAL_SIGNING_KEY, as `npm start`'s demo fleet), the sample is
 * signed with that key, so that they install it too.
 */
import { createHash } from 'node:crypto';
import { BleOtaError } from '../../lib/errors';
import { hideSecretForms } from '../../lib/client/target';
import { sampleImage, SAMPLE_DEFAULTS } from '../../lib/image/sample-image';
import { readSigningKeyFile } from '../../lib/virtual/virtual-radio';
import { nodeConfig, serveMigrations } from '../shared/config';
import { translator } from '../shared/i18n';
import type { Node, NodeDef, NodeMessage, RED } from '../shared/red';

interface SampleNodeDef extends NodeDef {
  projectName?: string;
  version?: string;
  /** Where the version comes from: str (as typed), msg, flow, global or env, as Node-RED's typed inputs say. */
  versionType?: string;
  chip?: string;
  /** KiB. */
  size?: string | number;
}

/** Signed samples kept for their next request (the last versions a flow asked for). */
const SIGNED_SAMPLES_KEPT = 4;

export = function register(RED: RED): void {
  const t = translator(RED, __dirname, 'ble-ota-sample');
  serveMigrations(RED);

  function BleOtaSampleNode(this: Node, stored: SampleNodeDef) {
    RED.nodes.createNode(this, stored);
    const def = nodeConfig(this, stored, t);
    const node = this;
    const projectName = String(def.projectName ?? '').trim() || SAMPLE_DEFAULTS.projectName;
    const chip = String(def.chip ?? '').trim() || SAMPLE_DEFAULTS.chip;
    const sizeKiB = def.size === undefined || String(def.size).trim() === '' ? SAMPLE_DEFAULTS.size / 1024 : Number(def.size);
    const versionType = def.versionType || 'str';

    node.on('input', (msg, send, done) => {
      RED.util.evaluateNodeProperty(def.version ?? SAMPLE_DEFAULTS.version, versionType, node, msg, (err, value) => {
        try {
          if (err) throw err;
          const version = value === undefined || value === null || value === '' ? undefined : String(value);
          if (version === undefined) {
            // Typed in the node and left empty: no property to name.
            if (versionType === 'str') throw new BleOtaError('INVALID_ARGUMENT', t('ble-ota-sample.errors.emptyVersion'));
            throw new BleOtaError('INVALID_ARGUMENT', t('ble-ota-sample.errors.noVersion', { source: `${versionType}.${String(def.version)}` }));
          }
          if (!(sizeKiB >= 1 && sizeKiB <= 16384)) {
            // A number is repeated; anything else (text typed in a flow file) is not.
            throw new BleOtaError('INVALID_ARGUMENT', Number.isFinite(sizeKiB) ? t('ble-ota-sample.errors.sizeRange', { value: sizeKiB }) : t('ble-ota-sample.errors.size'));
          }
          const image = makeSample(projectName, version, chip, Math.round(sizeKiB * 1024), virtualSigningKey());
          node.status({});
          send({ ...msg, payload: image } as NodeMessage);
          done();
        } catch (e) {
          const error = e instanceof Error ? e : new Error(String(e));
          node.status({ fill: 'red', shape: 'ring', text: t('ble-ota-sample.status.failed') });
          done(error);
        }
      });
    });
  }

  /**
   * Signed samples made, newest last, by their settings and key. A signature
   * (ECDSA, RSA-PSS) is randomised: signing again would make another file
   * for the same settings, and a device running the first would report a
   * SHA-256 that no later copy has (on a skip, the upload node then warned
   * that the image could not be kept as the next patch's base). Unsigned
   * samples are the same bytes anyway.
   */
  const signedSamples = new Map<string, Buffer>();

  function makeSample(projectName: string, version: string, chip: string, size: number, signingKey: string | undefined): Buffer {
    if (signingKey === undefined) return sampleImage({ projectName, version, chip, size });
    const key = JSON.stringify([projectName, version, chip, size, createHash('sha256').update(signingKey).digest('hex')]);
    let image = signedSamples.get(key);
    if (image) signedSamples.delete(key);
    else image = sampleImage({ projectName, version, chip, size, signingKey });
    signedSamples.set(key, image);
    if (signedSamples.size > SIGNED_SAMPLES_KEPT) signedSamples.delete(signedSamples.keys().next().value as string);
    // A copy: a flow may change the Buffer it gets.
    return Buffer.from(image);
  }

  /** The key the virtual devices of this Node-RED check images against, if they check any. */
  function virtualSigningKey(): string | undefined {
    const file = process.env.BLE_OTA_VIRTUAL_SIGNING_KEY?.trim();
    if (!file) return undefined;
    try {
      // Never a FIFO or a device: this read is synchronous, and one would stop Node-RED.
      return readSigningKeyFile(file);
    } catch (err) {
      const reason = (err as NodeJS.ErrnoException).code ?? (err instanceof Error ? err.message : String(err));
      // The key's PEM text itself, set where its path goes, is not repeated.
      throw new BleOtaError('INVALID_ARGUMENT', hideSecretForms(t('ble-ota-sample.errors.signingKey', { file, reason })));
    }
  }

  RED.nodes.registerType('ble-ota-sample', BleOtaSampleNode);
};
