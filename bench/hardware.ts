/**
 * The figures issues of speed need from a real ESP32 (`npm run bench --
 * --hardware`, docs/HARDWARE.md, *Measuring a real ESP32*): the link the
 * firmware obtained, and whole updates as a user meets them, from the call
 * to the confirmed result, each beside the bound the obtained link and
 * typical flash timings allow (link-model.ts boundMs):
 *
 *   setup      the first build, whatever the device ran (not a figure)
 *   idle       the second build, raw, after the device had idle time to erase its slot
 *   no-idle    the first build, raw, right after (its slot not erased)
 *   deflated   the second build, DEFLATE chunks, after idle time
 *   patch      the first build as a delta patch against the second, after idle time
 *
 * The two builds are those test:hardware takes (BLE_OTA_HW_IMAGES): two
 * versions of the firmware, so the patch is a version string's change.
 * Writes hardware.json in bench/results/. With `--virtual` the same steps run
 * against a virtual ESP32 and nothing is written (its times are the host's,
 * not a link's: it checks the steps, not the figures).
 */
import { writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { BleOtaClient } from '../lib/client/ota-client';
import type { Target } from '../lib/client/scanner';
import type { LinkReport, UpdateOptions, UpdateResult } from '../lib/client/types';
import { buildAppImage } from '../lib/image/app-image-builder';
import { releaseSystemBluetooth } from '../lib/noble-loader';
import { boundMs, CONTROLLER_RX_BUFFERS, ESP_RX_BUFFERS, LinkParameters, W25Q32JV } from '../lib/virtual/link-model';
import { VirtualRadio } from '../lib/virtual/virtual-radio';
import { hardwareSetup, HW_ENV } from '../test/hardware/config';

/** Seconds the device is left alone before an "after idle time" update: its idle erase of a 1.5 MB slot takes about 4 s at typical timings, 48 s at the datasheet's maximum. */
export const IDLE_ENV = 'BLE_OTA_HW_IDLE_S';
const DEFAULT_IDLE_S = 60;

export interface MeasureTarget {
  client: BleOtaClient;
  target: Target;
  secret?: string;
  /** Two builds of the firmware, different versions: the first, then the second. */
  images: [Buffer, Buffer];
  /** Leaves the device idle long enough to erase its next slot. */
  idle(): Promise<void>;
}

export interface StepFigures {
  step: 'setup' | 'idle' | 'no-idle' | 'deflated' | 'patch';
  version: string;
  method: string;
  skipped: boolean;
  confirmed: boolean;
  imageBytes: number;
  bytesOverAir: number;
  /** From the call to the confirmed result: scan, connect, transfer, restart, reconnect, confirm. */
  endToEndMs: number;
  /** The transfer alone, from the result's rate. */
  transferMs?: number;
  link: LinkReport;
  /** The bound of a raw transfer of the image on the link obtained (typical flash; slot erased before, unless no-idle). */
  boundMs?: number;
  /** boundMs / transferMs, for the raw steps. */
  ofBound?: number;
  /** This process's CPU (user + system) during the call. */
  cpuMs: number;
}

/** The link as the device reported it, in the model's terms; undefined where a field the bound needs is missing. */
export function modelLink(link: LinkReport): LinkParameters | undefined {
  const dataLength = link.dataLength?.toDevice;
  const phy = link.phy?.toDevice;
  if (dataLength === undefined || link.intervalMs === undefined || (phy !== '1M' && phy !== '2M')) return undefined;
  return {
    intervalMs: link.intervalMs,
    phy,
    dataLength,
    mtu: link.mtu,
    // Unknown for a real central: as many as fit, so the bound is the link's best.
    maxPdusPerEvent: Number.POSITIVE_INFINITY,
    eventLengthMs: link.intervalMs,
    eventMarginMs: 0,
    controllerRxBuffers: CONTROLLER_RX_BUFFERS,
    hostRxBuffers: ESP_RX_BUFFERS,
    latency: link.latency ?? 0,
    supervisionTimeoutMs: link.supervisionTimeoutMs ?? 4000,
  };
}

function boundFor(link: LinkReport, imageBytes: number, erased: boolean): number | undefined {
  const params = modelLink(link);
  if (!params) return undefined;
  return boundMs({ link: params, flash: W25Q32JV }, imageBytes, erased).boundMs;
}

async function step(t: MeasureTarget, name: StepFigures['step'], image: Buffer, options: Partial<UpdateOptions>): Promise<StepFigures> {
  const cpu = process.cpuUsage();
  const r: UpdateResult = await t.client.update({ target: t.target, image, secret: t.secret, allowDowngrade: true, ...options });
  const used = process.cpuUsage(cpu);
  const raw = options.compress === false && options.delta === false;
  const transferMs = r.bytesPerSecond > 0 ? (r.bytesSent / r.bytesPerSecond) * 1000 : undefined;
  // The setup step finds the slot as it is: erased or not is not known.
  const bound = raw && !r.skipped && name !== 'setup' ? boundFor(r.link, image.length, name !== 'no-idle') : undefined;
  return {
    step: name,
    version: r.image.version,
    method: r.delivery?.method ?? r.protocol,
    skipped: r.skipped,
    confirmed: r.confirmed,
    imageBytes: image.length,
    bytesOverAir: r.delivery?.bytesOverAir ?? r.bytesSent,
    endToEndMs: r.durationMs,
    transferMs,
    link: r.link,
    boundMs: bound,
    ofBound: bound !== undefined && transferMs ? bound / transferMs : undefined,
    cpuMs: (used.user + used.system) / 1000,
  };
}

/** The five steps, in order; each waits for the one before. */
export async function measureDevice(t: MeasureTarget, log: (line: string) => void = () => undefined): Promise<StepFigures[]> {
  const [first, second] = t.images;
  const steps: StepFigures[] = [];
  const run = async (name: StepFigures['step'], image: Buffer, options: Partial<UpdateOptions>) => {
    const s = await step(t, name, image, options);
    steps.push(s);
    log(describeStep(s));
  };
  await run('setup', first, { compress: false, delta: false });
  await t.idle();
  await run('idle', second, { compress: false, delta: false });
  await run('no-idle', first, { compress: false, delta: false });
  await t.idle();
  await run('deflated', second, { delta: false });
  await t.idle();
  await run('patch', first, { baseImage: second });
  return steps;
}

function describeStep(s: StepFigures): string {
  const l = s.link;
  const link = `MTU ${l.mtu}, DLE ${l.dataLength?.toDevice ?? '?'}, ${l.phy?.toDevice ?? '?'} PHY, ${l.intervalMs ?? '?'} ms`;
  const transfer = s.transferMs === undefined ? '' : `, transfer ${(s.transferMs / 1000).toFixed(2)} s`;
  const bound = s.ofBound === undefined ? '' : ` (${(s.ofBound * 100).toFixed(0)} % of the ${((s.boundMs ?? 0) / 1000).toFixed(2)} s bound)`;
  return (
    `  ${s.step.padEnd(8)} ${s.version.padEnd(10)} ${s.method.padEnd(5)} ${(s.bytesOverAir / 1024).toFixed(1).padStart(7)} KB over the air, ` +
    `call to confirmed ${(s.endToEndMs / 1000).toFixed(2)} s${transfer}${bound}; link ${link}; CPU ${s.cpuMs.toFixed(0)} ms`
  );
}

/** A virtual ESP32 and two 256 KB builds: the steps without hardware (`--virtual`, and the test). */
export async function virtualTarget(): Promise<{ target: MeasureTarget; stop: () => Promise<void> }> {
  const radio = new VirtualRadio();
  const device = await radio.addDevice({ name: 'measured', restartDelayMs: 20, allowUnauthenticated: true });
  // Code-like bytes that deflate, as a real build's do.
  const fill = Buffer.from('lui a5,0x3fc8; addi a0,a5,-1024; jal ra,esp_ota_write; beqz a0,1f; ');
  const build = (version: string) => buildAppImage({ projectName: 'virtual-esp32', version, size: 256 * 1024, seed: 5, fill });
  const client = new BleOtaClient({ noble: radio.noble, timeouts: { scanMs: 5000, gattMs: 5000 } });
  const idle = async () => {
    for (let i = 0; i < 1000 && (await device.idle(64)).more; i++);
  };
  return { target: { client, target: { name: 'measured' }, images: [build('1.0.1'), build('1.0.2')], idle }, stop: () => radio.stopAll() };
}

/** A setting the measurement cannot run with: said in one line, without a stack. */
class SetupError extends Error {}

async function hardwareTarget(): Promise<{ target: MeasureTarget; stop: () => Promise<void> }> {
  const setup = hardwareSetup(process.env);
  if (setup.kind === 'skip') {
    throw new SetupError(
      `set ${HW_ENV.adapter}, ${HW_ENV.device} and ${HW_ENV.images} (and ${HW_ENV.secretFile} for a provisioned device), as for npm run test:hardware: docs/HARDWARE.md, Measuring a real ESP32.`,
    );
  }
  if (setup.kind === 'error') throw new SetupError(setup.message);
  const c = setup.config;
  if (c.images.length < 2 || c.images[0].version === c.images[1].version) {
    throw new SetupError(`${HW_ENV.images} must name two builds of this firmware with different versions (docs/HARDWARE.md, Testing with a real ESP32).`);
  }
  const idleS = Number(process.env[IDLE_ENV] ?? DEFAULT_IDLE_S);
  if (!(idleS >= 0 && idleS <= 3600)) throw new SetupError(`${IDLE_ENV} must be a number of seconds from 0 to 3600, not ${process.env[IDLE_ENV]}.`);
  process.env.NOBLE_HCI_DEVICE_ID = String(c.adapter);
  const client = new BleOtaClient({ timeouts: { scanMs: 15_000, gattMs: 10_000 } });
  const idle = () => new Promise<void>((done) => setTimeout(done, idleS * 1000));
  return {
    target: { client, target: c.target, secret: c.secret, images: [c.images[0].data, c.images[1].data], idle },
    stop: async () => releaseSystemBluetooth(),
  };
}

/** `npm run bench -- --hardware [--virtual]`: runs the steps and writes hardware.json in bench/results/. */
export async function hardwareBench(virtual: boolean): Promise<void> {
  let made: { target: MeasureTarget; stop: () => Promise<void> };
  try {
    made = virtual ? await virtualTarget() : await hardwareTarget();
  } catch (err) {
    if (!(err instanceof SetupError)) throw err;
    console.error(`bench --hardware: ${err.message}`);
    process.exitCode = 2;
    return;
  }
  const { target, stop } = made;
  console.log(`\nA ${virtual ? 'virtual' : 'real'} ESP32: whole updates, from the call to the confirmed result`);
  try {
    const steps = await measureDevice(target, (line) => console.log(line));
    // The virtual run checks the steps; its times are the host's, not a link's: nothing to keep.
    if (virtual) return;
    const file = join(resolve(__dirname, '../..'), 'bench/results/hardware.json');
    writeFileSync(file, JSON.stringify({ node: process.version, steps }, null, 2) + '\n');
    console.log(`written ${file}`);
  } finally {
    await stop();
  }
}
