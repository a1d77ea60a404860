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
 * With a link model (lib/virtual/link-model.ts), time is virtual: every
 * result goes out at the moment the model says a real link and flash would
 * produce it, in that order, one at a time, once the devices answered all
 * that is under way; `now` is that moment. A whole update then gives the
 * same figures on any machine, at the speed of the host, not of the air.
 */
import { EventEmitter } from 'node:events';
import { nobleUuid } from '../protocol/constants';
import { AirSchedule, ATT_HEADER, boundMs, ESP32, flashSpans, L2CAP_HEADER, LINUX_NOBLE, LinkParameters, LinkRequest, negotiate, pduMs, pduPayloads, Preset } from './link-model';
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
  onNotify(uuid: string, data: Buffer): void;
  onDisconnected(reason: number): void;
  /** With a link model: the air, the device's host, and the requests it is answering. */
  timing?: LinkTiming;
  /** In real time: requests held to a slower link's pace (pace()). */
  pacing?: Pacing;
}

/** A device's requests, sent no sooner than a preset's link would carry them. */
interface Pacing {
  msPerByte: number;
  roundTripMs: number;
  /** When (Date.now()) the link has carried all that was sent. */
  freeAt: number;
  queue: Array<{ at: number; fn: () => void }>;
  timer?: NodeJS.Timeout;
}

/** A request to the device under way, with what it caused. */
interface TimedOp {
  kind: 'write' | 'write-cmd' | 'read' | 'subscribe';
  issuedAt: number;
  /** The ATT PDU the central sends (header included). */
  attBytes: number;
  notifications: Array<{ uuid: string; data: Buffer }>;
  erases: number;
  pages: number;
  blocks: number;
}

interface LinkTiming {
  air: AirSchedule;
  /** When the device's host has done all it was given. */
  hostFreeAt: number;
  /** When the peripheral's last PDU reached the central. */
  peripheralAt: number;
  /** Release times of the PDUs held in the device's controller pool, in order. */
  rx: number[];
  /** The flash's spans with the cache off ([start, end], in order), from the oldest that may still hold a PDU. */
  spans: Array<[number, number]>;
  ops: TimedOp[];
}

interface Delivery {
  t: number;
  seq: number;
  fn: () => void;
}

export class VirtualBindings extends EventEmitter {
  private readonly links = new Map<string, Link>();
  private scanning = false;
  private poweredOn = false;
  // Virtual time (link model only).
  private clock = 0;
  private seq = 0;
  private outstanding = 0;
  private pumping = false;
  private readonly deliveries: Delivery[] = [];

  constructor(
    private readonly centralMtu = NOBLE_HCI_MTU,
    /** A link and flash model: time becomes virtual (see above). */
    readonly model?: Preset,
  ) {
    super();
  }

  /** Virtual time in ms (link model), 0 otherwise. */
  get now(): number {
    return this.clock;
  }

  /** Puts a device in radio range, heard at `rssi` dBm (127: the controller measured none). */
  addDevice(device: VirtualEsp32, rssi = DEFAULT_RSSI): void {
    const id = peripheralId(device.address);
    const link: Link = {
      device,
      rssi,
      connected: false,
      lateConnects: 0,
      stalled: new Map(),
      hiddenServices: 0,
      onNotify: (uuid, data) => {
        const chr = device.characteristics.find((c) => c.uuid === uuid);
        if (!link.connected || !chr) return;
        const op = link.timing?.ops[0];
        if (op) {
          op.notifications.push({ uuid, data }); // timed with its request
          return;
        }
        this.at(this.clock, () => {
          this.emit('air-notify', device.address, uuid, data);
          this.emit('read', id, nobleUuid(chr.service), nobleUuid(uuid), data, true);
        });
      },
      onDisconnected: (reason) => {
        if (!link.connected) return;
        link.connected = false;
        if (!this.model) {
          this.emit('disconnect', id, reason);
          return;
        }
        // After what the device sent before it (e.g. the answer before a
        // restart), whose request may still be settling: time it once that is done.
        this.outstanding++;
        setImmediate(() => {
          const timing = link.timing;
          this.at(timing ? Math.max(this.clock, timing.peripheralAt, timing.hostFreeAt) : this.clock, () => this.emit('disconnect', id, reason));
          this.settled();
        });
      },
    };
    device.on('flash', (erases: number, pages: number, blocks: number) => {
      const op = link.timing?.ops[0];
      if (op) {
        op.erases += erases;
        op.pages += pages;
        op.blocks += blocks;
      }
    });
    // The reply ends what belongs to a request: later notifications and
    // flash work are the next one's, whenever its promise settles.
    device.on('reply', (request: string) => {
      const op = link.timing?.ops[0];
      if (op && op.kind === request) link.timing!.ops.shift();
    });
    device.on('notify', link.onNotify);
    device.on('disconnected', link.onDisconnected);
    device.on('exit', () => link.onDisconnected(0x08));
    device.on('link-request', (requests: VirtualLinkRequests) => {
      if (link.connected) this.answerLinkRequests(device, requests);
    });
    this.links.set(id, link);
    if (this.scanning) process.nextTick(() => this.advertise(id, link));
  }

  /**
   * The central's controller answers what the firmware asked of the link
   * (data length and PHY, connection parameters) as the preset's central
   * would (a Linux gateway with noble without one), through the link
   * model's negotiate(): the firmware then reports the link it obtained.
   * With a preset, the modelled air time already runs on that link.
   */
  private answerLinkRequests(device: VirtualEsp32, requests: VirtualLinkRequests): void {
    const central = this.model?.central ?? LINUX_NOBLE;
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
    const link = negotiate(central, this.model?.chip ?? ESP32, request);
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
    if (!link) return;
    device.off('notify', link.onNotify);
    device.off('disconnected', link.onDisconnected);
    link.onDisconnected(0x08); // connection timeout: the device went out of range
    if (link.pacing) clearTimeout(link.pacing.timer);
    this.links.delete(id);
  }

  /**
   * Without a model (real time): the device's requests go out no faster
   * than the preset's link and flash would take them (its update's bound,
   * per byte, and a round trip per request with a response), so a flow
   * meets a slow device; undefined: at the host's speed again.
   */
  pace(device: VirtualEsp32, preset: Preset | undefined): void {
    const link = this.links.get(peripheralId(device.address));
    if (!link) return;
    const sample = 1 << 20;
    link.pacing = preset ? { msPerByte: boundMs(preset, sample).boundMs / sample, roundTripMs: 2 * preset.link.intervalMs, freeAt: 0, queue: [] } : undefined;
  }

  /** Runs send once a paced link has carried attBytes (at once when not paced). */
  private paced(link: Link, attBytes: number, withResponse: boolean, send: () => void): void {
    const p = link.pacing;
    if (!p || this.model) {
      send();
      return;
    }
    p.freeAt = Math.max(Date.now(), p.freeAt) + attBytes * p.msPerByte + (withResponse ? p.roundTripMs : 0);
    p.queue.push({ at: p.freeAt, fn: send });
    if (p.timer) return;
    const drain = () => {
      p.timer = undefined;
      // A request still on its way when the link dropped never reaches the device.
      while (p.queue.length && p.queue[0].at <= Date.now()) {
        const next = p.queue.shift()!;
        if (link.connected) next.fn();
      }
      if (p.queue.length) p.timer = setTimeout(drain, p.queue[0].at - Date.now()).unref();
    };
    p.timer = setTimeout(drain, p.queue[0].at - Date.now()).unref();
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
    const start = () => {
      this.outstanding++;
      link.device.connect(this.centralMtu).then(
        (mtu) => {
          attempt.settled = true;
          if (link.connecting === attempt) link.connecting = undefined;
          if (attempt.cancelled) {
            // The device took the connection the central cancelled: the
            // controller drops it (before any later request) and reports the cancel.
            void link.device.disconnect().catch(() => undefined);
            this.at(this.clock, () => this.emit('connect', id, cancelledConnection()));
            this.settled();
            return;
          }
          link.connected = true;
          if (this.model) link.timing = this.newTiming(this.model.link);
          // Connection setup, then the MTU exchange: a request and its response.
          const connected = this.clock + this.roundTrips(1);
          this.at(connected, () => this.emit('connect', id, null));
          // Like noble's HCI bindings: the MTU exchange completes after 'connect'.
          if (!this.stalls(link, 'mtu')) {
            const exchanged = () => this.emit('onMtu', id, mtu);
            if (this.model) this.at(connected + this.roundTrips(1), exchanged);
            else setImmediate(exchanged);
          }
          this.settled();
        },
        (err: Error) => {
          attempt.settled = true;
          if (attempt.cancelled) {
            if (link.connecting === attempt) link.connecting = undefined;
            this.at(this.clock, () => this.emit('connect', id, cancelledConnection()));
          } else if (!(err instanceof LostRequestError)) {
            if (link.connecting === attempt) link.connecting = undefined;
            this.at(this.clock, () => this.emit('connect', id, err));
          }
          // A connection request lost on air: noble waits, the controller goes
          // on trying (the client's timeout ends it, with a cancel).
          this.settled();
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
      this.local(() => this.emit('connect', id, cancelledConnection()));
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
    this.local(() => this.emit('servicesDiscover', id, found));
  }

  discoverIncludedServices(id: string, serviceUuid: string): void {
    this.local(() => this.emit('includedServicesDiscover', id, serviceUuid, []));
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
    this.local(() => this.emit('characteristicsDiscover', id, serviceUuid, found));
  }

  discoverDescriptors(id: string, serviceUuid: string, characteristicUuid: string): void {
    const chr = this.findCharacteristic(id, serviceUuid, characteristicUuid);
    const descriptors = chr && chr.properties.includes('notify') ? ['2902'] : [];
    this.local(() => this.emit('descriptorsDiscover', id, serviceUuid, characteristicUuid, descriptors));
  }

  read(id: string, serviceUuid: string, characteristicUuid: string): void {
    const link = this.connectedLink(id);
    const chr = this.findCharacteristic(id, serviceUuid, characteristicUuid);
    if (!link || !chr) return;
    this.emit('air-read', link.device.address, chr.uuid);
    this.paced(link, ATT_HEADER, true, () => {
      const op = this.startOp(link, 'read', ATT_HEADER);
      link.device.read(chr.uuid).then(
        (data) => this.finishOp(link, op, data.length + 1, () => this.emit('read', id, serviceUuid, characteristicUuid, data, false)),
        (err: Error) =>
          this.finishOp(link, op, 5, err instanceof LostRequestError ? undefined : () => this.emit('read', id, serviceUuid, characteristicUuid, Buffer.alloc(0), false)),
      );
    });
  }

  write(id: string, serviceUuid: string, characteristicUuid: string, data: Buffer, withoutResponse: boolean): void {
    const link = this.connectedLink(id);
    const chr = this.findCharacteristic(id, serviceUuid, characteristicUuid);
    if (!link || !chr) return;
    this.emit('air-write', link.device.address, chr.uuid, data, withoutResponse);
    this.paced(link, ATT_HEADER + data.length, !withoutResponse, () => {
      const op = this.startOp(link, withoutResponse ? 'write-cmd' : 'write', ATT_HEADER + data.length);
      link.device.write(chr.uuid, data, withoutResponse).then(
        () => this.finishOp(link, op, 1, () => this.emit('write', id, serviceUuid, characteristicUuid)),
        // An ATT error response: noble's HCI bindings emit nothing for it.
        () => this.finishOp(link, op, 5, undefined),
      );
    });
  }

  notify(id: string, serviceUuid: string, characteristicUuid: string, enable: boolean): void {
    const link = this.connectedLink(id);
    const chr = this.findCharacteristic(id, serviceUuid, characteristicUuid);
    if (!link || !chr) return;
    const op = this.startOp(link, 'subscribe', ATT_HEADER + 2);
    link.device.subscribe(chr.uuid, enable).then(
      () => this.finishOp(link, op, 1, () => this.emit('notify', id, serviceUuid, characteristicUuid, enable)),
      () => this.finishOp(link, op, 5, undefined),
    );
  }

  broadcast(): void {}
  readValue(): void {}
  writeValue(): void {}
  readHandle(): void {}
  writeHandle(): void {}

  // --- virtual time ------------------------------------------------------------

  private newTiming(link: LinkParameters): LinkTiming {
    const air = new AirSchedule(link);
    return { air, hostFreeAt: this.clock, peripheralAt: this.clock, rx: [], spans: [], ops: [] };
  }

  /** n request/response round trips: a request in one event, its response in the next. */
  private roundTrips(n: number): number {
    return this.model ? n * 2 * this.model.link.intervalMs : 0;
  }

  /** Runs fn at virtual time t (without a model: now). */
  private at(t: number, fn: () => void): void {
    if (!this.model) {
      fn();
      return;
    }
    this.deliveries.push({ t: Math.max(t, this.clock), seq: this.seq++, fn });
    this.kick();
  }

  /** An answer the central's own stack gives after a round trip (discovery). */
  private local(fn: () => void): void {
    if (this.model) this.at(this.clock + this.roundTrips(1), fn);
    else setImmediate(fn);
  }

  private settled(): void {
    this.outstanding--;
    this.kick();
  }

  private kick(): void {
    if (!this.model || this.pumping) return;
    this.pumping = true;
    setImmediate(() => this.pump());
  }

  /**
   * Delivers the earliest result, once the devices answered everything
   * under way (an answer still to come could be earlier), then lets the
   * client react before the next one.
   */
  private pump(): void {
    this.pumping = false;
    if (this.outstanding > 0 || this.deliveries.length === 0) return;
    let first = 0;
    for (let i = 1; i < this.deliveries.length; i++) {
      const d = this.deliveries[i];
      const f = this.deliveries[first];
      if (d.t < f.t || (d.t === f.t && d.seq < f.seq)) first = i;
    }
    const [next] = this.deliveries.splice(first, 1);
    this.clock = next.t;
    next.fn();
    this.kick();
  }

  private startOp(link: Link, kind: TimedOp['kind'], attBytes: number): TimedOp {
    const op: TimedOp = { kind, issuedAt: this.clock, attBytes, notifications: [], erases: 0, pages: 0, blocks: 0 };
    this.outstanding++;
    link.timing?.ops.push(op);
    return op;
  }

  /**
   * The device answered op: its PDUs cross the air (waiting for room in
   * the device's buffers), the device's host runs it (and its flash work),
   * then the response (`respond`, an ATT PDU of responseBytes) and the
   * notifications it caused come back.
   */
  private finishOp(link: Link, op: TimedOp, responseBytes: number, respond: (() => void) | undefined): void {
    const timing = link.timing;
    const model = this.model;
    if (!timing || !model) {
      respond?.();
      for (const n of op.notifications) link.onNotify(n.uuid, n.data);
      this.outstanding--;
      return;
    }
    const pending = timing.ops.indexOf(op);
    if (pending >= 0) timing.ops.splice(pending, 1); // a lost request: no reply came
    const params = model.link;
    let arrival = op.issuedAt;
    const payloads = pduPayloads(params, op.attBytes);
    // While the cache is off only the controller's pool takes PDUs (the
    // host's buffers are filled by code that cannot run then); the host
    // empties it between flash spans, into its own buffers and the OTA
    // task's queue (the window keeps room there).
    const pool = Math.min(params.controllerRxBuffers, params.hostRxBuffers);
    for (const payload of payloads) {
      // A full pool holds the PDU back until the span that fills it ends.
      let notBefore = 0;
      while (timing.rx.length > 0 && timing.rx[0] <= Math.max(arrival, timing.air.busyUntil)) timing.rx.shift();
      if (timing.rx.length >= pool) notBefore = timing.rx.shift()!;
      arrival = timing.air.send(op.issuedAt, payload, notBefore);
      while (timing.spans.length > 0 && timing.spans[0][1] <= arrival) timing.spans.shift();
      const span = timing.spans.find(([s, e]) => s < arrival && arrival < e);
      if (span) timing.rx.push(span[1]);
    }
    // The OTA task does each request's flash work in order, after the one before.
    let t = Math.max(arrival, timing.hostFreeAt);
    for (const ms of flashSpans(model.flash, op.erases, op.pages, op.blocks)) {
      timing.spans.push([t, t + ms]);
      t += ms;
    }
    timing.hostFreeAt = t;

    const address = link.device.address;
    const back = (readyAt: number, attBytes: number, fn: () => void) => {
      let t = timing.air.peripheralDelivery(readyAt, Math.min(attBytes + L2CAP_HEADER, params.dataLength));
      // Further PDUs of a long value, and one PDU after the other.
      t += (pduPayloads(params, attBytes).length - 1) * pduMs(params.phy, params.dataLength);
      t = Math.max(t, timing.peripheralAt + pduMs(params.phy, Math.min(attBytes + L2CAP_HEADER, params.dataLength)));
      timing.peripheralAt = t;
      this.at(t, fn);
    };
    if (op.kind === 'write-cmd') {
      // noble calls back once the value is handed to the controller.
      if (respond) this.at(op.issuedAt, respond);
    } else if (respond) {
      // A response goes at the earliest in the event after the request's.
      back(Math.max(timing.hostFreeAt, timing.air.anchorAtOrAfter(arrival + 1e-6)), responseBytes, respond);
    }
    for (const n of op.notifications) {
      const chr = link.device.characteristics.find((c) => c.uuid === n.uuid);
      if (!chr) continue;
      // Sent before any later disconnect, which is timed after it.
      back(timing.hostFreeAt, ATT_HEADER + n.data.length, () => {
        this.emit('air-notify', address, n.uuid, n.data);
        this.emit('read', peripheralId(address), nobleUuid(chr.service), nobleUuid(n.uuid), n.data, true);
      });
    }
    this.settled();
  }

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
