/**
 * A model of the BLE link and of the ESP32's flash, in virtual time
 * (docs/PERFORMANCE.md, with the source of every figure).
 *
 * The link: connection events every interval; in an event the central and
 * the peripheral exchange PDUs back to back (central PDU, T_IFS, peripheral
 * PDU, T_IFS) for as long as one side has data and the event length
 * allows; a PDU that finds the event closed waits for the next anchor. An
 * ATT value travels as an L2CAP SDU cut into PDUs of the data length.
 * The device: one host that runs every request in order; while its flash
 * erases or programs (cache off) no code from flash runs, so PDUs that
 * arrive meanwhile wait in the controller's own small pool, not in the
 * host's buffers, and when that pool is full the central's PDUs are not
 * acknowledged and the link stalls. Between flash operations the host
 * takes what the pool holds.
 *
 * A preset is a real setup: the central's side (Central), the chip's
 * (Chip), and the link negotiate() gives for the firmware's request
 * (FIRMWARE_LINK_REQUEST).
 *
 * The virtual radio uses the presets, negotiate() (to answer the
 * firmware's link requests) and boundMs() (to pace a device declared
 * slow); the benchmark plays the whole model in virtual time
 * (bench/virtual-time.ts).
 *
 * Nothing here measures wall-clock time: the same trace gives the same
 * figures on any machine.
 */

export type Phy = '1M' | '2M';

/** The link a connection runs on: what the central and the device negotiated (negotiate()). */
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
  /**
   * Time the central's controller keeps free at the end of an event (ms):
   * an exchange that would end later waits for the next anchor.
   */
  eventMarginMs: number;
  /**
   * PDUs the device's controller holds in its own pool: the only room
   * while the flash works, when the host (running from flash, cache off)
   * cannot take any.
   */
  controllerRxBuffers: number;
  /** The host's buffers for data from the controller (CONFIG_BT_NIMBLE_TRANSPORT_ACL_FROM_LL_COUNT). */
  hostRxBuffers: number;
  /** Peripheral latency (connection events the device may skip). */
  latency: number;
  /** Supervision timeout, ms: a link silent this long is lost. */
  supervisionTimeoutMs: number;
}

export interface FlashParameters {
  /** 4 KB sector erase (ms). */
  sectorEraseMs: number;
  /** 64 KB block erase (ms). */
  blockEraseMs: number;
  /** 256-byte page program (ms). */
  pageProgramMs: number;
}

/**
 * Winbond W25Q32JV datasheet (rev. H), AC characteristics, typical: tSE 45
 * ms, tBE2 150 ms, tPP 0.4 ms. The benchmark also runs the maximum
 * (bench/virtual-time.ts W25Q32JV_MAX).
 */
export const W25Q32JV: FlashParameters = { sectorEraseMs: 45, blockEraseMs: 150, pageProgramMs: 0.4 };

// --- the firmware's request, the centrals, the chips ---------------------------

/** What a peripheral asks of the link once connected. */
export interface LinkRequest {
  /** ATT MTU it offers. */
  mtu: number;
  /** LL data length it asks for (LL_LENGTH_REQ). */
  dataLength: number;
  /** PHYs it prefers, best first (LL_PHY_REQ); the chip must have them. */
  phys: Phy[];
  /** Connection interval range it asks for (ms). */
  intervalMs: { min: number; max: number };
  latency: number;
  supervisionTimeoutMs: number;
}

/**
 * The link this package's firmware asks for. It must match what the
 * firmware requests on connection (firmware/main: the data length, the
 * preferred PHY and the connection parameter update): change both
 * together. Data length 251 (the largest LL payload); the 2M PHY where the
 * chip has it; a 7.5-15 ms interval for the transfer, no latency; a
 * supervision timeout longer than the worst flash stall (a 64 KB block
 * erase takes up to 2 s, W25Q32JV datasheet tBE2 max), so 5 s. The MTU is
 * CONFIG_BT_NIMBLE_ATT_PREFERRED_MTU in firmware/sdkconfig.defaults.
 */
export const FIRMWARE_LINK_REQUEST: LinkRequest = {
  mtu: 517,
  dataLength: 251,
  phys: ['2M', '1M'],
  intervalMs: { min: 7.5, max: 15 },
  latency: 0,
  supervisionTimeoutMs: 5000,
};

/** What a central offers and accepts: its side of a connection. */
export interface Central {
  name: string;
  description: string;
  /** ATT MTU it offers and accepts at most. */
  mtu: number;
  /** Largest LL data length it sends and takes when the peripheral asks (27: no Data Length Extension). */
  maxDataLength: number;
  /** PHYs it accepts for a connection. */
  phys: Phy[];
  /** Interval it connects with, and keeps when it refuses the peripheral's request (ms). */
  connectIntervalMs: number;
  supervisionTimeoutMs: number;
  /** Whether it grants a peripheral's interval request (ms): a refused request leaves connectIntervalMs. */
  grantsInterval(request: { min: number; max: number }): boolean;
  /** The interval it picks in a granted range. */
  intervalChoice: 'longest' | 'shortest';
  /** Most of its data PDUs per connection event (Infinity: as many as fit). */
  maxPdusPerEvent: number;
  /** Time its controller keeps free at the end of each event (ms). */
  eventMarginMs: number;
  /** Where each figure comes from. */
  sources: string[];
}

/** The device's side: what the chip's controller and our firmware's sdkconfig give. */
export interface Chip {
  name: string;
  phys: Phy[];
  controllerRxBuffers: number;
  hostRxBuffers: number;
  sources: string[];
}

/**
 * Buffers from the controller to the host: our firmware's
 * CONFIG_BT_NIMBLE_TRANSPORT_ACL_FROM_LL_COUNT (firmware/sdkconfig.defaults;
 * ESP-IDF's default is 24), and on the targets with the 2M PHY
 * (firmware/sdkconfig.defaults.esp32s3 and its siblings).
 */
export const ESP_RX_BUFFERS = 64;
export const ESP_2M_RX_BUFFERS = 128;

/**
 * The controller's own receive pool. The ESP32's and the S3 / C3's
 * controllers have no option for it (the ESP32's help for
 * CONFIG_BTDM_CTRL_BLE_MAX_CONN gives 1 KB of DRAM per connection, about
 * four 251-byte PDUs). An assumption: 10, somewhere between 4 and 12. (The
 * ESP32-C6 / H2 controller, which no preset models, takes its pool size
 * from CONFIG_BT_NIMBLE_TRANSPORT_ACL_FROM_LL_COUNT in a NimBLE build, ESP-IDF
 * components/bt/controller/esp32c6/esp_bt_cfg.h; its CONFIG_BT_LE_ACL_BUF_COUNT,
 * default 10, applies only without NimBLE.)
 */
export const CONTROLLER_RX_BUFFERS = 10;

/**
 * The end-of-event margin: an assumption, not a measured figure.
 * Controllers close an event before the next one's anchor to schedule the
 * radio; 150 µs (one T_IFS) is the least, up to about 1 ms.
 */
export const EVENT_MARGIN_MS = 0.15;

export const ESP32: Chip = {
  name: 'ESP32',
  phys: ['1M'],
  controllerRxBuffers: CONTROLLER_RX_BUFFERS,
  hostRxBuffers: ESP_RX_BUFFERS,
  sources: [
    'Bluetooth 4.2 (ESP32 datasheet): Data Length Extension, no 2M PHY',
    'host buffers: CONFIG_BT_NIMBLE_TRANSPORT_ACL_FROM_LL_COUNT=64, firmware/sdkconfig.defaults',
    'controller pool: assumption 10 (4-12): ESP-IDF documents none for the ESP32 (CONFIG_BTDM_CTRL_BLE_MAX_CONN: 1 KB DRAM per connection)',
  ],
};

export const ESP32_S3: Chip = {
  name: 'ESP32-S3 / C3',
  phys: ['1M', '2M'],
  controllerRxBuffers: CONTROLLER_RX_BUFFERS,
  hostRxBuffers: ESP_2M_RX_BUFFERS,
  sources: [
    'Bluetooth 5 controllers with LE 2M PHY (ESP32-S3, C3 datasheets)',
    'host buffers: CONFIG_BT_NIMBLE_TRANSPORT_ACL_FROM_LL_COUNT=128, firmware/sdkconfig.defaults.esp32s3 and siblings',
    'controller pool: assumption 10 (4-12), as the ESP32: ESP-IDF documents none for the S3 / C3 controller',
  ],
};

const anyInterval = (): boolean => true;

/** @abandonware/noble 1.9.2 on Linux, HCI socket bindings, a Bluetooth 5 adapter with Data Length Extension. */
export const LINUX_NOBLE: Central = {
  name: 'linux-noble',
  description: 'Linux gateway, noble 1.9.2 (HCI socket), Bluetooth 5 adapter',
  mtu: 256,
  maxDataLength: 251,
  phys: ['1M', '2M'],
  connectIntervalMs: 22.5,
  supervisionTimeoutMs: 420,
  grantsInterval: anyInterval,
  intervalChoice: 'longest',
  maxPdusPerEvent: Infinity,
  eventMarginMs: EVENT_MARGIN_MS,
  sources: [
    "MTU 256: noble's lib/hci-socket/gatt.js asks for and answers 256 (_desired_mtu)",
    'connects with 7.5-22.5 ms, latency 0, supervision timeout 420 ms (lib/hci-socket/hci.js createLeConn defaults 0x0006-0x0012, 0x002a)',
    "grants the peripheral's L2CAP Connection Parameter Update Request as asked (lib/hci-socket/bindings.js onConnectionParameterUpdateRequest: LE Connection Update with its range, CE length 0)",
    "picks the longest interval of a range: an assumption (the central's controller chooses; Bluetooth Core 5.x Vol 4 Part E 7.8.18)",
    "data length: noble never sets it; the peripheral's LL_LENGTH_REQ (Core Vol 6 Part B 5.1.9) gets 251 from a Bluetooth 4.2+ adapter",
    "2M PHY: noble's default (legacy) path sets no PHY preference, so a Bluetooth 5 adapter answers the peripheral's LL_PHY_REQ with 2M; not so in noble's extended mode (LE Set PHY 1M + Coded), nor on kernels before the December 2022 patch 'Bluetooth: Enable all supported LE PHY by default' without `btmgmt phy` when the kernel owns the adapter",
    'no packets-per-event cap beyond the event: an assumption (none documented)',
  ],
};

/** The same with a Bluetooth 4.0 / 4.1 adapter: no Data Length Extension (a 4.2 feature). */
export const LINUX_NOBLE_BT41: Central = {
  ...LINUX_NOBLE,
  name: 'linux-noble-bt41',
  description: 'Linux gateway, noble 1.9.2 (HCI socket), Bluetooth 4.0 / 4.1 adapter (no DLE)',
  maxDataLength: 27,
  phys: ['1M'],
  sources: [
    ...LINUX_NOBLE.sources.filter((s) => !s.startsWith('data length') && !s.startsWith('2M')),
    "Data Length Extension and 2M PHY came with Bluetooth 4.2 and 5.0: a 4.0 / 4.1 adapter (e.g. the Raspberry Pi 3 B's) carries 27-byte PDUs on 1M",
  ],
};

/**
 * A phone-like central, after Apple's Accessory Design Guidelines
 * (Bluetooth LE connection parameters): it grants a request only with an
 * Interval Min of 15 ms or more and an Interval Max at least 15 ms above it.
 */
export const PHONE_LIKE: Central = {
  name: 'phone-like',
  description: 'phone-like central (iOS rules)',
  mtu: 185,
  maxDataLength: 251,
  phys: ['1M', '2M'],
  connectIntervalMs: 30,
  supervisionTimeoutMs: 2000,
  grantsInterval: (r) => r.min >= 15 && r.max >= r.min + 15,
  intervalChoice: 'longest',
  maxPdusPerEvent: 6,
  eventMarginMs: EVENT_MARGIN_MS,
  sources: [
    'ATT MTU 185: what iOS offers (widely reported; an assumption)',
    "interval grant rule: Apple Accessory Design Guidelines, Bluetooth LE connection parameters (Interval Min >= 15 ms, Interval Max >= Interval Min + 15 ms): the firmware's 7.5-15 ms is refused",
    'connects at 30 ms, 2 s supervision timeout: assumptions (commonly observed)',
    'at most 6 data PDUs per event: an assumption standing for phone centrals, which cap packets per event (4 to 7 reported); not a measured figure',
  ],
};

/** An ESP32 running NimBLE as the central (ESP32-to-ESP32): the ideal link. */
export const ESP32_CENTRAL: Central = {
  name: 'esp32-central',
  description: 'ESP32 NimBLE central',
  mtu: 517,
  maxDataLength: 251,
  phys: ['1M', '2M'],
  connectIntervalMs: 50,
  supervisionTimeoutMs: 4000,
  grantsInterval: anyInterval,
  intervalChoice: 'longest',
  maxPdusPerEvent: Infinity,
  eventMarginMs: EVENT_MARGIN_MS,
  sources: [
    'MTU 517 and data length 251: the largest each side allows (CONFIG_BT_NIMBLE_ATT_PREFERRED_MTU=517 on both)',
    'connects at 30-50 ms (NimBLE BLE_GAP_INITIAL_CONN_ITVL_MIN/MAX); grants any request and takes its longest interval (an assumption)',
    'no packets-per-event cap beyond the event',
  ],
};

/**
 * The link a central and a chip settle on when the device asks for
 * `request`: the smaller MTU and data length, the best PHY all three
 * have, and the requested interval when the central grants it.
 */
export function negotiate(central: Central, chip: Chip, request: LinkRequest = FIRMWARE_LINK_REQUEST): LinkParameters {
  const phy = request.phys.find((p) => chip.phys.includes(p) && central.phys.includes(p)) ?? '1M';
  const granted = request.intervalMs.min <= request.intervalMs.max && central.grantsInterval(request.intervalMs);
  const chosen = central.intervalChoice === 'longest' ? request.intervalMs.max : request.intervalMs.min;
  // Intervals are whole units of 1.25 ms (Core Vol 6 Part B 4.5.1).
  const intervalMs = granted ? Math.floor(chosen / 1.25 + 1e-9) * 1.25 : central.connectIntervalMs;
  return {
    intervalMs,
    phy,
    dataLength: Math.max(27, Math.min(251, central.maxDataLength, request.dataLength)),
    mtu: Math.max(23, Math.min(central.mtu, request.mtu)),
    maxPdusPerEvent: central.maxPdusPerEvent,
    eventLengthMs: intervalMs,
    eventMarginMs: central.eventMarginMs,
    controllerRxBuffers: chip.controllerRxBuffers,
    hostRxBuffers: chip.hostRxBuffers,
    latency: granted ? request.latency : 0,
    supervisionTimeoutMs: granted ? request.supervisionTimeoutMs : central.supervisionTimeoutMs,
  };
}

export interface Preset {
  name: string;
  description: string;
  central: Central;
  chip: Chip;
  /** negotiate(central, chip, FIRMWARE_LINK_REQUEST) */
  link: LinkParameters;
  /** Typical flash timings; the benchmark also runs the datasheet's maximum. */
  flash: FlashParameters;
}

function describe(link: LinkParameters): string {
  const cap = Number.isFinite(link.maxPdusPerEvent) ? `, ${link.maxPdusPerEvent} PDUs per event` : '';
  return `${link.phy} PHY, DLE ${link.dataLength}, MTU ${link.mtu}, ${link.intervalMs} ms${cap}`;
}

function makePreset(name: string, central: Central, chip: Chip, label = central.description): Preset {
  const link = negotiate(central, chip);
  return { name, description: `${label} to ${chip.name}: ${describe(link)}`, central, chip, link, flash: W25Q32JV };
}

/** Real setups, the realistic one first (docs/PERFORMANCE.md has each one's sources). */
export const PRESETS: Preset[] = [
  makePreset('linux-noble-esp32', LINUX_NOBLE, ESP32),
  makePreset('linux-noble-esp32s3', LINUX_NOBLE, ESP32_S3),
  makePreset('linux-noble-bt41-esp32', LINUX_NOBLE_BT41, ESP32),
  makePreset('phone-like-esp32', PHONE_LIKE, ESP32),
  makePreset('esp32-to-esp32', ESP32_CENTRAL, ESP32, 'ideal: ESP32 NimBLE central'),
  makePreset('esp32s3-to-esp32s3', ESP32_CENTRAL, ESP32_S3, 'ideal: ESP32-S3 NimBLE central'),
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
      const inEvent = t + dur <= anchor + this.link.eventLengthMs - this.link.eventMarginMs + 1e-9;
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
 * 4 KB sectors for the rest, and every page programmed). `erased`: the
 * slot was erased before the transfer (the firmware's idle erase), so the
 * flash's part is its page programs alone.
 */
export function boundMs(p: Pick<Preset, 'link' | 'flash'>, imageBytes: number, erased = false): { linkMs: number; flashMs: number; boundMs: number } {
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
  const erases = erased ? 0 : blocks * p.flash.blockEraseMs + sectors * p.flash.sectorEraseMs;
  const flash = erases + Math.ceil(imageBytes / 256) * p.flash.pageProgramMs;
  return { linkMs: end, flashMs: flash, boundMs: Math.max(end, flash) };
}
