/**
 * One update of a virtual ESP32 over a modelled link, in virtual time
 * (virtual-time.ts): the real client, the real firmware core, the link and
 * flash of a preset (lib/virtual/link-model.ts). Gives the transfer's
 * modelled time: from the request that opens the transfer (v2 BEGIN, seed
 * REQUEST) to the answer that closes it (END's answer, DONE_ACK), the part
 * the protocols differ in, and the whole update's: from the call to the
 * confirmed result.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Delivery } from '../lib/client/delivery';
import { BleOtaClient } from '../lib/client/ota-client';
import { BeginFlag, Command, Control, OTA_COMMAND_UUID, OTA_CONTROL_UUID } from '../lib/protocol/constants';
import { boundMs, Preset } from '../lib/virtual/link-model';
import { VirtualRadio } from '../lib/virtual/virtual-radio';
import { VirtualTime } from './virtual-time';

export interface ModelledRun {
  preset: string;
  protocol: 'v2' | 'seed';
  /** v2 window in bytes (0 for the seed protocol). */
  window: number;
  imageBytes: number;
  /** Modelled transfer time, ms. */
  transferMs: number;
  /** Firmware delivered per second of modelled time, KB/s (1 KB = 1024 bytes). */
  kbPerS: number;
  linkBoundMs: number;
  flashBoundMs: number;
  boundMs: number;
  /** boundMs / transferMs: 1 is as fast as the link and flash allow. */
  ratio: number;
  /** linkBoundMs / transferMs: above 1, firmware arrives faster than the link carries raw bytes (compression). */
  linkRatio: number;
  /** The image went deflated. */
  compressed: boolean;
  packets: number;
  /** Modelled time of the whole update in virtual time: connect, discovery, MTU exchange, authentication, transfer, restart's disconnect, reconnect, confirm. */
  wholeMs: number;
  /** wholeMs plus what virtual time leaves out (END_TO_END): the two scans and the device's boot. */
  endToEndMs: number;
  /** The device had idle time before the update: its slot was erased then, and the bound is the link's and the page programs'. */
  idleErase: boolean;
  /** How the image went (patch or full) and the stream bytes sent. */
  delivery?: Delivery;
}

/**
 * What the virtual time of an update leaves out, and end-to-end times add
 * (assumptions, docs/PERFORMANCE.md):
 * - a scan finds the device within one advertising interval: the firmware
 *   leaves NimBLE's default for connectable advertising (BLE_GAP_ADV_FAST_INTERVAL1,
 *   30-60 ms, plus the Core spec's advDelay of 0-10 ms), and noble scans
 *   continuously (scan window = scan interval, 11.25 ms); 70 ms each, twice
 *   (before the update and after the restart);
 * - the restart: ESP-IDF's bootloader checks the new app's SHA-256 before
 *   starting it, then the app starts NimBLE and advertises; about 1 s (an
 *   assumption: 0.3 to 2 s, depending on the image size, logging and the
 *   chip), not a measured figure.
 */
export const END_TO_END = { scanMs: 70, scans: 2, bootMs: 1000 };

const SLOT_MIN = 0x1e0000;

/**
 * The seed's firmware leaves NimBLE's preferred ATT MTU at ESP-IDF's default,
 * 256 (CONFIG_BT_NIMBLE_ATT_PREFERRED_MTU), and its 512-byte receive buffer
 * could not take more (docs/PROTOCOL.md, the seed protocol): on every preset the seed's
 * protocol runs at an MTU of at most 256, as a seed device would.
 */
export const SEED_DEVICE_MTU = 256;

export async function modelledUpdate(
  preset: Preset,
  image: Buffer,
  options: {
    protocol: 'v2' | 'seed';
    window?: number;
    chipId?: number;
    compress?: boolean;
    /** The device had time with nothing to do before the update (VirtualEsp32.idle()): the firmware erases the slot then. */
    idleErase?: boolean;
    /** The image the device runs before the update, given to the client as its base: a delta update where the device applies patches. */
    baseImage?: Buffer;
    /** false: the full image even where a patch could go. */
    delta?: boolean;
  },
): Promise<ModelledRun> {
  const window = options.protocol === 'v2' ? (options.window ?? 32768) : 0;
  const time = new VirtualTime(preset);
  const radio = new VirtualRadio(preset.link.mtu, {}, time);
  const name = 'modelled';
  const dir = options.baseImage ? mkdtempSync(join(tmpdir(), 'ble-ota-modelled-')) : undefined;
  try {
    let first: string | undefined;
    if (dir && options.baseImage) {
      first = join(dir, 'base.bin');
      writeFileSync(first, options.baseImage);
    }
    const device = await radio.addDevice({
      ...(first ? { image: first } : {}),
      name,
      mtu: options.protocol === 'seed' ? Math.min(preset.link.mtu, SEED_DEVICE_MTU) : preset.link.mtu,
      window: window || undefined,
      slotSize: Math.max(SLOT_MIN, Math.ceil((image.length + 4096) / 4096) * 4096),
      restartDelayMs: 0,
      flashEvents: true,
      chipId: options.chipId,
    });
    // Before the first connection: idle time, which virtual time does not count.
    if (options.idleErase) await device.idle();
    const b = radio.bindings;
    const callAt = time.now;
    let started: number | undefined;
    let ended: number | undefined;
    b.on('air-write', (_a: string, uuid: string, data: Buffer) => {
      if (started !== undefined) return;
      if (options.protocol === 'v2' && uuid === OTA_COMMAND_UUID && data[0] === Command.BEGIN) started = time.now;
      if (options.protocol === 'seed' && uuid === OTA_CONTROL_UUID && data[0] === Control.REQUEST) started = time.now;
    });
    b.on('air-notify', (_a: string, uuid: string, data: Buffer) => {
      if (ended !== undefined) return;
      if (options.protocol === 'v2' && uuid === OTA_COMMAND_UUID && data[0] === (Command.END | 0x80)) ended = time.now;
      if (options.protocol === 'seed' && uuid === OTA_CONTROL_UUID && data[0] === Control.DONE_ACK) ended = time.now;
    });
    // Real-time timeouts must never end a run that virtual time makes long.
    const client = new BleOtaClient({
      noble: radio.noble,
      timeouts: { scanMs: 10_000, connectMs: 10_000, gattMs: 60_000, verifyMs: 60_000, restartMs: 10_000 },
    });
    let compressed = false;
    b.on('air-write', (_a: string, uuid: string, data: Buffer) => {
      if (uuid === OTA_COMMAND_UUID && data[0] === Command.BEGIN && data.length >= 41) compressed = (data.readUInt16LE(39) & BeginFlag.DEFLATE) !== 0;
    });
    const result = await client.update({
      target: { name },
      image,
      protocol: options.protocol === 'seed' ? 'seed' : 'auto',
      confirm: 'device',
      compress: options.compress ?? false,
      ...(options.baseImage ? { baseImage: options.baseImage } : {}),
      ...(options.delta === false ? { delta: false } : {}),
    });
    if (started === undefined || ended === undefined) throw new Error('the transfer was not seen on the modelled link');
    const transferMs = ended - started;
    const bound = boundMs(preset, image.length, options.idleErase ?? false);
    return {
      preset: preset.name,
      protocol: options.protocol,
      window,
      imageBytes: image.length,
      transferMs,
      kbPerS: image.length / 1024 / (transferMs / 1000),
      linkBoundMs: bound.linkMs,
      flashBoundMs: bound.flashMs,
      boundMs: bound.boundMs,
      ratio: bound.boundMs / transferMs,
      linkRatio: bound.linkMs / transferMs,
      compressed,
      packets: result.packets,
      wholeMs: time.now - callAt,
      endToEndMs: time.now - callAt + END_TO_END.scans * END_TO_END.scanMs + END_TO_END.bootMs,
      idleErase: options.idleErase ?? false,
      delivery: result.delivery,
    };
  } finally {
    await radio.stopAll();
    if (dir) rmSync(dir, { recursive: true, force: true });
  }
}
