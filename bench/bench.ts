/**
 * `npm run bench`: modelled update times per link preset and protocol
 * (docs/PERFORMANCE.md), the Node side's own cost per MB, the peak memory
 * of an upload, and the OTA core's static RAM. Prints tables, writes
 * bench/results/results.json.
 *
 * The modelled figures are deterministic (virtual time); the CPU and
 * memory figures are measured on this machine and vary a little.
 */
import { execFileSync, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { BleOtaClient } from '../lib/client/ota-client';
import { buildAppImage } from '../lib/image/app-image-builder';
import { validateImage } from '../lib/image/validate';
import { deflateChunks } from '../lib/protocol/deflate-chunks';
import { encodeStreamPacket } from '../lib/protocol/v2-codec';
import { Preset, PRESETS, W25Q32JV_MAX, withModel } from '../lib/virtual/link-model';
import { END_TO_END, modelledUpdate, ModelledRun } from '../lib/virtual/modelled-update';
import { VirtualEsp32 } from '../lib/virtual/virtual-device';
import { VirtualRadio } from '../lib/virtual/virtual-radio';
import { Btvirt } from '../test/support/emulated-controller/btvirt';
import { OtaPeripheral } from '../test/support/emulated-controller/ota-peripheral';

const ROOT = resolve(__dirname, '../..');
const FIXTURES = resolve(ROOT, '../shared/fixtures/esptool-images');
const WINDOWS = [4096, 8192, 16384, 32768];
const KB = 1024;

interface Image {
  label: string;
  data: Buffer;
  chipId: number;
}

function images(): Image[] {
  const out: Image[] = [256 * KB, 1024 * KB, 4096 * KB].map((size) => ({
    label: `${size / KB} KB`,
    data: buildAppImage({ size, version: '2.0.0', seed: size }),
    chipId: 0,
  }));
  if (existsSync(FIXTURES)) {
    for (const file of readdirSync(FIXTURES).sort()) {
      const data = readFileSync(join(FIXTURES, file));
      try {
        const img = validateImage(data);
        out.push({ label: file, data, chipId: img.chipId });
      } catch {
        // not an app image a BLE device can take (a bootloader, a header only, an ESP32-S2 app)
      }
    }
    // The one whole ESP-IDF app among them is for the ESP32-S2, which has no
    // Bluetooth: its code, in an ESP32 image of 1 MB, compresses as it does.
    const blink = join(FIXTURES, 'esp_idf_blink_esp32s2.bin');
    if (existsSync(blink)) {
      out.push({ label: 'S2 blink code, 1 MB', data: buildAppImage({ size: 1024 * KB, version: '2.0.0', fill: readFileSync(blink) }), chipId: 0 });
    }
  }
  return out;
}

async function modelled(): Promise<ModelledRun[]> {
  const runs: ModelledRun[] = [];
  for (const preset of PRESETS) {
    console.log(`\n${preset.description}`);
    console.log(`  ${'image'.padEnd(22)} ${'protocol'.padEnd(20)} ${'time s'.padStart(8)} ${'KB/s'.padStart(7)} ${'of bound'.padStart(9)} ${'vs link'.padStart(8)}`);
    for (const image of images()) {
      const configs: Array<{ protocol: 'v2' | 'seed'; window?: number; compress?: boolean }> = [
        { protocol: 'seed' },
        ...WINDOWS.map((window) => ({ protocol: 'v2' as const, window })),
        { protocol: 'v2', window: 32768, compress: true },
      ];
      for (const config of configs) {
        const run = { ...(await modelledUpdate(preset, image.data, { ...config, chipId: image.chipId })), image: image.label };
        runs.push(run);
        const name = run.protocol === 'seed' ? 'seed' : `v2 w${run.window / KB}K${config.compress ? (run.compressed ? ' deflate' : ' (no gain)') : ''}`;
        console.log(
          `  ${image.label.padEnd(22)} ${name.padEnd(20)} ${(run.transferMs / 1000).toFixed(2).padStart(8)} ${run.kbPerS.toFixed(1).padStart(7)} ${`${(run.ratio * 100).toFixed(1)} %`.padStart(9)} ${`${run.linkRatio.toFixed(2)} x`.padStart(8)}`,
        );
      }
    }
  }
  return runs;
}

interface Range {
  preset: string;
  description: string;
  typical: { boundMs: number; v2Ms: number; seedMs: number; endToEndMs: number; wholeMs: number; ratio: number; vsSeed: number };
  worst: { boundMs: number; v2Ms: number; seedMs: number; endToEndMs: number; wholeMs: number; ratio: number; vsSeed: number };
}

/** 1 MB, v2 (32 KB window) and the seed on the same link, with the flash's typical and datasheet-maximum timings. */
async function ranges(): Promise<{ ranges: Range[]; sensitivity: Array<{ preset: string; what: string; v2Ms: number; boundMs: number; ratio: number }> }> {
  const image = buildAppImage({ size: 1024 * KB, version: '2.0.0', seed: 1024 * KB });
  const one = async (p: Preset) => {
    const v2 = await modelledUpdate(p, image, { protocol: 'v2' });
    const seed = await modelledUpdate(p, image, { protocol: 'seed' });
    return { boundMs: v2.boundMs, v2Ms: v2.transferMs, seedMs: seed.transferMs, endToEndMs: v2.endToEndMs, wholeMs: v2.wholeMs, ratio: v2.ratio, vsSeed: seed.transferMs / v2.transferMs };
  };
  const s = (ms: number) => (ms / 1000).toFixed(1);
  const pct = (r: number) => `${(r * 100).toFixed(0)} %`;
  console.log('\n1 MB, typical to datasheet-maximum flash (W25Q32JV): transfer and end to end');
  console.log(
    `  assumed beyond virtual time: ${END_TO_END.scans} scans of ${END_TO_END.scanMs} ms, a boot of ${END_TO_END.bootMs} ms\n` +
      `  ${'preset'.padEnd(24)} ${'bound s'.padStart(11)} ${'v2 s'.padStart(11)} ${'of bound'.padStart(11)} ${'seed s'.padStart(13)} ${'v2/seed'.padStart(11)} ${'end to end s'.padStart(13)}`,
  );
  const out: Range[] = [];
  for (const p of PRESETS) {
    const typical = await one(p);
    const worst = await one(withModel(p, { flash: W25Q32JV_MAX, suffix: '-flash-max' }));
    out.push({ preset: p.name, description: p.description, typical, worst });
    const r = (a: string, b: string) => `${a}-${b}`;
    console.log(
      `  ${p.name.padEnd(24)} ${r(s(typical.boundMs), s(worst.boundMs)).padStart(11)} ${r(s(typical.v2Ms), s(worst.v2Ms)).padStart(11)} ${r(pct(typical.ratio), pct(worst.ratio)).padStart(11)} ${r(s(typical.seedMs), s(worst.seedMs)).padStart(13)} ${r(typical.vsSeed.toFixed(1), worst.vsSeed.toFixed(1)).padStart(11)} ${r(s(typical.endToEndMs), s(worst.endToEndMs)).padStart(13)}`,
    );
  }
  // What the device's buffers and the erases cost on the realistic preset.
  const base = PRESETS[0];
  const variants: Array<[string, Preset]> = [
    ['controller pool 4', withModel(base, { link: { controllerRxBuffers: 4 } })],
    ['controller pool 10 (the preset)', base],
    ['controller pool 12', withModel(base, { link: { controllerRxBuffers: 12 } })],
    ["host buffers 24 (ESP-IDF's default)", withModel(base, { link: { hostRxBuffers: 24 } })],
    ['64 buffers usable during flash work (the old model)', withModel(base, { link: { controllerRxBuffers: 64 } })],
    ['no end-of-event margin', withModel(base, { link: { eventMarginMs: 0 } })],
    ['7.5 ms interval (the central takes the shortest)', withModel(base, { link: { intervalMs: 7.5, eventLengthMs: 7.5 } })],
    ['erases off the critical path (slot erased before)', withModel(base, { flash: { ...base.flash, sectorEraseMs: 0, blockEraseMs: 0 } })],
  ];
  const sensitivity = [];
  console.log(`\n${base.description}, 1 MB, v2: what the model's assumptions move`);
  for (const [what, p] of variants) {
    const v2 = await modelledUpdate(p, image, { protocol: 'v2' });
    sensitivity.push({ preset: base.name, what, v2Ms: v2.transferMs, boundMs: v2.boundMs, ratio: v2.ratio });
    console.log(`  ${what.padEnd(52)} ${s(v2.transferMs).padStart(6)} s ${(v2.kbPerS.toFixed(1) + ' KB/s').padStart(11)} ${pct(v2.ratio).padStart(6)} of ${s(v2.boundMs)} s`);
  }
  return { ranges: out, sensitivity };
}

/** CPU ms per MB of firmware for what the client does before and while sending: parse, hash, compress, chunk. */
function nodeCost(): Record<string, number> {
  // Real app code where there is some: deflate works harder on it than on random bytes.
  const blink = join(FIXTURES, 'esp_idf_blink_esp32s2.bin');
  const image = buildAppImage({ size: 4096 * KB, seed: 9, fill: existsSync(blink) ? readFileSync(blink) : undefined });
  const mb = image.length / (1024 * 1024);
  const rounds = 5;
  const measure = (fn: () => void) => {
    fn(); // warm up
    const before = process.cpuUsage();
    for (let i = 0; i < rounds; i++) fn();
    const used = process.cpuUsage(before);
    return (used.user + used.system) / 1000 / rounds / mb;
  };
  const parse = measure(() => validateImage(image));
  const hash = measure(() => createHash('sha256').update(image).digest());
  const compress = measure(() => deflateChunks(image));
  const chunk = measure(() => {
    for (let off = 0; off < image.length; off += 510) encodeStreamPacket(off, image.subarray(off, off + 510));
  });
  return { parseMsPerMb: parse, hashMsPerMb: hash, compressMsPerMb: compress, chunkMsPerMb: chunk, totalMsPerMb: parse + hash + compress + chunk };
}

/** Peak RSS above the idle process during a real-time upload of a 4 MB image to a virtual ESP32. */
async function peakMemory(): Promise<{ imageBytes: number; idleRssBytes: number; peakAboveIdleBytes: number; ratioToImage: number }> {
  const image = buildAppImage({ size: 4096 * KB, seed: 10 });
  const radio = new VirtualRadio();
  try {
    await radio.addDevice({ name: 'bench-mem', slotSize: 0x500000, restartDelayMs: 0 });
    (global as { gc?: () => void }).gc?.();
    const idle = process.memoryUsage().rss;
    let peak = idle;
    const sampler = setInterval(() => (peak = Math.max(peak, process.memoryUsage().rss)), 2);
    await new BleOtaClient({ noble: radio.noble }).update({ target: { name: 'bench-mem' }, image, confirm: 'device' });
    clearInterval(sampler);
    peak = Math.max(peak, process.memoryUsage().rss);
    return { imageBytes: image.length, idleRssBytes: idle, peakAboveIdleBytes: peak - idle, ratioToImage: (peak - idle) / image.length };
  } finally {
    await radio.stopAll();
  }
}

interface CentralRun {
  cpuMs: number;
  wallMs: number;
  bytes: number;
}

/** Runs bench/central.js (one whole update from a fresh process) and returns its figures. */
function central(args: string[], preload?: string): Promise<CentralRun> {
  const script = join(__dirname, 'central.js');
  const node = preload ? ['--require', preload, script, ...args] : [script, ...args];
  return new Promise((done, fail) => {
    const child = spawn(process.execPath, node, { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.on('exit', (code) => (code === 0 ? done(JSON.parse(out.trim().split('\n').pop() ?? '') as CentralRun) : fail(new Error(`central ${args[0]} exited ${code}`))));
  });
}

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

/**
 * CPU of a whole 1 MB update on the central's side, each in a fresh process:
 * on the virtual bindings, and on noble's own HCI, L2CAP and ATT code
 * through an emulated controller (btvirt) to bleno serving a virtual ESP32.
 */
async function wholeUpdateCpu(): Promise<{ virtualMsPerMb: number; nobleHciMsPerMb?: number; runs: number; note?: string }> {
  const blink = join(FIXTURES, 'esp_idf_blink_esp32s2.bin');
  const fill = existsSync(blink) ? readFileSync(blink) : undefined;
  const dir = mkdtempSync(join(tmpdir(), 'ble-ota-bench-'));
  const runs = 3;
  const files = Array.from({ length: runs }, (_, i) => {
    const file = join(dir, `app-${i}.bin`);
    writeFileSync(file, buildAppImage({ size: 1024 * KB, version: `2.0.${i + 1}`, seed: 11 + i, fill }));
    return file;
  });
  const perMb = (r: CentralRun) => r.cpuMs / (r.bytes / (1024 * 1024));
  try {
    const virtual: number[] = [];
    for (const file of files) virtual.push(perMb(await central(['virtual', file, 'bench-cpu'])));
    let btvirt: Btvirt | undefined;
    try {
      btvirt = await Btvirt.start();
    } catch (err) {
      return { virtualMsPerMb: median(virtual), runs, note: `noble HCI path not measured: ${(err as Error).message}` };
    }
    const device = await VirtualEsp32.start({ name: 'bench-cpu', slotSize: 0x500000, restartDelayMs: 20 });
    const peripheral = await OtaPeripheral.start(device);
    try {
      const preload = resolve(__dirname, '../test/support/emulated-controller/preload.js');
      const hci: number[] = [];
      for (const file of files) hci.push(perMb(await central(['system', file, 'bench-cpu'], preload)));
      return { virtualMsPerMb: median(virtual), nobleHciMsPerMb: median(hci), runs };
    } finally {
      await peripheral.stop();
      await device.stop();
      await btvirt.stop();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

function coreRam(): { text: number; data: number; bss: number; output: string } {
  const output = execFileSync('make', ['-s', '-C', join(ROOT, 'firmware/host'), 'sizes'], { encoding: 'utf8' });
  const totals = output.split('\n').find((l) => l.includes('(TOTALS)'));
  const [text, data, bss] = (totals ?? '').trim().split(/\s+/).map(Number);
  return { text, data, bss, output };
}

async function main(): Promise<void> {
  const started = Date.now();
  const runs = await modelled();
  const range = await ranges();
  const cost = nodeCost();
  console.log(
    `\nNode side, CPU per MB: parse ${cost.parseMsPerMb.toFixed(1)} ms, SHA-256 ${cost.hashMsPerMb.toFixed(1)} ms, deflate ${cost.compressMsPerMb.toFixed(1)} ms, chunk ${cost.chunkMsPerMb.toFixed(1)} ms: ${cost.totalMsPerMb.toFixed(1)} ms/MB`,
  );
  const whole = await wholeUpdateCpu();
  console.log(
    `Node side, CPU of a whole 1 MB update in a fresh process (median of ${whole.runs}): virtual bindings ${whole.virtualMsPerMb.toFixed(0)} ms/MB` +
      (whole.nobleHciMsPerMb !== undefined ? `, noble's HCI code (emulated controller) ${whole.nobleHciMsPerMb.toFixed(0)} ms/MB` : `; ${whole.note}`),
  );
  const memory = await peakMemory();
  console.log(`Peak memory of a 4 MB upload above the idle process: ${(memory.peakAboveIdleBytes / 1024 / 1024).toFixed(1)} MB (${memory.ratioToImage.toFixed(2)} x the image)`);
  const ram = coreRam();
  console.log(`OTA core static RAM (host build, size): data ${ram.data} + bss ${ram.bss} = ${ram.data + ram.bss} bytes; code ${ram.text} bytes`);
  const dir = join(ROOT, 'bench/results');
  mkdirSync(dir, { recursive: true });
  const file = join(dir, 'results.json');
  writeFileSync(
    file,
    JSON.stringify(
      { node: process.version, presets: PRESETS, modelled: runs, ranges: range.ranges, sensitivity: range.sensitivity, endToEndAssumed: END_TO_END, nodeCost: cost, wholeUpdateCpu: whole, memory, coreRam: { text: ram.text, data: ram.data, bss: ram.bss } },
      null,
      2,
    ) + '\n',
  );
  console.log(`\nwritten ${file} (${((Date.now() - started) / 1000).toFixed(1)} s)`);
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
