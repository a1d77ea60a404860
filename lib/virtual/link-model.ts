/**
 * A model of the BLE link and of the ESP32's flash, in virtual time
 * (docs/PERFORMANCE.md, with the source of every figure).
 *
 * The link: connection events every interval; in an event the central and
 * the peripheral exchange PDUs back to back (central PDU, T_IFS, peripheral
 * PDU, T_IFS) for as long as one side has data and the event length
 * allows; a PDU that finds the event closed waits for the next anchor. An
 * ATT value travels as an L2CAP SDU cut into PDUs of the data length.
 * The device: one host that runs every request in order and runs no code
 * while its flash erases or programs; PDUs that arrive meanwhile wait in
 * the controller's receive buffers, and when those are full the central's
 * PDUs are not acknowledged and the link stalls.
 *
 * Nothing here measures wall-clock time: the same trace gives the same
 * figures on any machine.
 */

export type Phy = '1M' | '2M';

export interface LinkParameters {
  /** Connection interval in ms (a multiple of 1.25 ms, 7.5 ms at the least). */
  intervalMs: number;
  phy: Phy;
  /** LL payload bytes per data PDU: 27 without Data Length Extension, up to 251 with it. */
  dataLength: number;
  /** ATT MTU both sides agreed on. */
  mtu: number;
  /** Most central data PDUs per connection event (the central's controller); Infinity: as many as fit. */
  maxPdusPerEvent: number;
  /** How long a connection event may last, in ms (at most the interval). */
  eventLengthMs: number;
  /** PDUs the device holds while its host runs no code (HCI transport buffers). */
  rxBuffers: number;
}

export interface FlashParameters {
  /** 4 KB sector erase, typical (ms). */
  sectorEraseMs: number;
  /** 64 KB block erase, typical (ms). */
  blockEraseMs: number;
  /** 256-byte page program, typical (ms). */
  pageProgramMs: number;
}

export interface Preset {
  name: string;
  description: string;
  link: LinkParameters;
  flash: FlashParameters;
}

/** Winbond W25Q32JV datasheet (rev. H), AC characteristics, typical: tSE 45 ms, tBE2 150 ms, tPP 0.4 ms. */
export const W25Q32JV: FlashParameters = { sectorEraseMs: 45, blockEraseMs: 150, pageProgramMs: 0.4 };

/**
 * Buffers from the controller to the host: our firmware's
 * CONFIG_BT_NIMBLE_TRANSPORT_ACL_FROM_LL_COUNT (firmware/sdkconfig.defaults;
 * ESP-IDF's default is 24), and on the targets with the 2M PHY
 * (firmware/sdkconfig.defaults.esp32s3 and its siblings), where the link
 * fills them twice as fast.
 */
export const ESP_RX_BUFFERS = 64;
export const ESP_2M_RX_BUFFERS = 128;

function espPreset(name: string, description: string, phy: Phy, intervalMs: number, mtu: number): Preset {
  const rxBuffers = phy === '2M' ? ESP_2M_RX_BUFFERS : ESP_RX_BUFFERS;
  return {
    name,
    description,
    link: { intervalMs, phy, dataLength: 251, mtu, maxPdusPerEvent: Infinity, eventLengthMs: intervalMs, rxBuffers },
    flash: W25Q32JV,
  };
}

/** The devices people own, with a central that lets events run as long as the interval. */
export const PRESETS: Preset[] = [
  espPreset('esp32-1m-247-7.5', 'ESP32, 1M PHY, DLE 251, MTU 247, 7.5 ms', '1M', 7.5, 247),
  espPreset('esp32-1m-517-7.5', 'ESP32, 1M PHY, DLE 251, MTU 517, 7.5 ms', '1M', 7.5, 517),
  espPreset('esp32-1m-517-15', 'ESP32, 1M PHY, DLE 251, MTU 517, 15 ms', '1M', 15, 517),
  espPreset('esp32-1m-517-30', 'ESP32, 1M PHY, DLE 251, MTU 517, 30 ms', '1M', 30, 517),
  espPreset('esp32s3-2m-517-7.5', 'ESP32-S3 / C3 / C6, 2M PHY, DLE 251, MTU 517, 7.5 ms', '2M', 7.5, 517),
  espPreset('esp32s3-2m-517-15', 'ESP32-S3 / C3 / C6, 2M PHY, DLE 251, MTU 517, 15 ms', '2M', 15, 517),
  {
    name: 'phone-30-185',
    description: 'phone-like central: 1M PHY, DLE 251, MTU 185, 30 ms, 6 PDUs per event',
    link: { intervalMs: 30, phy: '1M', dataLength: 251, mtu: 185, maxPdusPerEvent: 6, eventLengthMs: 30, rxBuffers: ESP_RX_BUFFERS },
    flash: W25Q32JV,
  },
];

export function preset(name: string): Preset {
  const p = PRESETS.find((x) => x.name === name);
  if (!p) throw new RangeError(`no link preset "${name}"; the presets are ${PRESETS.map((x) => x.name).join(', ')}`);
  return p;
}

// --- air time (Bluetooth Core 5.x, Vol 6, Part B, 2.1 and 4.1) ----------------

const T_IFS_MS = 0.15;
/** L2CAP basic header (length, channel). */
export const L2CAP_HEADER = 4;
/** ATT Write Command / Request / Notification header (opcode, handle). */
export const ATT_HEADER = 3;

/** Microseconds per byte on air. */
function byteMs(phy: Phy): number {
  return phy === '2M' ? 0.004 : 0.008;
}

/** One data PDU on air: preamble (1 byte on 1M, 2 on 2M), access address 4, header 2, payload, CRC 3. */
export function pduMs(phy: Phy, payload: number): number {
  const preamble = phy === '2M' ? 2 : 1;
  return (preamble + 4 + 2 + payload + 3) * byteMs(phy);
}

/** A central PDU with this payload, answered by an empty one. */
export function exchangeMs(link: LinkParameters, payload: number): number {
  return pduMs(link.phy, payload) + T_IFS_MS + pduMs(link.phy, 0) + T_IFS_MS;
}

/** LL payload sizes of one ATT value of `attBytes` (header included) as an L2CAP SDU. */
export function pduPayloads(link: LinkParameters, attBytes: number): number[] {
  let left = attBytes + L2CAP_HEADER;
  const out: number[] = [];
  while (left > 0) {
    const n = Math.min(left, link.dataLength);
    out.push(n);
    left -= n;
  }
  return out;
}

/** Flash time of sector erases, page programs and block erases. */
export function flashMs(flash: FlashParameters, sectorErases: number, pages: number, blockErases = 0): number {
  return sectorErases * flash.sectorEraseMs + pages * flash.pageProgramMs + blockErases * flash.blockEraseMs;
}

/**
 * The central's side of the air: PDUs go out back to back inside
 * connection events, in the order they are queued.
 */
export class AirSchedule {
  /** End of the last central PDU's exchange. */
  private freeAt = 0;
  private eventStart = -1;
  private pdusInEvent = 0;

  constructor(private readonly link: LinkParameters) {}

  get busyUntil(): number {
    return this.freeAt;
  }

  /** The first connection event anchor at or after t. */
  anchorAtOrAfter(t: number): number {
    const i = this.link.intervalMs;
    return Math.ceil(t / i - 1e-9) * i;
  }

  /**
   * Sends one central PDU, ready at `readyAt` and not before `notBefore`
   * (the device's buffers); returns when its exchange ends.
   */
  send(readyAt: number, payload: number, notBefore = 0): number {
    const dur = exchangeMs(this.link, payload);
    let t = Math.max(readyAt, notBefore, this.freeAt);
    for (;;) {
      const anchor = Math.floor(t / this.link.intervalMs + 1e-9) * this.link.intervalMs;
      // Inside an event, a PDU follows the previous one at once; after a
      // pause the event is over, and only the next anchor opens one.
      const backToBack = this.eventStart === anchor && Math.abs(t - this.freeAt) < 1e-9;
      const atAnchor = Math.abs(t - anchor) < 1e-9;
      const inEvent = t + dur <= anchor + this.link.eventLengthMs + 1e-9;
      const room = this.eventStart !== anchor || this.pdusInEvent < this.link.maxPdusPerEvent;
      if ((backToBack || atAnchor) && inEvent && room) {
        if (this.eventStart !== anchor) {
          this.eventStart = anchor;
          this.pdusInEvent = 0;
        }
        this.pdusInEvent++;
        this.freeAt = t + dur;
        return this.freeAt;
      }
      t = this.anchorAtOrAfter(t + 1e-6);
    }
  }

  /**
   * When a peripheral PDU ready at `readyAt` reaches the central: in the
   * exchange under way, if the central is sending, else at the next anchor
   * (the peripheral speaks only when spoken to).
   */
  peripheralDelivery(readyAt: number, payload: number): number {
    const dur = pduMs(this.link.phy, 0) + T_IFS_MS + pduMs(this.link.phy, payload);
    if (readyAt < this.freeAt) return readyAt + exchangeMs(this.link, this.link.dataLength);
    return this.anchorAtOrAfter(readyAt) + dur;
  }
}

/**
 * The bound of an update: the larger of the link's pure transfer time
 * (the image in ATT Write Commands back to back, each the largest that
 * fills whole PDUs, with no protocol of ours) and the flash's (64 KB block erases where they fit,
 * 4 KB sectors for the rest, and every page programmed).
 */
export function boundMs(p: Preset, imageBytes: number): { linkMs: number; flashMs: number; boundMs: number } {
  const air = new AirSchedule(p.link);
  // The largest value that fills whole PDUs (as the client sends), else MTU - 3.
  const limit = p.link.mtu - ATT_HEADER;
  const perPdu = Math.floor((limit + ATT_HEADER + L2CAP_HEADER) / p.link.dataLength);
  const chunk = perPdu >= 1 ? perPdu * p.link.dataLength - ATT_HEADER - L2CAP_HEADER : limit;
  let end = 0;
  for (let off = 0; off < imageBytes; off += chunk) {
    for (const payload of pduPayloads(p.link, Math.min(chunk, imageBytes - off) + ATT_HEADER)) end = air.send(0, payload);
  }
  const blocks = Math.floor(imageBytes / 65536);
  const sectors = Math.ceil((imageBytes - blocks * 65536) / 4096);
  const flash = blocks * p.flash.blockEraseMs + sectors * p.flash.sectorEraseMs + Math.ceil(imageBytes / 256) * p.flash.pageProgramMs;
  return { linkMs: end, flashMs: flash, boundMs: Math.max(end, flash) };
}
