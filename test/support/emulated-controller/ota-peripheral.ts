/**
 * A BLE peripheral made of real parts: bleno's HCI, ATT and GATT code on an
 * emulated controller, serving the OTA service exactly as our firmware does
 * (the same UUIDs and properties), with every read, write and subscription
 * handled by the firmware's OTA core in a virtual ESP32.
 *
 * bleno is a process-wide singleton: one peripheral per process.
 */
import { EventEmitter } from 'node:events';
import { AttError, VirtualEsp32 } from '../../../lib/virtual/virtual-device';
import { installEmulatedHciTransport, UnixHciSocket } from './hci-transport';

/** The parts of bleno's API this module uses (bleno ships no types). */
interface BlenoCharacteristicOptions {
  uuid: string;
  properties: string[];
  onReadRequest?(offset: number, callback: (result: number, data?: Buffer) => void): void;
  onWriteRequest?(data: Buffer, offset: number, withoutResponse: boolean, callback: (result: number) => void): void;
  onSubscribe?(maxValueSize: number, updateValueCallback: (data: Buffer) => void): void;
  onUnsubscribe?(): void;
}

interface Bleno extends EventEmitter {
  state: string;
  /** bleno's HCI bindings: the connection's handle, and the transport (a UnixHciSocket here). */
  _bindings: { _handle: number | null; _hci: { _socket: UnixHciSocket } };
  address: string;
  Characteristic: new (options: BlenoCharacteristicOptions) => object;
  PrimaryService: new (options: { uuid: string; characteristics: object[] }) => object;
  setServices(services: object[], callback?: (error?: Error) => void): void;
  startAdvertising(name: string, serviceUuids: string[], callback?: (error?: Error) => void): void;
  stopAdvertising(callback?: () => void): void;
  disconnect(): void;
}

const ATT_SUCCESS = 0x00;
const ATT_INVALID_OFFSET = 0x07;
const ATT_UNLIKELY_ERROR = 0x0e;
/** HCI reason of a link the device's firmware ended without restarting. */
const REMOTE_USER_TERMINATED = 0x13;

let blenoInstance: Bleno | undefined;

function loadBleno(): Bleno {
  if (!blenoInstance) {
    installEmulatedHciTransport();
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    blenoInstance = require('@abandonware/bleno') as Bleno;
  }
  return blenoInstance;
}

export interface PeripheralOptions {
  /** Advertise the OTA service's UUID (default true); false: the name only, found by name. */
  advertiseService?: boolean;
}

const blenoUuid = (uuid: string): string => uuid.replace(/-/g, '').toLowerCase();

/**
 * Serves one virtual ESP32 over bleno. The device's own link events are
 * mirrored: when it drops the link (a restart, a power cut) the peripheral
 * disconnects and stops advertising until the device has booted again.
 */
export class OtaPeripheral extends EventEmitter {
  private central?: string;
  private connected?: Promise<unknown>;
  private mtu = 23;
  private rebooting = false;
  /** Counts links: an answer due on a link that has ended is never sent (see answer()). */
  private link = 0;
  private readonly lastRead = new Map<string, Buffer>();
  private readonly subscriptions = new Map<string, (data: Buffer) => void>();
  private readonly cleanups: Array<() => void> = [];

  private constructor(
    private readonly bleno: Bleno,
    readonly device: VirtualEsp32,
    private readonly options: PeripheralOptions,
  ) {
    super();
  }

  /** Starts serving the device and resolves once it advertises. */
  static async start(device: VirtualEsp32, options: PeripheralOptions = {}): Promise<OtaPeripheral> {
    const bleno = loadBleno();
    const peripheral = new OtaPeripheral(bleno, device, options);
    await peripheral.poweredOn();
    await peripheral.serve();
    return peripheral;
  }

  /** The controller's public address: what a central scanning finds. */
  get address(): string {
    return this.bleno.address;
  }

  /** The peripheral ends the link (an HCI Disconnect from its side). */
  dropLink(): void {
    this.bleno.disconnect();
  }

  /**
   * The peripheral's controller ends the link on its own, with this HCI
   * reason (0x08, connection timeout: a lost radio link): both hosts learn
   * it from a Disconnection Complete event, as neither asked for it.
   */
  loseLink(reason: number): void {
    const handle = this.bleno._bindings._handle;
    if (handle === null) return;
    const disconnect = Buffer.from([0x01, 0x06, 0x04, 3, handle & 0xff, handle >> 8, reason]); // HCI_Disconnect
    this.bleno._bindings._hci._socket.inject(disconnect);
  }

  async stop(): Promise<void> {
    for (const cleanup of this.cleanups.splice(0)) cleanup();
    // bleno reports the stop only from its 'stopping' state: a restart of advertising it made on
    // a disconnect that crossed this call leaves it in another, and the report never comes.
    await new Promise<void>((resolve) => {
      const timer = setTimeout(done, 2000);
      function done() {
        clearTimeout(timer);
        resolve();
      }
      this.bleno.stopAdvertising(done);
    });
    this.bleno.disconnect();
    this.bleno.setServices([]);
  }

  private poweredOn(): Promise<void> {
    if (this.bleno.state === 'poweredOn') return Promise.resolve();
    return new Promise((resolve) => {
      const onState = (state: string) => {
        if (state !== 'poweredOn') return;
        this.bleno.off('stateChange', onState);
        resolve();
      };
      this.bleno.on('stateChange', onState);
    });
  }

  private async serve(): Promise<void> {
    const services = this.device.services.map(
      (service) =>
        new this.bleno.PrimaryService({
          uuid: blenoUuid(service),
          characteristics: this.device.characteristics.filter((c) => c.service === service).map((c) => this.characteristic(c.uuid, c.properties)),
        }),
    );
    await new Promise<void>((resolve, reject) => this.bleno.setServices(services, (err) => (err ? reject(err) : resolve())));

    this.listen(this.bleno, 'accept', (address: string) => this.onAccept(address));
    this.listen(this.bleno, 'mtuChange', (mtu: number) => (this.mtu = mtu));
    this.listen(this.bleno, 'disconnect', () => this.onCentralGone());
    this.listen(this.device, 'notify', (uuid: string, data: Buffer) => this.subscriptions.get(uuid)?.(data));
    this.listen(this.device, 'disconnected', (reason: number) => this.onDeviceDropped(reason));
    this.listen(this.device, 'boot', () => this.onBooted());
    await this.advertise();
  }

  private listen(emitter: EventEmitter, event: string, listener: Parameters<EventEmitter['on']>[1]): void {
    emitter.on(event, listener);
    this.cleanups.push(() => emitter.off(event, listener));
  }

  /**
   * bleno keeps a callback until advertising starts, which a refused start
   * (its 'advertisingStartError') never does: listen for both, and stop.
   */
  private advertise(): Promise<void> {
    const uuids = this.options.advertiseService === false ? [] : this.device.advertisedServices.map(blenoUuid);
    return new Promise((resolve, reject) => {
      const started = () => settle(resolve);
      const refused = (err: Error) => settle(() => reject(err));
      const settle = (then: () => void) => {
        this.bleno.off('advertisingStart', started);
        this.bleno.off('advertisingStartError', refused);
        then();
      };
      this.bleno.once('advertisingStart', started);
      this.bleno.once('advertisingStartError', refused);
      this.bleno.startAdvertising(this.device.name, uuids);
    });
  }

  private characteristic(uuid: string, properties: string[]): object {
    return new this.bleno.Characteristic({
      uuid: blenoUuid(uuid),
      properties: properties.map((p) => (p === 'write-without-response' ? 'writeWithoutResponse' : p)),
      onReadRequest: (offset, callback) =>
        this.answer(
          (link) => this.read(link, uuid, offset),
          (data) => callback(ATT_SUCCESS, data),
          (err) => callback(attCode(err)),
        ),
      onWriteRequest: (data, _offset, withoutResponse, callback) =>
        this.answer(
          (link) => this.write(link, uuid, data, withoutResponse),
          () => callback(ATT_SUCCESS),
          (err) => callback(attCode(err)),
        ),
      onSubscribe: (_maxValueSize, update) => {
        this.subscriptions.set(uuid, update);
        this.answer(
          (link) => this.subscribe(link, uuid, true),
          () => undefined,
          () => undefined,
        );
      },
      onUnsubscribe: () => {
        this.subscriptions.delete(uuid);
        this.answer(
          (link) => this.subscribe(link, uuid, false),
          () => undefined,
          () => undefined,
        );
      },
    });
  }

  /**
   * Handles a request on the link that made it, and answers on that link
   * only. The firmware handles a request inside NimBLE's access callback, so
   * neither the request nor its answer outlives its link; here the device is
   * reached asynchronously, and bleno would send a late answer on the
   * connection handle, which the controller may have given to the next link.
   */
  private answer<T>(work: (link: number) => Promise<T>, ok: (value: T) => void, failed: (err: unknown) => void): void {
    const link = this.link;
    void work(link).then(
      (value) => this.link === link && ok(value),
      (err: unknown) => this.link === link && failed(err),
    );
  }

  /**
   * A long value is read in parts (ATT Read Blob): the first part reads
   * the device, the rest come from that same value.
   */
  private async read(link: number, uuid: string, offset: number): Promise<Buffer> {
    if (offset > 0) {
      const value = this.lastRead.get(uuid);
      if (!value || offset > value.length) throw new AttError(ATT_INVALID_OFFSET, 'read');
      return value.subarray(offset);
    }
    await this.linkUp();
    this.checkLink(link);
    const value = await this.device.read(uuid);
    this.lastRead.set(uuid, value);
    return value;
  }

  private async write(link: number, uuid: string, data: Buffer, withoutResponse: boolean): Promise<void> {
    await this.linkUp();
    this.checkLink(link);
    await this.device.write(uuid, data, withoutResponse);
  }

  private async subscribe(link: number, uuid: string, on: boolean): Promise<void> {
    await this.linkUp();
    this.checkLink(link);
    await this.device.subscribe(uuid, on);
  }

  /** A request whose link ended while the device was being reached never gets to the device. */
  private checkLink(link: number): void {
    if (this.link !== link) throw new Error('the link ended');
  }

  private onAccept(address: string): void {
    this.link++;
    this.central = address;
    this.mtu = 23;
    this.connected = undefined;
    this.emit('accept', address);
  }

  /**
   * The device learns of a central at its first request, by when the
   * central has exchanged its MTU (noble does so right after connecting).
   */
  private linkUp(): Promise<unknown> {
    if (!this.central) return Promise.reject(new Error('no central connected'));
    this.connected ??= this.device.connect(this.mtu);
    return this.connected;
  }

  private onCentralGone(): void {
    this.link++;
    const wasConnected = this.connected;
    this.central = undefined;
    this.connected = undefined;
    this.subscriptions.clear();
    this.lastRead.clear();
    if (this.rebooting) this.bleno.stopAdvertising();
    if (wasConnected) void wasConnected.then(() => this.device.disconnect()).catch(() => undefined);
    this.emit('disconnect');
  }

  /**
   * The device dropped the link itself: it restarts or lost power (it
   * advertises again once booted), or ended a failed link (0x13).
   */
  private onDeviceDropped(reason: number): void {
    this.connected = undefined;
    if (reason !== REMOTE_USER_TERMINATED) {
      this.rebooting = true;
      this.bleno.stopAdvertising();
    }
    this.bleno.disconnect();
  }

  private onBooted(): void {
    if (!this.rebooting) return;
    this.rebooting = false;
    void this.advertise().catch((err: unknown) => this.emit('error', err));
  }
}

function attCode(err: unknown): number {
  return err instanceof AttError ? err.attCode : ATT_UNLIKELY_ERROR;
}
