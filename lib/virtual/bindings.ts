/**
 * A noble bindings object whose radio reaches virtual ESP32s.
 *
 * `require('@abandonware/noble/with-bindings')(new VirtualBindings())` gives
 * a Noble that scans, connects and talks GATT to the virtual devices added
 * here, through the same Noble, Peripheral and Characteristic code a real
 * adapter uses. Where noble's HCI bindings have a quirk that clients must
 * live with, these bindings have it too:
 * - the MTU arrives ('onMtu') after 'connect', before discovery completes;
 * - a Write Request the device answers with an ATT error emits nothing, so
 *   the writer's callback never fires (clients need a timeout);
 * - a read that fails emits 'read' with an empty buffer.
 *
 * For tests, the bindings also emit what crosses the air: 'air-connect'
 * (address) before a connection attempt, 'air-discover' (address, what)
 * before a discovery, 'air-read' (address, characteristic UUID) before a
 * read, 'air-write' (address, characteristic UUID, data, withoutResponse)
 * and 'air-notify' (address, characteristic UUID, data); dropLink() breaks
 * a connection the way a device walking out of range does, and stall()
 * makes the next operations of a kind go unanswered (the local ones:
 * discovery and the MTU exchange; the device's own faults are
 * VirtualEsp32.fault()). A request the device lost on air (an injected
 * fault) emits nothing, as noble's HCI bindings do when nothing comes back.
 */
import { EventEmitter } from 'node:events';
import { nobleUuid } from '../protocol/constants';
import { LostRequestError, VirtualEsp32 } from './virtual-device';

/** Operations the bindings answer themselves, which stall() can leave unanswered. */
export type LocalOperation = 'mtu' | 'discover-services' | 'discover-characteristics';

/** noble's peripheral id for an address. */
export function peripheralId(address: string): string {
  return address.replace(/:/g, '').toLowerCase();
}

const PROPERTY_NAMES: Record<string, string> = {
  read: 'read',
  write: 'write',
  'write-without-response': 'writeWithoutResponse',
  notify: 'notify',
  indicate: 'indicate',
};

/** The central's ATT MTU, as noble's HCI bindings ask for it. */
export const NOBLE_HCI_MTU = 256;

interface Link {
  device: VirtualEsp32;
  connected: boolean;
  stalled: Map<LocalOperation, number>;
  onNotify(uuid: string, data: Buffer): void;
  onDisconnected(reason: number): void;
}

export class VirtualBindings extends EventEmitter {
  private readonly links = new Map<string, Link>();
  private scanning = false;
  private poweredOn = false;

  constructor(private readonly centralMtu = NOBLE_HCI_MTU) {
    super();
  }

  /** Puts a device in radio range. */
  addDevice(device: VirtualEsp32): void {
    const id = peripheralId(device.address);
    const link: Link = {
      device,
      connected: false,
      stalled: new Map(),
      onNotify: (uuid, data) => {
        const chr = device.characteristics.find((c) => c.uuid === uuid);
        if (link.connected && chr) {
          this.emit('air-notify', device.address, uuid, data);
          this.emit('read', id, nobleUuid(chr.service), nobleUuid(uuid), data, true);
        }
      },
      onDisconnected: (reason) => {
        if (!link.connected) return;
        link.connected = false;
        this.emit('disconnect', id, reason);
      },
    };
    device.on('notify', link.onNotify);
    device.on('disconnected', link.onDisconnected);
    device.on('exit', () => link.onDisconnected(0x08));
    this.links.set(id, link);
    if (this.scanning) process.nextTick(() => this.advertise(id, link));
  }

  /** Takes a device out of radio range (a connected link drops). */
  removeDevice(device: VirtualEsp32): void {
    const id = peripheralId(device.address);
    const link = this.links.get(id);
    if (!link) return;
    device.off('notify', link.onNotify);
    device.off('disconnected', link.onDisconnected);
    link.onDisconnected(0x08); // connection timeout: the device went out of range
    this.links.delete(id);
  }

  /** Breaks the device's connection as a radio link loss does: both ends see a disconnect. */
  dropLink(device: VirtualEsp32): void {
    const link = this.links.get(peripheralId(device.address));
    if (!link || !link.connected) return;
    link.connected = false;
    void device.disconnect().catch(() => undefined);
    this.emit('disconnect', peripheralId(device.address), 0x08); // connection timeout
  }

  /** The next `count` operations of this kind with the device get no answer. */
  stall(device: VirtualEsp32, operation: LocalOperation, count = 1): void {
    const link = this.links.get(peripheralId(device.address));
    if (link) link.stalled.set(operation, (link.stalled.get(operation) ?? 0) + count);
  }

  /** True (and one stall used) when the operation is to go unanswered. */
  private stalls(link: Link, operation: LocalOperation): boolean {
    const left = link.stalled.get(operation) ?? 0;
    if (left <= 0) return false;
    link.stalled.set(operation, left - 1);
    return true;
  }

  get devices(): VirtualEsp32[] {
    return [...this.links.values()].map((l) => l.device);
  }

  // --- noble bindings interface -------------------------------------------

  init(): void {
    process.nextTick(() => {
      this.poweredOn = true;
      this.emit('addressChange', '00:00:00:00:00:00');
      this.emit('stateChange', 'poweredOn');
    });
  }

  get state(): string {
    return this.poweredOn ? 'poweredOn' : 'unknown';
  }

  setScanParameters(): void {
    process.nextTick(() => this.emit('scanParametersSet'));
  }

  startScanning(serviceUuids?: string[], allowDuplicates?: boolean): void {
    this.scanning = true;
    const wanted = (serviceUuids ?? []).map(nobleUuid);
    process.nextTick(() => {
      this.emit('scanStart', !allowDuplicates);
      for (const [id, link] of this.links) {
        if (!this.scanning) break;
        if (link.connected) continue; // a connected ESP32 stops advertising
        const advertised = link.device.advertisedServices.map(nobleUuid);
        if (wanted.length && !wanted.some((u) => advertised.includes(u))) continue;
        this.advertise(id, link);
      }
    });
  }

  stopScanning(): void {
    this.scanning = false;
    process.nextTick(() => this.emit('scanStop'));
  }

  reset(): void {}

  private advertise(id: string, link: Link): void {
    const d = link.device;
    const advertisement = {
      localName: d.name,
      txPowerLevel: 9,
      serviceUuids: d.advertisedServices.map(nobleUuid),
      manufacturerData: undefined,
      serviceData: [],
      serviceSolicitationUuids: [],
    };
    this.emit('discover', id, d.address, 'public', true, advertisement, -50, true);
  }

  connect(id: string): void {
    const link = this.links.get(id);
    if (!link) {
      process.nextTick(() => this.emit('connect', id, new Error('Connection Failed to be Established (0x3e)')));
      return;
    }
    this.emit('air-connect', link.device.address);
    link.device.connect(this.centralMtu).then(
      (mtu) => {
        link.connected = true;
        this.emit('connect', id, null);
        // Like noble's HCI bindings: the MTU exchange completes after 'connect'.
        if (!this.stalls(link, 'mtu')) setImmediate(() => this.emit('onMtu', id, mtu));
      },
      // A connection request lost on air: noble waits (the client's timeout ends it).
      (err: Error) => (err instanceof LostRequestError ? undefined : this.emit('connect', id, err)),
    );
  }

  cancelConnect(): void {}

  disconnect(id: string): void {
    const link = this.links.get(id);
    if (!link || !link.connected) {
      process.nextTick(() => this.emit('disconnect', id, 0x16));
      return;
    }
    link.device.disconnect().then(
      () => link.onDisconnected(0x16),
      () => link.onDisconnected(0x16),
    );
  }

  updateRssi(id: string): void {
    process.nextTick(() => this.emit('rssiUpdate', id, -50));
  }

  discoverServices(id: string, uuids?: string[]): void {
    const link = this.connectedLink(id);
    if (!link) return;
    this.emit('air-discover', link.device.address, 'services');
    if (this.stalls(link, 'discover-services')) return;
    const wanted = (uuids ?? []).map(nobleUuid);
    const found = link.device.services.map(nobleUuid).filter((u) => !wanted.length || wanted.includes(u));
    setImmediate(() => this.emit('servicesDiscover', id, found));
  }

  discoverIncludedServices(id: string, serviceUuid: string): void {
    setImmediate(() => this.emit('includedServicesDiscover', id, serviceUuid, []));
  }

  discoverCharacteristics(id: string, serviceUuid: string, uuids?: string[]): void {
    const link = this.connectedLink(id);
    if (!link) return;
    this.emit('air-discover', link.device.address, 'characteristics');
    if (this.stalls(link, 'discover-characteristics')) return;
    const wanted = (uuids ?? []).map(nobleUuid);
    const found = link.device.characteristics
      .filter((c) => nobleUuid(c.service) === serviceUuid)
      .filter((c) => !wanted.length || wanted.includes(nobleUuid(c.uuid)))
      .map((c) => ({ uuid: nobleUuid(c.uuid), properties: c.properties.map((p) => PROPERTY_NAMES[p] ?? p) }));
    setImmediate(() => this.emit('characteristicsDiscover', id, serviceUuid, found));
  }

  discoverDescriptors(id: string, serviceUuid: string, characteristicUuid: string): void {
    const chr = this.findCharacteristic(id, serviceUuid, characteristicUuid);
    const descriptors = chr && chr.properties.includes('notify') ? ['2902'] : [];
    setImmediate(() => this.emit('descriptorsDiscover', id, serviceUuid, characteristicUuid, descriptors));
  }

  read(id: string, serviceUuid: string, characteristicUuid: string): void {
    const link = this.connectedLink(id);
    const chr = this.findCharacteristic(id, serviceUuid, characteristicUuid);
    if (!link || !chr) return;
    this.emit('air-read', link.device.address, chr.uuid);
    link.device.read(chr.uuid).then(
      (data) => this.emit('read', id, serviceUuid, characteristicUuid, data, false),
      (err: Error) => {
        if (!(err instanceof LostRequestError)) this.emit('read', id, serviceUuid, characteristicUuid, Buffer.alloc(0), false);
      },
    );
  }

  write(id: string, serviceUuid: string, characteristicUuid: string, data: Buffer, withoutResponse: boolean): void {
    const link = this.connectedLink(id);
    const chr = this.findCharacteristic(id, serviceUuid, characteristicUuid);
    if (!link || !chr) return;
    this.emit('air-write', link.device.address, chr.uuid, data, withoutResponse);
    link.device.write(chr.uuid, data, withoutResponse).then(
      () => this.emit('write', id, serviceUuid, characteristicUuid),
      // An ATT error response: noble's HCI bindings emit nothing for it.
      () => undefined,
    );
  }

  notify(id: string, serviceUuid: string, characteristicUuid: string, enable: boolean): void {
    const link = this.connectedLink(id);
    const chr = this.findCharacteristic(id, serviceUuid, characteristicUuid);
    if (!link || !chr) return;
    link.device.subscribe(chr.uuid, enable).then(
      () => this.emit('notify', id, serviceUuid, characteristicUuid, enable),
      () => undefined,
    );
  }

  broadcast(): void {}
  readValue(): void {}
  writeValue(): void {}
  readHandle(): void {}
  writeHandle(): void {}

  private connectedLink(id: string): Link | undefined {
    const link = this.links.get(id);
    return link && link.connected ? link : undefined;
  }

  private findCharacteristic(id: string, serviceUuid: string, characteristicUuid: string) {
    return this.links
      .get(id)
      ?.device.characteristics.find(
        (c) => nobleUuid(c.service) === serviceUuid && nobleUuid(c.uuid) === characteristicUuid,
      );
  }
}
