/**
 * The OTA client: finds a device, connects, uploads an image and reports the
 * result. Usable without Node-RED:
 *
 *   const client = new BleOtaClient();              // the system's Bluetooth
 *   const result = await client.update({
 *     target: { name: 'esp32' },
 *     image: fs.readFileSync('build/app.bin'),
 *     onProgress: (p) => console.log(p.phase, p.percent),
 *   });
 *
 * Pass `noble` to use other bindings (the virtual ESP32's, for instance).
 * The protocol is chosen from the device: v2 when it has OTA Info, the
 * seed's otherwise (docs/PROTOCOL.md).
 */
import { inspect } from 'node:util';
import { BleOtaError, CancelledError, DeviceError, ImageError, ProtocolError } from '../errors';
import { EspImage, imageSummary } from '../image/esp-image';
import { validateImage } from '../image/validate';
import { loadSystemNoble } from '../noble-loader';
import {
  DEVICE_ID_LEN,
  DEVICE_INFORMATION_UUID,
  Feature,
  FIRMWARE_REVISION_UUID,
  nobleUuid,
  OTA_COMMAND_UUID,
  OTA_CONTROL_UUID,
  OTA_DATA_UUID,
  OTA_INFO_UUID,
  OTA_SERVICE_UUID,
  OTA_STREAM_UUID,
} from '../protocol/constants';
import { verifyImageSignature } from '../image/signature';
import { OtaConnection } from './connection';
import { checkBaseImage, storeInstalled } from './delivery';
import { formatDeviceId, parseDeviceId, parseSecret } from './session';
import { Link } from './link';
import type { NobleConnectParameters, NobleLike, NoblePeripheral } from './noble-types';
import { findPeripheral, scanDevices, SeenDevice, Target } from './scanner';
import { acquireRadio } from './radio-lock';
import { checkTarget, hideSecretForms } from './target';
import { DEFAULT_TIMEOUTS, Phase, Progress, Timeouts, UpdateOptions, UpdateResult, BleOtaClientOptions } from './types';
import { backoff, reportedLink, updateV2, V2Result } from './v2-update';
import type { AuthPolicy } from './v2-session';

export { OtaConnection } from './connection';
export { DEFAULT_TIMEOUTS } from './types';
export type { BleOtaClientOptions, ConfirmMode, DeviceInfo, Phase, Progress, Timeouts, UpdateOptions, UpdateResult } from './types';
export type { Delivery, FullReason } from './delivery';
export { ImageCache, defaultCacheDir } from './image-cache';

/** What `connect` takes besides the target. */
interface ConnectOptions {
  signal?: AbortSignal;
  timeouts?: Partial<Timeouts>;
  onProgress?: (p: Progress) => void;
  secret?: Buffer | string;
  allowUnauthenticated?: boolean;
  /** The device id the device must have (see UpdateOptions.deviceId). */
  deviceId?: Buffer | string;
  /**
   * With a secret: refuse a device that cannot prove itself, even with
   * allowUnauthenticated. Default: when a device id is asked for.
   */
  requireSession?: boolean;
}

interface ConnectSettings {
  timeouts: Timeouts;
  policy: AuthPolicy;
  progress: (phase: Phase) => void;
}

/**
 * A connection that failed before anything was sent: the link lost, an
 * operation nothing answered, a connection or discovery the stack reported
 * failed. Not a device without the OTA service, nor one that is not found.
 */
function lostBeforeAnything(err: unknown): boolean {
  return err instanceof BleOtaError && (err.code === 'DISCONNECTED' || err.code === 'GATT_TIMEOUT' || err.code === 'CONNECT_FAILED');
}

export class BleOtaClient {
  private readonly nobleSource: NobleLike | (() => NobleLike);
  readonly timeouts: Timeouts;

  constructor(options: BleOtaClientOptions = {}) {
    this.nobleSource = options.noble ?? loadSystemNoble;
    this.timeouts = withTimeouts(DEFAULT_TIMEOUTS, options.timeouts);
  }

  /** The noble instance; throws BluetoothUnavailableError when there is none. */
  get noble(): NobleLike {
    return typeof this.nobleSource === 'function' ? this.nobleSource() : this.nobleSource;
  }

  /** Lists the devices in range: advertised name, address, RSSI, and whether they advertise the OTA service. */
  scan(durationMs = 5000, signal?: AbortSignal): Promise<SeenDevice[]> {
    if (typeof durationMs !== 'number' || !Number.isFinite(durationMs) || durationMs < 1 || durationMs > MAX_TIMER_MS) {
      return Promise.reject(
        new BleOtaError('INVALID_ARGUMENT', `a scan lasts a number of milliseconds from 1 to ${MAX_TIMER_MS}, not ${hideSecretForms(String(durationMs)).slice(0, 40)}`),
      );
    }
    try {
      checkSignal(signal, "scan()'s signal");
    } catch (err) {
      return Promise.reject(err);
    }
    return scanDevices(this.noble, durationMs, signal);
  }

  /** Scans for the target and connects to its OTA service. */
  async connect(target: Target, options: ConnectOptions = {}): Promise<OtaConnection> {
    checkTarget(target);
    checkSignal(options.signal, 'options.signal');
    const settings = this.connectSettings(options);
    settings.progress('scanning');
    try {
      const peripheral = await findPeripheral(this.noble, target, settings.timeouts.scanMs, options.signal);
      return await this.open(peripheral, settings, options.signal);
    } catch (err) {
      // A connection is no update (an update's own reconnections say so in their result).
      if (err instanceof BleOtaError && err.code === 'CANCELLED') throw new CancelledError('the connection was cancelled before it was made');
      throw err;
    }
  }

  /** The timeouts and the policy of a connection; a malformed secret or device id fails here, before any radio work. */
  private connectSettings(options: ConnectOptions): ConnectSettings {
    return connectSettings(this.timeouts, options);
  }

  /** Connects to a peripheral found, and to its OTA service. */
  private async open(peripheral: NoblePeripheral, { timeouts, policy, progress }: ConnectSettings, signal: AbortSignal | undefined): Promise<OtaConnection> {
    progress('connecting');
    const link = new Link(peripheral, timeouts.gattMs, signal);
    try {
      await link.connect(CONNECT_PARAMETERS, timeouts.connectMs);
      const services = await link.discoverServices([nobleUuid(OTA_SERVICE_UUID), DEVICE_INFORMATION_UUID]);
      const ota = services.find((s) => s.uuid === nobleUuid(OTA_SERVICE_UUID));
      if (!ota) {
        throw new DeviceError(
          'NOT_OTA_DEVICE',
          `${link.describe()} has no OTA service (${OTA_SERVICE_UUID}); flash firmware with BLE OTA support over USB first (see firmware/README.md)`,
        );
      }
      const chars = await link.discoverCharacteristics(ota);
      const find = (uuid: string) => chars.find((c) => c.uuid === nobleUuid(uuid));
      const control = find(OTA_CONTROL_UUID);
      const data = find(OTA_DATA_UUID);
      if (!control || !data) {
        throw new DeviceError('NOT_OTA_DEVICE', `${link.describe()} has an OTA service without the Control and Data characteristics`);
      }
      const info = find(OTA_INFO_UUID);
      const command = find(OTA_COMMAND_UUID);
      const stream = find(OTA_STREAM_UUID);
      const v2 = info && command && stream ? { info, command, stream } : undefined;
      const dis = services.find((s) => s.uuid === DEVICE_INFORMATION_UUID);
      const revision = dis ? (await link.discoverCharacteristics(dis)).find((c) => c.uuid === FIRMWARE_REVISION_UUID) : undefined;
      // noble sets the MTU once the exchange completes, which its HCI bindings
      // do before discovery; a device that never exchanged keeps the default 23.
      const mtu = peripheral.mtu ?? 23;
      return new OtaConnection(link, mtu, { control, data }, v2, revision, timeouts, policy);
    } catch (err) {
      await link.close();
      throw err;
    }
  }

  /**
   * An update's first connection. Nothing is sent before it is made, so a
   * link lost or an operation nothing answered while it is being made (the
   * device going down for the restart an earlier call asked for, a
   * discovery cut short) ends no update: it connects again to the device
   * found, backing off, within resumeAttempts, as after any later lost link.
   */
  private async connectForUpdate(options: UpdateOptions, timeouts: Timeouts, settings: ConnectSettings): Promise<{ connection: OtaConnection; retries: number }> {
    settings.progress('scanning');
    const peripheral = await findPeripheral(this.noble, options.target, timeouts.scanMs, options.signal);
    const attempts = options.resumeAttempts ?? 3;
    for (let retries = 0; ; retries++) {
      try {
        return { connection: await this.open(peripheral, settings, options.signal), retries };
      } catch (err) {
        if (!lostBeforeAnything(err) || retries >= attempts || options.signal?.aborted) throw nothingSent(err);
        await backoff(retries, options.signal);
      }
    }
  }

  /**
   * Validates the image, finds the device, uploads, and waits for the device
   * to run the new image (v2: and confirms it, unless `confirm: 'device'`).
   * One update at a time per noble instance: a call made while another runs
   * waits for it (radio-lock.ts).
   */
  async update(callerOptions: UpdateOptions): Promise<UpdateResult> {
    const options: UpdateOptions = { ...callerOptions, onProgress: harmlessProgress(callerOptions.onProgress) };
    const { parsed, timeouts, settings } = prepareUpdate(options, this.timeouts);
    const release = await acquireRadio(this.noble, options.signal);
    let outcome: { result: UpdateResult; installed?: V2Result };
    try {
      outcome = await this.updateHoldingRadio(options, parsed, timeouts, settings);
    } finally {
      release();
    }
    // With the link closed and the radio free: a slow cache folder holds up neither the device nor the next update.
    if (options.cache && outcome.installed) {
      const cache = await storeInstalled(options.cache, options.image, outcome.installed);
      if (cache) outcome.result.cache = cache;
    }
    return outcome.result;
  }

  private async updateHoldingRadio(
    options: UpdateOptions,
    parsed: EspImage,
    timeouts: Timeouts,
    settings: ConnectSettings,
  ): Promise<{ result: UpdateResult; installed?: V2Result }> {
    const started = Date.now();
    const { connection, retries } = await this.connectForUpdate(options, timeouts, settings);
    const device = { name: connection.peripheral.advertisement?.localName, address: connection.peripheral.address };
    const useV2 = connection.v2 && options.protocol !== 'seed';
    try {
      if (!useV2 && connection.policy.deviceId) {
        throw new DeviceError(
          'WRONG_DEVICE',
          `${connection.link.describe()} would be updated with the seed protocol, which names no device id: it cannot be told to be device ${formatDeviceId(connection.policy.deviceId)}. Nothing was sent.`,
        );
      }
      if (!useV2 && connection.policy.secret && !connection.policy.allowUnauthenticated) {
        throw new DeviceError(
          'DEVICE_NOT_AUTHENTICATED',
          `${connection.link.describe()} would be updated with the seed protocol, which has no authentication: it cannot prove it is your device. Nothing was sent. Allow unauthenticated devices to update it anyway.`,
        );
      }
      if (!useV2 && connection.v2 && ((await connection.v2.readInfo()).features & Feature.SEED) === 0) {
        throw new ProtocolError(
          'REQUEST_REFUSED',
          `${connection.link.describe()} does not serve the seed protocol (its firmware leaves it off, as it has no authentication); update it with protocol v2`,
        );
      }
      if (useV2) {
        // The same device, by noble's id: its address may be hidden (macOS), and its name is not its own.
        const again: Target = { id: connection.peripheral.id, name: connection.peripheral.advertisement?.localName };
        const reconnect = (policy: { deviceId: Buffer | undefined; requireSession: boolean }) =>
          this.connect(again, { signal: options.signal, timeouts, secret: options.secret, allowUnauthenticated: options.allowUnauthenticated, ...policy });
        const r = await updateV2(connection, parsed, options, timeouts, reconnect, retries);
        return { result: this.result(options, parsed, { ...device, ...(r.deviceId ? { id: formatDeviceId(r.deviceId) } : {}) }, r, started), installed: r };
      }
      const stats = await connection.uploadSeed(options.image, options.onProgress ?? (() => undefined));
      const result: UpdateResult = {
        device,
        image: imageSummary(parsed),
        protocol: 'seed',
        mtu: connection.mtu,
        packetSize: stats.packetSize,
        packets: stats.packets,
        bytes: options.image.length,
        bytesSent: options.image.length,
        durationMs: Date.now() - started,
        bytesPerSecond: rate(options.image.length, stats.transferMs),
        link: { mtu: connection.mtu }, // the seed protocol has no OTA Info
        restarted: stats.restarted,
        confirmed: false,
        resumes: retries,
        skipped: false,
        authenticated: false,
        // The seed protocol sends every byte as it is, once: no patch, by the caller's choice or the device's.
        delivery: {
          method: 'full',
          reason: options.protocol === 'seed' || options.delta === false || options.compress === false ? 'delta-off' : 'device-no-delta',
          imageBytes: options.image.length,
          bytesOverAir: options.image.length,
        },
      };
      return { result };
    } catch (err) {
      const typed = err instanceof BleOtaError ? err : new DeviceError('TRANSFER_FAILED', `the update failed: ${describeThrown(err)}`, { cause: err });
      // A refusal before the seed protocol's first request (v2's failures, and the seed upload's, say what the device runs).
      if (!typed.device && typed.code !== 'CANCELLED' && !useV2) typed.withDevice({ runs: 'old' }, 'The device runs what it ran before.');
      throw typed;
    } finally {
      // Dropping the link makes the device abort (seed) or suspend (v2) an unfinished transfer.
      await connection.close();
    }
  }

  private result(options: UpdateOptions, parsed: EspImage, device: UpdateResult['device'], r: V2Result, started: number): UpdateResult {
    return {
      device,
      image: imageSummary(parsed),
      protocol: 'v2',
      mtu: r.mtu,
      packetSize: r.packetSize,
      packets: r.packets,
      bytes: options.image.length,
      bytesSent: r.imageBytesSent,
      durationMs: Date.now() - started,
      bytesPerSecond: rate(r.imageBytesSent, r.transferMs),
      link: reportedLink(r.link, r.mtu),
      restarted: r.restarted,
      confirmed: r.confirmed,
      runningVersion: r.runningVersion,
      resumes: r.resumes,
      skipped: r.skipped,
      previousVersion: r.previousVersion,
      authenticated: r.authenticated,
      delivery: r.delivery,
    };
  }
}

/**
 * What the client asks for when it connects (noble's HCI bindings only):
 * the firmware's transfer parameters from the start (7.5-15 ms, latency 0),
 * and a supervision timeout of 5 s where noble's default, 420 ms, is shorter
 * than a 64 KB flash block erase at its datasheet maximum (2 s). The
 * firmware asks for the same once a transfer begins (ble_ota_link.c).
 */
const CONNECT_PARAMETERS: NobleConnectParameters = { minInterval: 6, maxInterval: 12, latency: 0, timeout: 500 };

/**
 * requireSignature: the image must be signed with the public key given,
 * checked before anything touches the radio.
 */
function checkSignature(image: Buffer, parsed: EspImage, publicKey: string | undefined): void {
  if (!publicKey) {
    throw new BleOtaError(
      'INVALID_ARGUMENT',
      'A signed image is required, but no public key to check it with was given. Set the signing public key (esp32-ble-ota pubkey prints it from your signing key).',
    );
  }
  if (parsed.signature === undefined) {
    throw new ImageError(
      'IMAGE_NOT_SIGNED',
      'This image carries no signature, and this update requires one. Build it with signing on (CONFIG_SECURE_BOOT_BUILD_SIGNED_BINARIES) or sign it: esp32-ble-ota sign --key KEY.pem --out signed.bin app.bin. Nothing was sent.',
    );
  }
  const check = verifyImageSignature(image, parsed.imageLength, { publicKeyPem: publicKey });
  if (!check.ok) {
    throw new ImageError('IMAGE_SIGNATURE_INVALID', `${check.message} Nothing was sent.`);
  }
}

/** Bytes per second over a transfer; 0 when nothing was sent (no rate to tell). */
function rate(bytes: number, ms: number): number {
  if (bytes === 0) return 0;
  return Math.round(bytes / Math.max(ms / 1000, 0.001));
}

/**
 * The caller's progress callback, made harmless: an exception it throws (a
 * closed node's send, a bug) must not end an update half way, leaving the
 * device to roll back. The update goes on; the first such exception is
 * emitted as a process warning.
 */
function harmlessProgress(onProgress: UpdateOptions['onProgress']): UpdateOptions['onProgress'] {
  if (typeof onProgress !== 'function') return onProgress; // none, or no function: refused by checkUpdateOptions
  let warned = false;
  return (progress) => {
    try {
      onProgress(progress);
    } catch (err) {
      if (warned) return;
      warned = true;
      process.emitWarning(`the update's onProgress callback threw, and the update went on: ${describeThrown(err)}`, 'BleOtaWarning');
    }
  };
}

/** A failure on the update's first connection, before any request: it says so, as later failures say what the device runs. */
function nothingSent(err: unknown): unknown {
  if (!(err instanceof BleOtaError) || err.device || err.code === 'CANCELLED') return err;
  return err.withNothingSent();
}

/** The longest delay setTimeout keeps: a longer one fires at once. */
const MAX_TIMER_MS = 2 ** 31 - 1;

/**
 * Timeouts given over the defaults: one left undefined keeps its default,
 * one that no timer can keep (not a number, under 1 ms, over about 24.8
 * days) is refused before any radio work, instead of firing at once.
 */
export function withTimeouts(defaults: Timeouts, given: Partial<Timeouts> | undefined): Timeouts {
  const timeouts = { ...defaults };
  if (given === undefined) return timeouts;
  if (typeof given !== 'object' || given === null || Array.isArray(given)) {
    throw new BleOtaError('INVALID_ARGUMENT', `timeouts must be an object of milliseconds, e.g. { scanMs: 30000 }, not ${Array.isArray(given) ? 'an array' : typeof given}`);
  }
  for (const [name, value] of Object.entries(given) as Array<[string, unknown]>) {
    if (value === undefined) continue;
    if (!Object.hasOwn(defaults, name)) {
      throw new BleOtaError('INVALID_ARGUMENT', `timeouts.${hideSecretForms(name).slice(0, 40)} is no timeout: they are ${Object.keys(defaults).join(', ')}`);
    }
    if (typeof value !== 'number' || !Number.isFinite(value) || value < 1 || value > MAX_TIMER_MS) {
      const text = typeof value === 'string' ? hideSecretForms(value) : '';
      const shown = typeof value === 'string' ? `"${text.slice(0, 40)}"${text.length > 40 ? '...' : ''}` : typeof value === 'number' ? String(value) : `a ${typeof value}`;
      throw new BleOtaError('INVALID_ARGUMENT', `timeouts.${name} must be a number of milliseconds from 1 to ${MAX_TIMER_MS}, not ${shown}`);
    }
    timeouts[name as keyof Timeouts] = value;
  }
  return timeouts;
}

/** The timeouts and the policy of a connection; a malformed secret or device id fails here, before any radio work. */
function connectSettings(clientTimeouts: Timeouts, options: ConnectOptions): ConnectSettings {
  const timeouts = withTimeouts(clientTimeouts, options.timeouts);
  const deviceId =
    options.deviceId === undefined || options.deviceId === '' ? undefined : Buffer.isBuffer(options.deviceId) ? deviceIdBytes(options.deviceId) : parseDeviceId(options.deviceId);
  const policy: AuthPolicy = {
    secret: options.secret === undefined || options.secret === '' ? undefined : parseSecret(options.secret),
    allowUnauthenticated: options.allowUnauthenticated === true,
    deviceId,
    // With a secret, an id asked for must be proven: claiming one costs nothing.
    requireSession: options.requireSession ?? deviceId !== undefined,
  };
  const progress = (phase: Phase) => options.onProgress?.({ phase, bytesSent: 0, totalBytes: 0, percent: 0, bytesPerSecond: 0 });
  return { timeouts, policy, progress };
}

/**
 * Everything an update checks before it uses the radio: the target (a
 * fleet secret's form names no device), the image (and its signature, with
 * requireSignature), the base image, the timeouts, the secret and the
 * device id. Malformed input fails here, as update() would fail, before
 * any radio work and before any wait.
 */
function prepareUpdate(options: UpdateOptions, clientTimeouts: Timeouts): { parsed: EspImage; timeouts: Timeouts; settings: ConnectSettings } {
  checkTarget(options.target);
  checkUpdateOptions(options);
  const parsed = validateImage(options.image);
  if (options.requireSignature) checkSignature(options.image, parsed, options.publicKey);
  checkBaseImage(options.baseImage);
  const timeouts = withTimeouts(clientTimeouts, options.timeouts);
  return { parsed, timeouts, settings: connectSettings(clientTimeouts, { ...options, timeouts }) };
}

/** The most reconnections resumeAttempts may ask for: each backs off, so more would keep a lost device's update going for hours. */
const MAX_RESUME_ATTEMPTS = 100;

/** A value as an error shows it: short, a secret's form hidden. */
function shownValue(value: unknown): string {
  if (typeof value === 'string') return `"${hideSecretForms(value).slice(0, 40)}"`;
  if (typeof value === 'number' || typeof value === 'boolean' || value === null) return String(value);
  if (value === undefined) return 'undefined';
  return Array.isArray(value) ? 'an array' : typeof value === 'object' ? 'an object' : `a ${typeof value}`;
}

/**
 * The options a program in plain JavaScript may get wrong, where a wrong one
 * would be taken silently for another meaning (confirm: 'maybe' as 'client',
 * the string 'false' as true) or fail half way: a signal that is no
 * AbortSignal used to fail after the radio was taken, and hold up every
 * later update on it for good.
 */
function checkUpdateOptions(options: UpdateOptions): void {
  const refuse = (message: string) => {
    throw new BleOtaError('INVALID_ARGUMENT', message);
  };
  const given = options as unknown as Record<string, unknown>;
  if (given.confirm !== undefined && given.confirm !== 'client' && given.confirm !== 'device') {
    refuse(`options.confirm must be 'client' (this client confirms the new image) or 'device' (the device confirms it after its self-test), not ${shownValue(given.confirm)}`);
  }
  if (given.protocol !== undefined && given.protocol !== 'auto' && given.protocol !== 'seed') {
    refuse(`options.protocol must be 'auto' (protocol v2 where the device offers it) or 'seed', not ${shownValue(given.protocol)}`);
  }
  const attempts = given.resumeAttempts;
  if (attempts !== undefined && (typeof attempts !== 'number' || !Number.isInteger(attempts) || attempts < 0 || attempts > MAX_RESUME_ATTEMPTS)) {
    refuse(`options.resumeAttempts must be a whole number of reconnections from 0 to ${MAX_RESUME_ATTEMPTS}, not ${shownValue(attempts)}`);
  }
  for (const name of ['skipIfRunning', 'allowDowngrade', 'compress', 'delta', 'requireSignature', 'allowUnauthenticated']) {
    if (given[name] !== undefined && typeof given[name] !== 'boolean') refuse(`options.${name} must be true or false, not ${shownValue(given[name])}`);
  }
  if (given.publicKey !== undefined && typeof given.publicKey !== 'string') refuse(`options.publicKey must be the PEM text of a public key, not ${shownValue(given.publicKey)}`);
  checkSignal(given.signal, 'options.signal');
  if (given.onProgress !== undefined && typeof given.onProgress !== 'function') refuse(`options.onProgress must be a function, not ${shownValue(given.onProgress)}`);
  const cache = given.cache as { lookup?: unknown; put?: unknown } | undefined;
  if (cache !== undefined && (typeof cache !== 'object' || cache === null || typeof cache.lookup !== 'function' || typeof cache.put !== 'function')) {
    refuse(`options.cache must be an ImageCache (new ImageCache({ dir })), not ${shownValue(cache)}`);
  }
}

/** A signal that is no AbortSignal would fail half way (an update's after the radio was taken): refused first. */
function checkSignal(value: unknown, name: string): void {
  const signal = value as { aborted?: unknown; addEventListener?: unknown } | undefined;
  if (signal !== undefined && (typeof signal !== 'object' || signal === null || typeof signal.aborted !== 'boolean' || typeof signal.addEventListener !== 'function')) {
    throw new BleOtaError('INVALID_ARGUMENT', `${name} must be an AbortSignal (an AbortController's signal), not ${shownValue(signal)}`);
  }
}

/**
 * What update() checks before it uses the radio, for a caller that opens
 * the radio itself (the command line): throws the error update() would.
 */
export function checkUpdate(options: UpdateOptions, clientTimeouts: Timeouts = DEFAULT_TIMEOUTS): void {
  prepareUpdate(options, clientTimeouts);
}

/** A device id given as bytes: six of them (its factory MAC), else refused without repeating them (they may be a secret). */
function deviceIdBytes(id: Buffer): Buffer {
  if (id.length !== DEVICE_ID_LEN) {
    throw new BleOtaError('INVALID_ARGUMENT', `A device id is ${DEVICE_ID_LEN} bytes (the chip's factory MAC), not ${id.length}; the bytes given are not repeated here.`);
  }
  return id;
}

/** What was thrown, in words, whatever it is (String() itself throws for an object without a prototype). */
function describeThrown(err: unknown): string {
  try {
    return String(err);
  } catch {
    return inspect(err, { depth: 1 });
  }
}
