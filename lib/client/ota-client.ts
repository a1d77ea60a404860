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
 */
import { BleOtaError, DeviceError } from '../errors';
import { EspImageSummary, imageSummary } from '../image/esp-image';
import { validateImage } from '../image/validate';
import { loadSystemNoble } from '../noble-loader';
import {
  DEVICE_INFORMATION_UUID,
  FIRMWARE_REVISION_UUID,
  OTA_CONTROL_UUID,
  OTA_DATA_UUID,
  OTA_SERVICE_UUID,
  nobleUuid,
} from '../protocol/constants';
import { Link } from './link';
import type { NobleCharacteristic, NobleLike, NoblePeripheral } from './noble-types';
import { findPeripheral, scanDevices, SeenDevice, Target } from './scanner';
import { seedUpload, UploadProgress } from './seed-upload';

export interface Timeouts {
  /** Scanning for the device. */
  scanMs: number;
  /** Establishing the connection. */
  connectMs: number;
  /** Any single GATT operation (discovery, read, write, subscribe). */
  gattMs: number;
  /** The device's validation of the whole image after DONE. */
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

export type Phase = 'scanning' | 'connecting' | UploadProgress['phase'];

export interface Progress extends Omit<UploadProgress, 'phase'> {
  phase: Phase;
}

export interface UpdateOptions {
  target: Target;
  /** The app image (.bin), as built by ESP-IDF. */
  image: Buffer;
  onProgress?: (progress: Progress) => void;
  /** Aborting cancels the update; the device discards what it received. */
  signal?: AbortSignal;
  timeouts?: Partial<Timeouts>;
}

export interface UpdateResult {
  device: { name: string | undefined; address: string };
  image: EspImageSummary;
  protocol: 'seed';
  mtu: number;
  packetSize: number;
  packets: number;
  bytes: number;
  /** From the start of the connection to the device's restart. */
  durationMs: number;
  /** Firmware bytes per second during the transfer. */
  bytesPerSecond: number;
  /** Whether the device restarted into the new image (it dropped the link). */
  restarted: boolean;
}

export interface DeviceInfo {
  name: string | undefined;
  address: string;
  rssi: number;
  mtu: number;
  /** Device Information's firmware revision, when the device has one (ours do, the seed's do not). */
  firmwareRevision: string | undefined;
}

export interface BleOtaClientOptions {
  /** A noble instance, or a function returning one; default: the system's. */
  noble?: NobleLike | (() => NobleLike);
  timeouts?: Partial<Timeouts>;
}

/** An open connection to a device's OTA service. */
export class OtaConnection {
  constructor(
    readonly link: Link,
    readonly mtu: number,
    private readonly chars: { control: NobleCharacteristic; data: NobleCharacteristic },
    private readonly firmwareRevision: NobleCharacteristic | undefined,
    private readonly timeouts: Timeouts,
  ) {}

  get peripheral(): NoblePeripheral {
    return this.link.peripheral;
  }

  async info(): Promise<DeviceInfo> {
    const p = this.peripheral;
    const revision = this.firmwareRevision
      ? (await this.link.read(this.firmwareRevision, 'the firmware revision')).toString('utf8').replace(/\0+$/, '')
      : undefined;
    return { name: p.advertisement?.localName, address: p.address, rssi: p.rssi, mtu: this.mtu, firmwareRevision: revision };
  }

  upload(image: Buffer, onProgress: (p: UploadProgress) => void = () => undefined) {
    const { gattMs, verifyMs, restartMs } = this.timeouts;
    return seedUpload(this.link, this.chars, this.mtu, image, { requestMs: gattMs, verifyMs, restartMs }, onProgress);
  }

  close(): Promise<void> {
    return this.link.close();
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
  async connect(target: Target, options: { signal?: AbortSignal; timeouts?: Partial<Timeouts>; onProgress?: (p: Progress) => void } = {}): Promise<OtaConnection> {
    const timeouts = { ...this.timeouts, ...options.timeouts };
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
      const control = chars.find((c) => c.uuid === nobleUuid(OTA_CONTROL_UUID));
      const data = chars.find((c) => c.uuid === nobleUuid(OTA_DATA_UUID));
      if (!control || !data) {
        throw new DeviceError('NOT_OTA_DEVICE', `${link.describe()} has an OTA service without the Control and Data characteristics`);
      }
      const dis = services.find((s) => s.uuid === DEVICE_INFORMATION_UUID);
      const revision = dis ? (await link.discoverCharacteristics(dis)).find((c) => c.uuid === FIRMWARE_REVISION_UUID) : undefined;
      // noble sets the MTU once the exchange completes, which its HCI bindings
      // do before discovery; a device that never exchanged keeps the default 23.
      const mtu = peripheral.mtu ?? 23;
      return new OtaConnection(link, mtu, { control, data }, revision, timeouts);
    } catch (err) {
      await link.close();
      throw err;
    }
  }

  /** Validates the image, then finds the device, uploads and waits for its restart. */
  async update(options: UpdateOptions): Promise<UpdateResult> {
    const parsed = validateImage(options.image);
    const started = Date.now();
    const onProgress = options.onProgress ?? (() => undefined);
    const connection = await this.connect(options.target, options);
    try {
      const device = connection.peripheral;
      const stats = await connection.upload(options.image, onProgress);
      return {
        device: { name: device.advertisement?.localName, address: device.address },
        image: imageSummary(parsed),
        protocol: 'seed',
        mtu: connection.mtu,
        packetSize: stats.packetSize,
        packets: stats.packets,
        bytes: options.image.length,
        durationMs: Date.now() - started,
        bytesPerSecond: Math.round(options.image.length / Math.max(stats.transferMs / 1000, 0.001)),
        restarted: stats.restarted,
      };
    } catch (err) {
      throw err instanceof BleOtaError ? err : new DeviceError('TRANSFER_FAILED', `the update failed: ${String(err)}`, { cause: err });
    } finally {
      // Dropping the link makes the device abort an unfinished transfer.
      await connection.close();
    }
  }
}
