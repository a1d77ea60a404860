/**
 * An open connection to a device's OTA service: the link, the negotiated
 * MTU, the seed protocol's characteristics and, where the device speaks it,
 * protocol v2 (docs/PROTOCOL.md).
 */
import { DeviceError } from '../errors';
import { Command, Feature } from '../protocol/constants';
import type { DeviceInfoV2 } from '../protocol/v2-codec';
import { CommandRefused, refusalError } from './refusal';
import { formatDeviceId, hideKey } from './session';
import type { Link } from './link';
import type { NobleCharacteristic, NoblePeripheral } from './noble-types';
import { knownRssi } from './scanner';
import { seedUpload, UploadProgress } from './seed-upload';
import type { DeviceInfo, Timeouts } from './types';
import { AuthPolicy, V2Session } from './v2-session';

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
    // The policy is public, and a connection may be logged or put in a message:
    // its secret prints as a placeholder (parseSecret marks it already; this
    // covers a policy built without it).
    if (policy.secret) hideKey(policy.secret, 'fleet secret');
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
    const revision = this.firmwareRevision ? (await this.link.read(this.firmwareRevision, 'the firmware revision')).toString('utf8').replace(/\0+$/, '') : undefined;
    // Proven where the device can prove it; as read where the policy allows that.
    let proven: { info: DeviceInfoV2; authenticated: boolean } | undefined;
    if (this.v2) {
      const info = await this.v2.readInfo();
      const canProve = this.policy.secret !== undefined && ((info.features & Feature.AUTH) !== 0 || this.policy.requireSession === true);
      proven = canProve ? await typed(this.v2.provenInfo(this.timeouts.gattMs)) : { info, authenticated: false };
    }
    return {
      name: p.advertisement?.localName,
      address: p.address,
      rssi: knownRssi(p.rssi),
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
    await typed(this.v2.command(Command.CONFIRM, this.timeouts.gattMs));
  }

  async close(): Promise<void> {
    this.v2?.dispose();
    await this.link.close();
  }
}

/** A device's refusal as the client's typed error (no untyped error leaves the public API). */
async function typed<T>(work: Promise<T>): Promise<T> {
  try {
    return await work;
  } catch (err) {
    throw err instanceof CommandRefused ? refusalError(err, 0) : err;
  }
}
