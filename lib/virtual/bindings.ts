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
 * fault) emits nothing, as noble's HCI bindings do when nothing comes back;
 * a connection request lost so stays under way until cancelled.
 *
 * cancelConnect() is LE Create Connection Cancel: an attempt under way ends
 * with 'connect' and the error a controller reports (0x02); one already
 * made is not cancelled. lateConnect() holds the next connection attempt
 * until the central gives up on it (cancel or disconnect), then lets it
 * complete: the Connection Complete that crosses a cancel on HCI, which the
 * central must then disconnect itself.
 *
 * When a request reaches a device and a result reaches noble is the
 * scheduler's (scheduler.ts): at once in real time, or a preset's pace for
 * a device declared slow (pace()); the benchmark's virtual time gives every
 * result at the moment a modelled link and flash would.
 *
 * removeDevice() takes away all that addDevice() added: the listeners on
 * the device, the scheduler's, and any paced request's timer.
 */
import { EventEmitter } from 'node:events';
import { nobleUuid } from '../protocol/constants';
import { ATT_HEADER, ESP32, LINUX_NOBLE, LinkRequest, negotiate, Preset } from './link-model';
import { DeviceClock, RealTime, Scheduler } from './scheduler';
import { LostRequestError, VirtualEsp32, VirtualLinkRequests } from './virtual-device';

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

/** The RSSI the virtual devices are heard at, in dBm, unless added with another. */
export const DEFAULT_RSSI = -50;

/** The central's ATT MTU, as noble's HCI bindings ask for it. */
export const NOBLE_HCI_MTU = 256;

/** A connection attempt (LE Create Connection) under way. */
interface ConnectAttempt {
  /** The central cancelled it. */
  cancelled: boolean;
  /** The device answered the request, or lost it (then only a cancel ends the attempt). */
  settled: boolean;
  /** Held by lateConnect(): sent to the device once the central gives up on it. */
  release?: () => void;
}

/** A listener on a device's events, as EventEmitter takes it. */
type DeviceListener = Parameters<VirtualEsp32['on']>[1];

interface Link {
  device: VirtualEsp32;
  /** What the controller reports for the device's advertisements (127: not available). */
  rssi: number;
  connected: boolean;
  connecting?: ConnectAttempt;
  /** Connection attempts that lateConnect() is to hold. */
  lateConnects: number;
  stalled: Map<LocalOperation, number>;
  /** Service discoveries that hideServices() is to answer with none. */
  hiddenServices: number;
  onDisconnected(reason: number): void;
  /** The scheduler's side of the device: when requests go and results come. */
  clock: DeviceClock;
  /** The listeners addDevice() put on the device, for removeDevice() to take off. */
  listeners: Array<[string, DeviceListener]>;
}

export class VirtualBindings extends EventEmitter {
  private readonly links = new Map<string, Link>();
  private scanning = false;
  private poweredOn = false;

  constructor(
    private readonly centralMtu = NOBLE_HCI_MTU,
    /** When requests go and results come (see above). */
    readonly scheduler: Scheduler = new RealTime(),
  ) {
    super();
  }

  /**
   * Puts a device in radio range, heard at `rssi` dBm (127: the controller
   * measured none). A device already in range at its address goes out of
   * range first.
   */
  addDevice(device: VirtualEsp32, rssi = DEFAULT_RSSI): void {
    const id = peripheralId(device.address);
    const earlier = this.links.get(id);
    if (earlier) this.removeDevice(earlier.device);
    const time = this.scheduler;
    const link: Link = {
      device,
      rssi,
      connected: false,
      lateConnects: 0,
      stalled: new Map(),
      hiddenServices: 0,
      onDisconnected: (reason) => {
        if (!link.connected) return;
        link.connected = false;
        link.clock.disconnected(() => this.emit('disconnect', id, reason));
      },
      clock: time.attach(device),
      listeners: [],
    };
    const on = (event: string, listener: DeviceListener) => {
      device.on(event, listener);
      link.listeners.push([event, listener]);
    };
    on('notify', (uuid: string, data: Buffer) => {
      const chr = device.characteristics.find((c) => c.uuid === uuid);
      if (!link.connected || !chr) return;
      link.clock.notification(ATT_HEADER + data.length, () => {
        this.emit('air-notify', device.address, uuid, data);
        this.emit('read', id, nobleUuid(chr.service), nobleUuid(uuid), data, true);
      });
    });
    on('disconnected', link.onDisconnected);
    on('exit', () => link.onDisconnected(0x08));
    on('link-request', (requests: VirtualLinkRequests) => {
      if (link.connected) this.answerLinkRequests(device, requests);
    });
    this.links.set(id, link);
    if (this.scanning) {
      process.nextTick(() => {
        if (this.links.get(id) === link) this.advertise(id, link);
      });
    }
  }

  /**
   * The central's controller answers what the firmware asked of the link
   * (data length and PHY, connection parameters) as the preset's central
   * would (a Linux gateway with noble without one), through the link
   * model's negotiate(): the firmware then reports the link it obtained.
   * With a preset, the modelled air time already runs on that link.
   */
  private answerLinkRequests(device: VirtualEsp32, requests: VirtualLinkRequests): void {
    const central = this.scheduler.preset?.central ?? LINUX_NOBLE;
    const params = requests.connParams;
    const request: LinkRequest = {
      mtu: this.centralMtu,
      dataLength: requests.dataPath?.txOctets ?? 27,
      phys: requests.dataPath?.phy === '2M' ? ['2M', '1M'] : ['1M'],
      // No request yet: the interval the central connected with stays.
      intervalMs: params ? { min: params.intervalMinMs, max: params.intervalMaxMs } : { min: central.connectIntervalMs, max: central.connectIntervalMs },
      latency: params?.latency ?? 0,
      supervisionTimeoutMs: params?.supervisionTimeoutMs ?? central.supervisionTimeoutMs,
    };
    const link = negotiate(central, this.scheduler.preset?.chip ?? ESP32, request);
    void device
      .setLink({
        intervalMs: link.intervalMs,
        latency: link.latency,
        supervisionTimeoutMs: link.supervisionTimeoutMs,
        phy: { toDevice: link.phy, fromDevice: link.phy },
        dataLength: { toDevice: link.dataLength, fromDevice: link.dataLength },
      })
      .catch(() => undefined); // the link ended meanwhile: nothing to answer
  }

  /** Takes a device out of radio range (a connected link drops). */
  removeDevice(device: VirtualEsp32): void {
    const id = peripheralId(device.address);
    const link = this.links.get(id);
    if (!link || link.device !== device) return;
    for (const [event, listener] of link.listeners) device.off(event, listener);
    link.onDisconnected(0x08); // connection timeout: the device went out of range
    link.clock.detach();
    this.links.delete(id);
  }

  /**
   * The device's requests go out no faster than the preset's link and
   * flash would take them (its update's bound, per byte, and a round trip
   * per request with a response), so a flow meets a slow device; undefined:
   * at the host's speed again. In virtual time the model sets the pace.
   */
  pace(device: VirtualEsp32, preset: Preset | undefined): void {
    this.links.get(peripheralId(device.address))?.clock.pace(preset);
  }

  /** Runs send once the link has carried attBytes, if the link is still up then. */
  private send(link: Link, attBytes: number, withResponse: boolean, send: () => void): void {
    link.clock.send(attBytes, withResponse, () => {
      // A request still on its way when the link dropped never reaches the device.
      if (link.connected) send();
    });
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

  /** The next `count` service discoveries find no service: a GATT table not up yet. */
  hideServices(device: VirtualEsp32, count = 1): void {
    const link = this.links.get(peripheralId(device.address));
    if (link) link.hiddenServices += count;
  }

  /**
   * The next `count` connection attempts to the device complete only once
   * the central cancels or disconnects them (see above).
   */
  lateConnect(device: VirtualEsp32, count = 1): void {
    const link = this.links.get(peripheralId(device.address));
    if (link) link.lateConnects += count;
  }

  /** Whether the device has a connection to the central (a connection attempt is none). */
  isConnected(device: VirtualEsp32): boolean {
    return this.links.get(peripheralId(device.address))?.connected === true;
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

  /**
   * Whether a device is in radio range: a device out of range is not found
   * by a scan (its process may still run). The virtual radio takes a device
   * out of range the moment nobody declares it any more.
   */
  inRange: (address: string) => boolean = () => true;

  startScanning(serviceUuids?: string[], allowDuplicates?: boolean): void {
    this.scanning = true;
    const wanted = (serviceUuids ?? []).map(nobleUuid);
    process.nextTick(() => {
      this.emit('scanStart', !allowDuplicates);
      for (const [id, link] of this.links) {
        if (!this.scanning) break;
        if (link.connected) continue; // a connected ESP32 stops advertising
        if (!this.inRange(link.device.address)) continue;
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
    this.emit('discover', id, d.address, 'public', true, advertisement, link.rssi, true);
  }

  connect(id: string): void {
    const link = this.links.get(id);
    if (!link) {
      process.nextTick(() => this.emit('connect', id, new Error('Connection Failed to be Established (0x3e)')));
      return;
    }
    this.emit('air-connect', link.device.address);
    const attempt: ConnectAttempt = { cancelled: false, settled: false };
    link.connecting = attempt;
    const time = this.scheduler;
    const start = () => {
      time.hold();
      link.device.connect(this.centralMtu).then(
        (mtu) => {
          attempt.settled = true;
          if (link.connecting === attempt) link.connecting = undefined;
          if (attempt.cancelled) {
            // The device took the connection the central cancelled: the
            // controller drops it (before any later request) and reports the cancel.
            void link.device.disconnect().catch(() => undefined);
            time.at(time.now, () => this.emit('connect', id, cancelledConnection()));
            time.release();
            return;
          }
          link.connected = true;
          link.clock.connected();
          // Connection setup, then the MTU exchange: a request and its response.
          const connected = time.now + time.roundTrips(1);
          time.at(connected, () => this.emit('connect', id, null));
          // Like noble's HCI bindings: the MTU exchange completes after 'connect'.
          if (!this.stalls(link, 'mtu')) time.local(() => this.emit('onMtu', id, mtu), connected);
          time.release();
        },
        (err: Error) => {
          attempt.settled = true;
          if (attempt.cancelled) {
            if (link.connecting === attempt) link.connecting = undefined;
            time.at(time.now, () => this.emit('connect', id, cancelledConnection()));
          } else if (!(err instanceof LostRequestError)) {
            if (link.connecting === attempt) link.connecting = undefined;
            time.at(time.now, () => this.emit('connect', id, err));
          }
          // A connection request lost on air: noble waits, the controller goes
          // on trying (the client's timeout ends it, with a cancel).
          time.release();
        },
      );
    };
    if (link.lateConnects > 0) {
      link.lateConnects--;
      attempt.release = start;
    } else {
      start();
    }
  }

  cancelConnect(id: string): void {
    const link = this.links.get(id);
    const attempt = link?.connecting;
    // Nothing under way (or already cancelled): the controller refuses, nothing is emitted.
    if (!link || !attempt || attempt.cancelled) return;
    if (attempt.release) {
      // lateConnect(): the connection is made just as the cancel comes, which is then refused.
      releaseAttempt(attempt);
      return;
    }
    attempt.cancelled = true;
    if (attempt.settled) {
      // A request the device lost: only the cancel ends the attempt.
      link.connecting = undefined;
      this.scheduler.local(() => this.emit('connect', id, cancelledConnection()));
    }
    // Otherwise the device's answer, when it comes, ends the attempt (see connect()).
  }

  disconnect(id: string): void {
    const link = this.links.get(id);
    if (!link || !link.connected) {
      // lateConnect(): noble's HCI bindings send Disconnect without a handle;
      // the connection being made is made, and no disconnect is reported.
      if (link?.connecting?.release) {
        releaseAttempt(link.connecting);
        return;
      }
      process.nextTick(() => this.emit('disconnect', id, 0x16));
      return;
    }
    link.device.disconnect().then(
      () => link.onDisconnected(0x16),
      () => link.onDisconnected(0x16),
    );
  }

  updateRssi(id: string): void {
    const rssi = this.links.get(id)?.rssi ?? DEFAULT_RSSI;
    process.nextTick(() => this.emit('rssiUpdate', id, rssi));
  }

  discoverServices(id: string, uuids?: string[]): void {
    const link = this.connectedLink(id);
    if (!link) return;
    this.emit('air-discover', link.device.address, 'services');
    if (this.stalls(link, 'discover-services')) return;
    const wanted = (uuids ?? []).map(nobleUuid);
    const hidden = link.hiddenServices > 0 && link.hiddenServices-- > 0;
    const found = hidden ? [] : link.device.services.map(nobleUuid).filter((u) => !wanted.length || wanted.includes(u));
    this.scheduler.local(() => this.emit('servicesDiscover', id, found));
  }

  discoverIncludedServices(id: string, serviceUuid: string): void {
    this.scheduler.local(() => this.emit('includedServicesDiscover', id, serviceUuid, []));
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
    this.scheduler.local(() => this.emit('characteristicsDiscover', id, serviceUuid, found));
  }

  discoverDescriptors(id: string, serviceUuid: string, characteristicUuid: string): void {
    const chr = this.findCharacteristic(id, serviceUuid, characteristicUuid);
    const descriptors = chr && chr.properties.includes('notify') ? ['2902'] : [];
    this.scheduler.local(() => this.emit('descriptorsDiscover', id, serviceUuid, characteristicUuid, descriptors));
  }

  read(id: string, serviceUuid: string, characteristicUuid: string): void {
    const link = this.connectedLink(id);
    const chr = this.findCharacteristic(id, serviceUuid, characteristicUuid);
    if (!link || !chr) return;
    this.emit('air-read', link.device.address, chr.uuid);
    this.send(link, ATT_HEADER, true, () => {
      const request = link.clock.request('read', ATT_HEADER);
      link.device.read(chr.uuid).then(
        (data) => request.answered(data.length + 1, () => this.emit('read', id, serviceUuid, characteristicUuid, data, false)),
        (err: Error) => request.answered(5, err instanceof LostRequestError ? undefined : () => this.emit('read', id, serviceUuid, characteristicUuid, Buffer.alloc(0), false)),
      );
    });
  }

  write(id: string, serviceUuid: string, characteristicUuid: string, data: Buffer, withoutResponse: boolean): void {
    const link = this.connectedLink(id);
    const chr = this.findCharacteristic(id, serviceUuid, characteristicUuid);
    if (!link || !chr) return;
    this.emit('air-write', link.device.address, chr.uuid, data, withoutResponse);
    this.send(link, ATT_HEADER + data.length, !withoutResponse, () => {
      const request = link.clock.request(withoutResponse ? 'write-cmd' : 'write', ATT_HEADER + data.length);
      link.device.write(chr.uuid, data, withoutResponse).then(
        () => request.answered(1, () => this.emit('write', id, serviceUuid, characteristicUuid)),
        // An ATT error response: noble's HCI bindings emit nothing for it.
        () => request.answered(5),
      );
    });
  }

  notify(id: string, serviceUuid: string, characteristicUuid: string, enable: boolean): void {
    const link = this.connectedLink(id);
    const chr = this.findCharacteristic(id, serviceUuid, characteristicUuid);
    if (!link || !chr) return;
    const request = link.clock.request('subscribe', ATT_HEADER + 2);
    link.device.subscribe(chr.uuid, enable).then(
      () => request.answered(1, () => this.emit('notify', id, serviceUuid, characteristicUuid, enable)),
      () => request.answered(5),
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

  /**
   * noble names the characteristic on every operation, each stream packet
   * included: a table by noble's UUID forms, made once per device, rather
   * than two UUID conversions per characteristic per call (about a sixth of
   * the central's CPU in a 4 MB update, docs/PERFORMANCE.md).
   */
  private findCharacteristic(id: string, serviceUuid: string, characteristicUuid: string): VirtualCharacteristicOf | undefined {
    const chars = this.links.get(id)?.device.characteristics;
    if (!chars) return undefined;
    let table = characteristicTables.get(chars);
    if (!table || table.count !== chars.length) {
      table = { count: chars.length, byService: new Map() };
      for (const c of chars) {
        const service = nobleUuid(c.service);
        let byUuid = table.byService.get(service);
        if (!byUuid) table.byService.set(service, (byUuid = new Map()));
        if (!byUuid.has(nobleUuid(c.uuid))) byUuid.set(nobleUuid(c.uuid), c); // the first, as a search would find
      }
      characteristicTables.set(chars, table);
    }
    return table.byService.get(serviceUuid)?.get(characteristicUuid);
  }
}

type VirtualCharacteristicOf = VirtualEsp32['characteristics'][number];

/** Per device's characteristics (the array a device keeps), by noble's service then characteristic UUID. */
const characteristicTables = new WeakMap<VirtualCharacteristicOf[], { count: number; byService: Map<string, Map<string, VirtualCharacteristicOf>> }>();

/** What noble's HCI bindings report for a cancelled LE Create Connection (status 0x02). */
function cancelledConnection(): Error {
  return new Error('Unknown Connection Identifier (0x2)');
}

function releaseAttempt(attempt: ConnectAttempt): void {
  const release = attempt.release;
  attempt.release = undefined;
  release?.();
}
