/**
 * Virtual time for the virtual radio: the benchmark's scheduler
 * (lib/virtual/scheduler.ts has the interface and real time). With a
 * preset of the link model (lib/virtual/link-model.ts), every result goes
 * to noble at the moment the model says a real link and flash would
 * produce it, in that order, one at a time, once the devices answered all
 * that is under way; `now` is that moment. A whole update then gives the
 * same figures on any machine, at the speed of the host, not of the air.
 *
 * Also here, the parts of the model only the benchmark and its checks use:
 * the flash's datasheet maximum, a preset's variants, and the spans in
 * which flash work keeps the device's host from running.
 */
import { AirSchedule, FlashParameters, L2CAP_HEADER, LinkParameters, pduMs, pduPayloads, Preset } from '../lib/virtual/link-model';
import type { DeviceClock, PendingRequest, RequestKind, Scheduler } from '../lib/virtual/scheduler';
import type { VirtualEsp32 } from '../lib/virtual/virtual-device';

/** W25Q32JV's datasheet maximum (rev. H): tSE 400 ms, tBE2 2,000 ms, tPP 3 ms (a worn or hot part may take this long). */
export const W25Q32JV_MAX: FlashParameters = { sectorEraseMs: 400, blockEraseMs: 2000, pageProgramMs: 3 };

/** A preset with another flash (e.g. W25Q32JV_MAX) or link (e.g. another request's negotiate()). */
export function withModel(p: Preset, change: { flash?: FlashParameters; link?: Partial<LinkParameters>; suffix?: string }): Preset {
  const link = { ...p.link, ...change.link };
  return { ...p, name: p.name + (change.suffix ?? ''), link, flash: change.flash ?? p.flash };
}

/**
 * ESP-IDF writes flash in chunks of CONFIG_SPI_FLASH_WRITE_CHUNK_SIZE, with
 * the cache off for a whole chunk, and erases one sector or block at a
 * time: these are the spans in which the host cannot run. Our
 * sdkconfig.defaults sets the chunk to one 256-byte page (ESP-IDF's default
 * is 8,192 bytes): with the slot erased while idle, page programs are the
 * only flash work left on a transfer's path, and at the datasheet's 3 ms
 * per page an 8 KB chunk (96 ms) would fill the controller's pool and
 * stall the link every time.
 */
export const FLASH_WRITE_CHUNK_PAGES = 256 / 256;

/**
 * Flash work as the spans in which the cache is off and the host cannot
 * run (FLASH_WRITE_CHUNK_PAGES): each erase, then page programs a write
 * chunk at a time. Between two spans the host runs and empties the
 * controller's pool.
 */
export function flashSpans(flash: FlashParameters, sectorErases: number, pages: number, blockErases = 0): number[] {
  const spans: number[] = [];
  for (let i = 0; i < blockErases; i++) spans.push(flash.blockEraseMs);
  for (let i = 0; i < sectorErases; i++) spans.push(flash.sectorEraseMs);
  for (let left = pages; left > 0; left -= FLASH_WRITE_CHUNK_PAGES) spans.push(Math.min(left, FLASH_WRITE_CHUNK_PAGES) * flash.pageProgramMs);
  return spans;
}

interface Delivery {
  t: number;
  seq: number;
  fn: () => void;
}

export class VirtualTime implements Scheduler {
  private clock = 0;
  private seq = 0;
  /** Answers under way: nothing is delivered until they are in (one could be earlier). */
  private outstanding = 0;
  private pumping = false;
  private readonly deliveries: Delivery[] = [];

  constructor(readonly preset: Preset) {}

  get now(): number {
    return this.clock;
  }

  /** n request/response round trips: a request in one event, its response in the next. */
  roundTrips(n: number): number {
    return n * 2 * this.preset.link.intervalMs;
  }

  at(t: number, fn: () => void): void {
    this.deliveries.push({ t: Math.max(t, this.clock), seq: this.seq++, fn });
    this.kick();
  }

  local(fn: () => void, from = this.clock): void {
    this.at(from + this.roundTrips(1), fn);
  }

  hold(): void {
    this.outstanding++;
  }

  release(): void {
    this.outstanding--;
    this.kick();
  }

  attach(device: VirtualEsp32): DeviceClock {
    return new ModelledDevice(this, device);
  }

  private kick(): void {
    if (this.pumping) return;
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
}

/** A request to the device under way, with what it caused. */
interface TimedOp extends PendingRequest {
  kind: RequestKind;
  issuedAt: number;
  /** The ATT PDU the central sends (header included). */
  attBytes: number;
  notifications: Array<{ attBytes: number; deliver: () => void }>;
  erases: number;
  pages: number;
  blocks: number;
}

/** One connection's air, the device's host, and the requests it is answering. */
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

/** A device on the modelled link: its flash work and replies time its requests. */
class ModelledDevice implements DeviceClock {
  private timing?: LinkTiming;

  private readonly onFlash = (erases: number, pages: number, blocks: number): void => {
    const op = this.timing?.ops[0];
    if (op) {
      op.erases += erases;
      op.pages += pages;
      op.blocks += blocks;
    }
  };

  /**
   * The reply ends what belongs to a request: later notifications and
   * flash work are the next one's, whenever its promise settles.
   */
  private readonly onReply = (request: string): void => {
    const op = this.timing?.ops[0];
    if (op && op.kind === request) this.timing!.ops.shift();
  };

  constructor(
    private readonly time: VirtualTime,
    private readonly device: VirtualEsp32,
  ) {
    device.on('flash', this.onFlash);
    device.on('reply', this.onReply);
  }

  connected(): void {
    const now = this.time.now;
    this.timing = { air: new AirSchedule(this.time.preset.link), hostFreeAt: now, peripheralAt: now, rx: [], spans: [], ops: [] };
  }

  /** The model sets the pace: requests go at once. */
  send(_attBytes: number, _withResponse: boolean, send: () => void): void {
    send();
  }

  pace(): void {}

  request(kind: RequestKind, attBytes: number): PendingRequest {
    const op: TimedOp = {
      kind,
      issuedAt: this.time.now,
      attBytes,
      notifications: [],
      erases: 0,
      pages: 0,
      blocks: 0,
      answered: (responseBytes, respond) => this.answered(op, responseBytes, respond),
    };
    this.time.hold();
    this.timing?.ops.push(op);
    return op;
  }

  notification(attBytes: number, deliver: () => void): void {
    const op = this.timing?.ops[0];
    if (op)
      op.notifications.push({ attBytes, deliver }); // timed with its request
    else this.time.at(this.time.now, deliver);
  }

  /**
   * After what the device sent before it (e.g. the answer before a
   * restart), whose request may still be settling: timed once that is done.
   */
  disconnected(deliver: () => void): void {
    this.time.hold();
    setImmediate(() => {
      const timing = this.timing;
      this.time.at(timing ? Math.max(this.time.now, timing.peripheralAt, timing.hostFreeAt) : this.time.now, deliver);
      this.time.release();
    });
  }

  detach(): void {
    this.device.off('flash', this.onFlash);
    this.device.off('reply', this.onReply);
  }

  /**
   * The device answered op: its PDUs cross the air (waiting for room in
   * the device's buffers), the device's host runs it (and its flash work),
   * then the response (`respond`, an ATT PDU of responseBytes) and the
   * notifications it caused come back.
   */
  private answered(op: TimedOp, responseBytes: number, respond: (() => void) | undefined): void {
    const timing = this.timing;
    if (!timing) {
      respond?.();
      for (const n of op.notifications) n.deliver();
      this.time.release();
      return;
    }
    const pending = timing.ops.indexOf(op);
    if (pending >= 0) timing.ops.splice(pending, 1); // a lost request: no reply came
    const { link: params, flash } = this.time.preset;
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
    for (const ms of flashSpans(flash, op.erases, op.pages, op.blocks)) {
      timing.spans.push([t, t + ms]);
      t += ms;
    }
    timing.hostFreeAt = t;

    const back = (readyAt: number, attBytes: number, fn: () => void) => {
      let t = timing.air.peripheralDelivery(readyAt, Math.min(attBytes + L2CAP_HEADER, params.dataLength));
      // Further PDUs of a long value, and one PDU after the other.
      t += (pduPayloads(params, attBytes).length - 1) * pduMs(params.phy, params.dataLength);
      t = Math.max(t, timing.peripheralAt + pduMs(params.phy, Math.min(attBytes + L2CAP_HEADER, params.dataLength)));
      timing.peripheralAt = t;
      this.time.at(t, fn);
    };
    if (op.kind === 'write-cmd') {
      // noble calls back once the value is handed to the controller.
      if (respond) this.time.at(op.issuedAt, respond);
    } else if (respond) {
      // A response goes at the earliest in the event after the request's.
      back(Math.max(timing.hostFreeAt, timing.air.anchorAtOrAfter(arrival + 1e-6)), responseBytes, respond);
    }
    // Sent before any later disconnect, which is timed after it.
    for (const n of op.notifications) back(timing.hostFreeAt, n.attBytes, n.deliver);
    this.time.release();
  }
}
