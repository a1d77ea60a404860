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
import { BleOtaError, DeviceError, ImageError, ProtocolError } from '../errors';
import { EspImage, EspImageSummary, imageSummary } from '../image/esp-image';
import { validateImage } from '../image/validate';
import { loadSystemNoble } from '../noble-loader';
import {
  Command,
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
import type { DeviceInfoV2 } from '../protocol/v2-codec';
import { verifyImageSignature } from '../image/signature';
import { formatDeviceId, parseDeviceId, parseSecret } from './session';
import { Link } from './link';
import type { NobleCharacteristic, NobleLike, NoblePeripheral } from './noble-types';
import { findPeripheral, scanDevices, SeenDevice, Target } from './scanner';
import { seedUpload, UploadProgress } from './seed-upload';
import { uploadV2, V2Result } from './v2-upload';
import { AuthPolicy, V2Session } from './v2-session';

export interface Timeouts {
  /** Scanning for the device. */
  scanMs: number;
  /** Establishing the connection. */
  connectMs: number;
  /** Any single GATT operation (discovery, read, write, subscribe), and a device's answer. */
  gattMs: number;
  /** The device's validation of the whole image after DONE / END. */
  verifyMs: number;
  /** The device's restart after a successful upload. */
  restartMs: number;
}

export const DEFAULT_TIMEOUTS: Timeouts = {
  scanMs: 15_000,
  connectMs: 10_000,
  gattMs: 5_000,
  verifyMs: 30_000,
  restartMs: 5_000,
};

export type Phase = 'scanning' | 'connecting' | UploadProgress['phase'] | 'resuming' | 'confirming';

export interface Progress extends Omit<UploadProgress, 'phase'> {
  phase: Phase;
}

/**
 * Who confirms a new image (protocol v2): the client after reconnecting to
 * the restarted device and checking its version (`client`, the default), or
 * the device itself once its self-test passed (`device`). The seed protocol
 * always leaves it to the device.
 */
export type ConfirmMode = 'client' | 'device';

export interface UpdateOptions {
  target: Target;
  /** The app image (.bin), as built by ESP-IDF. */
  image: Buffer;
  onProgress?: (progress: Progress) => void;
  /** Aborting cancels the update; the device discards what it received. */
  signal?: AbortSignal;
  timeouts?: Partial<Timeouts>;
  confirm?: ConfirmMode;
  /** Reconnections that resume a v2 transfer after a lost link (default 3). */
  resumeAttempts?: number;
  /** `seed` forces the seed protocol on a device that speaks both. */
  protocol?: 'auto' | 'seed';
  /**
   * v2: when the device already runs this build (same project, version and
   * ELF SHA-256), send nothing and resolve with `skipped: true`.
   */
  skipIfRunning?: boolean;
  /** v2: update even when the image's version is older than the running one (default true). */
  allowDowngrade?: boolean;
  /** v2: send the image deflated where the device offers it and it makes the image smaller (default true). */
  compress?: boolean;
  /**
   * Verify the image's signature against `publicKey` before any connection:
   * an unsigned image, one signed with another key and one changed after
   * signing are refused without using the radio (IMAGE_NOT_SIGNED,
   * IMAGE_SIGNATURE_INVALID). The device checks again itself.
   */
  requireSignature?: boolean;
  /** The public key (PEM) images must be signed with; needed by requireSignature. */
  publicKey?: string;
  /**
   * The owner's fleet secret (64 hex digits or 32 bytes): each device's key
   * derives from it and the device id. Never logged nor put in messages.
   */
  secret?: Buffer | string;
  /**
   * With a secret: still update devices that cannot authenticate (no AUTH
   * feature, the seed protocol). Off by default, as such a device may be
   * anyone's.
   */
  allowUnauthenticated?: boolean;
  /**
   * v2: the device id (the chip's factory MAC, "24:0a:c4:12:34:56") the
   * device must have. With a fleet secret, the device proves it: a device
   * of the same fleet cannot stand in for another one. Without it, any of
   * the owner's devices found by the target passes.
   */
  deviceId?: string;
}

export interface UpdateResult {
  /**
   * The device as found (name, address) and, in protocol v2, its device id:
   * proven when `authenticated`, as the device claims it otherwise. Every
   * connection of the update reached the device with this id.
   */
  device: { name: string | undefined; address: string; id?: string };
  image: EspImageSummary;
  protocol: 'seed' | 'v2';
  mtu: number;
  packetSize: number;
  packets: number;
  bytes: number;
  /** From the start of the connection to the end (confirmation, or restart). */
  durationMs: number;
  /** Firmware bytes per second during the transfer. */
  bytesPerSecond: number;
  /** Whether the device restarted into the new image (it dropped the link). */
  restarted: boolean;
  /** v2: the device runs the new image and it is confirmed (marked valid). */
  confirmed: boolean;
  /** v2: the version the device reported after its restart. */
  runningVersion?: string;
  /** v2: how often a lost link was resumed. */
  resumes: number;
  /** The device already ran this build: nothing was sent (skipIfRunning). */
  skipped: boolean;
  /** v2: the version the device ran before the update. */
  previousVersion?: string;
  /**
   * The device proved it holds its key (derived from the fleet secret) on
   * every answer this result rests on. False for devices without
   * authentication, which anyone could impersonate.
   */
  authenticated: boolean;
}

export interface DeviceInfo {
  name: string | undefined;
  address: string;
  rssi: number;
  mtu: number;
  protocol: 'seed' | 'v2';
  /** Device Information's firmware revision, when the device has one (ours do, the seed's do not). */
  firmwareRevision: string | undefined;
  /** Protocol v2's OTA Info. */
  ota?: DeviceInfoV2;
  /** The device proved the OTA Info above (a fleet secret was given and the device has authentication). */
  authenticated: boolean;
}

export interface BleOtaClientOptions {
  /** A noble instance, or a function returning one; default: the system's. */
  noble?: NobleLike | (() => NobleLike);
  timeouts?: Partial<Timeouts>;
}

/** An open connection to a device's OTA service. */
export class OtaConnection {
  /** Protocol v2 on this connection, when the device speaks it. */
  readonly v2: V2Session | undefined;

  constructor(
    readonly link: Link,
    readonly mtu: number,
    private readonly seedChars: { control: NobleCharacteristic; data: NobleCharacteristic },
    v2Chars: { info: NobleCharacteristic; command: NobleCharacteristic; stream: NobleCharacteristic } | undefined,
    private readonly firmwareRevision: NobleCharacteristic | undefined,
    private readonly timeouts: Timeouts,
    readonly policy: AuthPolicy = {},
  ) {
    this.v2 = v2Chars ? new V2Session(link, v2Chars, mtu, policy) : undefined;
  }

  get peripheral(): NoblePeripheral {
    return this.link.peripheral;
  }

  get protocol(): 'seed' | 'v2' {
    return this.v2 ? 'v2' : 'seed';
  }

  async info(): Promise<DeviceInfo> {
    const p = this.peripheral;
    if (!this.v2 && this.policy.deviceId) {
      throw new DeviceError(
        'WRONG_DEVICE',
        `${this.link.describe()} speaks only the seed protocol, which names no device id: it cannot be told to be device ${formatDeviceId(this.policy.deviceId)}.`,
      );
    }
    const revision = this.firmwareRevision
      ? (await this.link.read(this.firmwareRevision, 'the firmware revision')).toString('utf8').replace(/\0+$/, '')
      : undefined;
    // Proven where the device can prove it; as read where the policy allows that.
    let proven: { info: DeviceInfoV2; authenticated: boolean } | undefined;
    if (this.v2) {
      const info = await this.v2.readInfo();
      const canProve = this.policy.secret !== undefined && ((info.features & Feature.AUTH) !== 0 || this.policy.requireSession === true);
      proven = canProve ? await this.v2.provenInfo(this.timeouts.gattMs) : { info, authenticated: false };
    }
    return {
      name: p.advertisement?.localName,
      address: p.address,
      rssi: p.rssi,
      mtu: this.mtu,
      protocol: this.protocol,
      firmwareRevision: revision,
      ota: proven?.info,
      authenticated: proven?.authenticated ?? false,
    };
  }

  /** Uploads in the seed protocol (every device with the OTA service speaks it). */
  uploadSeed(image: Buffer, onProgress: (p: UploadProgress) => void = () => undefined) {
    const { gattMs, verifyMs, restartMs } = this.timeouts;
    return seedUpload(this.link, this.seedChars, this.mtu, image, { requestMs: gattMs, verifyMs, restartMs }, onProgress);
  }

  /** Sends CONFIRM: the running image, pending verify, is marked valid. */
  async confirm(): Promise<void> {
    if (!this.v2) throw new DeviceError('NOT_OTA_DEVICE', 'this device speaks only the seed protocol, which has no CONFIRM');
    await this.v2.subscribe();
    await this.v2.command(Command.CONFIRM, this.timeouts.gattMs);
  }

  async close(): Promise<void> {
    this.v2?.dispose();
    await this.link.close();
  }
}

export class BleOtaClient {
  private readonly nobleSource: NobleLike | (() => NobleLike);
  readonly timeouts: Timeouts;

  constructor(options: BleOtaClientOptions = {}) {
    this.nobleSource = options.noble ?? loadSystemNoble;
    this.timeouts = { ...DEFAULT_TIMEOUTS, ...options.timeouts };
  }

  /** The noble instance; throws BluetoothUnavailableError when there is none. */
  get noble(): NobleLike {
    return typeof this.nobleSource === 'function' ? this.nobleSource() : this.nobleSource;
  }

  /** Lists the devices in range: advertised name, address, RSSI, and whether they advertise the OTA service. */
  scan(durationMs = 5000, signal?: AbortSignal): Promise<SeenDevice[]> {
    return scanDevices(this.noble, durationMs, signal);
  }

  /** Scans for the target and connects to its OTA service. */
  async connect(
    target: Target,
    options: {
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
    } = {},
  ): Promise<OtaConnection> {
    const timeouts = { ...this.timeouts, ...options.timeouts };
    // A malformed secret or device id fails here, before any radio work.
    const deviceId =
      options.deviceId === undefined || options.deviceId === '' ? undefined : Buffer.isBuffer(options.deviceId) ? options.deviceId : parseDeviceId(options.deviceId);
    const policy: AuthPolicy = {
      secret: options.secret === undefined || options.secret === '' ? undefined : parseSecret(options.secret),
      allowUnauthenticated: options.allowUnauthenticated === true,
      deviceId,
      // With a secret, an id asked for must be proven: claiming one costs nothing.
      requireSession: options.requireSession ?? deviceId !== undefined,
    };
    const progress = (phase: Phase) =>
      options.onProgress?.({ phase, bytesSent: 0, totalBytes: 0, percent: 0, bytesPerSecond: 0 });
    progress('scanning');
    const peripheral = await findPeripheral(this.noble, target, timeouts.scanMs, options.signal);
    progress('connecting');
    const link = new Link(peripheral, timeouts.gattMs, options.signal);
    try {
      await link.run('connecting', (cb) => peripheral.connect(cb), timeouts.connectMs);
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
   * Validates the image, finds the device, uploads, and waits for the device
   * to run the new image (v2: and confirms it, unless `confirm: 'device'`).
   */
  async update(options: UpdateOptions): Promise<UpdateResult> {
    const parsed = validateImage(options.image);
    if (options.requireSignature) checkSignature(options.image, parsed, options.publicKey);
    const started = Date.now();
    const timeouts = { ...this.timeouts, ...options.timeouts };
    const connection = await this.connect(options.target, { ...options, timeouts });
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
        const r = await uploadV2(this, connection, parsed, options, timeouts);
        return this.result(options, parsed, { ...device, ...(r.deviceId ? { id: formatDeviceId(r.deviceId) } : {}) }, r, started);
      }
      const stats = await connection.uploadSeed(options.image, options.onProgress ?? (() => undefined));
      return {
        device,
        image: imageSummary(parsed),
        protocol: 'seed',
        mtu: connection.mtu,
        packetSize: stats.packetSize,
        packets: stats.packets,
        bytes: options.image.length,
        durationMs: Date.now() - started,
        bytesPerSecond: rate(options.image.length, stats.transferMs),
        restarted: stats.restarted,
        confirmed: false,
        resumes: 0,
        skipped: false,
        authenticated: false,
      };
    } catch (err) {
      throw err instanceof BleOtaError ? err : new DeviceError('TRANSFER_FAILED', `the update failed: ${String(err)}`, { cause: err });
    } finally {
      // Dropping the link makes the device abort (seed) or suspend (v2) an unfinished transfer.
      await connection.close();
    }
  }

  private result(
    options: UpdateOptions,
    parsed: EspImage,
    device: UpdateResult['device'],
    r: V2Result,
    started: number,
  ): UpdateResult {
    return {
      device,
      image: imageSummary(parsed),
      protocol: 'v2',
      mtu: r.mtu,
      packetSize: r.packetSize,
      packets: r.packets,
      bytes: options.image.length,
      durationMs: Date.now() - started,
      bytesPerSecond: rate(options.image.length, r.transferMs),
      restarted: r.restarted,
      confirmed: r.confirmed,
      runningVersion: r.runningVersion,
      resumes: r.resumes,
      skipped: r.skipped,
      previousVersion: r.previousVersion,
      authenticated: r.authenticated,
    };
  }
}

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

function rate(bytes: number, ms: number): number {
  return Math.round(bytes / Math.max(ms / 1000, 0.001));
}
