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
import { buildAppImage } from '../lib/image/app-image-builder';
import { validateImage } from '../lib/image/validate';
import { deltaBench } from './delta';
import { encodedLength, worthDeflating } from '../lib/protocol/deflate-chunks';
import { encodeStreamPacket } from '../lib/protocol/v2-codec';
import { Preset, PRESETS } from '../lib/virtual/link-model';
import { VirtualEsp32 } from '../lib/virtual/virtual-device';
import { Btvirt } from '../test/support/emulated-controller/btvirt';
import { OtaPeripheral } from '../test/support/emulated-controller/ota-peripheral';
import { END_TO_END, modelledUpdate, ModelledRun } from './modelled-update';
import { hardwareBench } from './hardware';
import { W25Q32JV_MAX, withModel } from './virtual-time';

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

interface RangeEnd {
  boundMs: number;
  v2Ms: number;
  seedMs: number;
  endToEndMs: number;
  wholeMs: number;
  ratio: number;
  vsSeed: number;
  /** v2 to a device that had idle time (its slot erased before): its share of that case's bound (link and page programs), end to end, against the seed (which erases as it writes). */
  idle: { boundMs: number; v2Ms: number; ratio: number; endToEndMs: number; vsSeed: number };
}

interface Range {
  preset: string;
  description: string;
  typical: RangeEnd;
  worst: RangeEnd;
}

/** 1 MB, v2 (32 KB window) and the seed on the same link, with the flash's typical and datasheet-maximum timings. */
async function ranges(): Promise<{
  ranges: Range[];
  sensitivity: Array<{ preset: string; what: string; v2Ms: number; boundMs: number; ratio: number; idle: { v2Ms: number; boundMs: number; ratio: number } }>;
}> {
  const image = buildAppImage({ size: 1024 * KB, version: '2.0.0', seed: 1024 * KB });
  const one = async (p: Preset) => {
    const v2 = await modelledUpdate(p, image, { protocol: 'v2' });
    const seed = await modelledUpdate(p, image, { protocol: 'seed' });
    const idle = await modelledUpdate(p, image, { protocol: 'v2', idleErase: true });
    return {
      boundMs: v2.boundMs,
      v2Ms: v2.transferMs,
      seedMs: seed.transferMs,
      endToEndMs: v2.endToEndMs,
      wholeMs: v2.wholeMs,
      ratio: v2.ratio,
      vsSeed: seed.transferMs / v2.transferMs,
      idle: { boundMs: idle.boundMs, v2Ms: idle.transferMs, ratio: idle.ratio, endToEndMs: idle.endToEndMs, vsSeed: seed.transferMs / idle.transferMs },
    };
  };
  const s = (ms: number) => (ms / 1000).toFixed(1);
  const pct = (r: number) => `${(r * 100).toFixed(0)} %`;
  console.log('\n1 MB, typical to datasheet-maximum flash (W25Q32JV): transfer and end to end');
  console.log(
    `  assumed beyond virtual time: ${END_TO_END.scans} scans of ${END_TO_END.scanMs} ms, a boot of ${END_TO_END.bootMs} ms\n` +
      `  ${'preset'.padEnd(24)} ${'bound s'.padStart(11)} ${'v2 s'.padStart(11)} ${'of bound'.padStart(11)} ${'seed s'.padStart(13)} ${'v2/seed'.padStart(11)} ${'end to end s'.padStart(13)} ${'after idle: bound s'.padStart(20)} ${'v2 s'.padStart(11)} ${'of bound'.padStart(11)} ${'v2/seed'.padStart(11)} ${'end to end s'.padStart(13)}`,
  );
  const out: Range[] = [];
  for (const p of PRESETS) {
    const typical = await one(p);
    const worst = await one(withModel(p, { flash: W25Q32JV_MAX, suffix: '-flash-max' }));
    out.push({ preset: p.name, description: p.description, typical, worst });
    const r = (a: string, b: string) => `${a}-${b}`;
    console.log(
      `  ${p.name.padEnd(24)} ${r(s(typical.boundMs), s(worst.boundMs)).padStart(11)} ${r(s(typical.v2Ms), s(worst.v2Ms)).padStart(11)} ${r(pct(typical.ratio), pct(worst.ratio)).padStart(11)} ${r(s(typical.seedMs), s(worst.seedMs)).padStart(13)} ${r(typical.vsSeed.toFixed(1), worst.vsSeed.toFixed(1)).padStart(11)} ${r(s(typical.endToEndMs), s(worst.endToEndMs)).padStart(13)} ${r(s(typical.idle.boundMs), s(worst.idle.boundMs)).padStart(20)} ${r(s(typical.idle.v2Ms), s(worst.idle.v2Ms)).padStart(11)} ${r(pct(typical.idle.ratio), pct(worst.idle.ratio)).padStart(11)} ${r(typical.idle.vsSeed.toFixed(1), worst.idle.vsSeed.toFixed(1)).padStart(11)} ${r(s(typical.idle.endToEndMs), s(worst.idle.endToEndMs)).padStart(13)}`,
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
    ['datasheet-maximum flash', withModel(base, { flash: W25Q32JV_MAX, suffix: '-flash-max' })],
  ];
  const sensitivity = [];
  console.log(`\n${base.description}, 1 MB, v2: what the model's assumptions move (no idle time | after idle time)`);
  for (const [what, p] of variants) {
    const v2 = await modelledUpdate(p, image, { protocol: 'v2' });
    const idle = await modelledUpdate(p, image, { protocol: 'v2', idleErase: true });
    sensitivity.push({
      preset: base.name,
      what,
      v2Ms: v2.transferMs,
      boundMs: v2.boundMs,
      ratio: v2.ratio,
      idle: { v2Ms: idle.transferMs, boundMs: idle.boundMs, ratio: idle.ratio },
    });
    console.log(
      `  ${what.padEnd(52)} ${s(v2.transferMs).padStart(6)} s ${(v2.kbPerS.toFixed(1) + ' KB/s').padStart(11)} ${pct(v2.ratio).padStart(6)} of ${s(v2.boundMs).padStart(4)} s` +
        ` | ${s(idle.transferMs).padStart(6)} s ${(idle.kbPerS.toFixed(1) + ' KB/s').padStart(11)} ${pct(idle.ratio).padStart(6)} of ${s(idle.boundMs).padStart(4)} s`,
    );
  }
  return { ranges: out, sensitivity };
}

/**
 * CPU ms per MB of the client's own steps, each repeated in this warm
 * process: parse, hash, deflate (app code), the sample that turns an
 * incompressible image away, chunk. A part of a whole update's cost, which
 * wholeUpdateCpu() measures.
 */
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
  const compress = measure(() => encodedLength(image));
  const incompressible = buildAppImage({ size: 4096 * KB, seed: 10 });
  const sample = measure(() => worthDeflating(incompressible));
  const chunk = measure(() => {
    for (let off = 0; off < image.length; off += 510) encodeStreamPacket(off, image.subarray(off, off + 510));
  });
  return { parseMsPerMb: parse, hashMsPerMb: hash, compressMsPerMb: compress, sampleMsPerMb: sample, chunkMsPerMb: chunk };
}

interface CentralRun {
  cpuMs: number;
  wallMs: number;
  bytes: number;
  /** Peak RSS during the update above the RSS just before it. */
  peakGrowthBytes: number;
}

/** Runs bench/central.ts, compiled beside this file (one whole update from a fresh process), and returns its figures. */
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

/** Median and max of N fresh-process runs. */
interface Spread {
  median: number;
  max: number;
}
const spread = (xs: number[]): Spread => ({ median: median(xs), max: Math.max(...xs) });

interface WholeUpdateRow {
  image: string;
  bytes: number;
  backend: 'remote' | 'virtual' | 'system';
  runs: number;
  cpuMsPerMb: Spread;
  peakGrowthBytes: Spread;
  /** Peak growth over the image's size. */
  peakGrowthRatio: Spread;
}

/**
 * A whole update (scan, connect, discovery, transfer, restart, reconnect,
 * confirm), each run in a fresh Node.js process (bench/central.ts): its CPU
 * and its peak RSS growth, for app-like and incompressible images of 256 KB,
 * 1 MB and 4 MB. The virtual ESP32 runs in a process of its own
 * (bench/remote-device.ts: only the central's side is counted); for 4 MB
 * also with its driver in the central's process, to show that share. With
 * `hci`, 1 MB again through noble's own HCI, L2CAP and ATT code to an
 * emulated controller (btvirt) and bleno serving a virtual ESP32.
 */
async function wholeUpdateCpu(hci: boolean): Promise<{ rows: WholeUpdateRow[]; note?: string }> {
  const blink = join(FIXTURES, 'esp_idf_blink_esp32s2.bin');
  const fill = existsSync(blink) ? readFileSync(blink) : undefined;
  const dir = mkdtempSync(join(tmpdir(), 'ble-ota-bench-'));
  const runs = 5;
  const rows: WholeUpdateRow[] = [];
  const measure = async (image: string, file: string, bytes: number, backend: WholeUpdateRow['backend'], n: number, preload?: string) => {
    const results: CentralRun[] = [];
    for (let i = 0; i < n; i++) results.push(await central([backend, file, 'bench-cpu'], preload));
    const row: WholeUpdateRow = {
      image,
      bytes,
      backend,
      runs: n,
      cpuMsPerMb: spread(results.map((r) => r.cpuMs / (r.bytes / (1024 * 1024)))),
      peakGrowthBytes: spread(results.map((r) => r.peakGrowthBytes)),
      peakGrowthRatio: spread(results.map((r) => r.peakGrowthBytes / r.bytes)),
    };
    rows.push(row);
    console.log(
      `  ${image.padEnd(24)} ${backend.padEnd(8)} CPU ${row.cpuMsPerMb.median.toFixed(0).padStart(4)} ms/MB (max ${row.cpuMsPerMb.max.toFixed(0).padStart(4)})` +
        `   peak RSS growth ${(row.peakGrowthBytes.median / 1048576).toFixed(1).padStart(5)} MB, ${row.peakGrowthRatio.median.toFixed(2)} x the image (max ${row.peakGrowthRatio.max.toFixed(2)} x)`,
    );
  };
  console.log(`\nNode side: whole updates, each run in a fresh process, median (max) of ${runs} (3 for the last rows)`);
  const file = (name: string, data: Buffer) => {
    const path = join(dir, name);
    writeFileSync(path, data);
    return path;
  };
  try {
    for (const size of [256 * KB, 1024 * KB, 4096 * KB]) {
      const label = size < 1024 * KB ? `${size / KB} KB` : `${size / 1024 / KB} MB`;
      const app = buildAppImage({ size, version: '2.0.1', seed: 11, fill });
      const random = buildAppImage({ size, version: '2.0.1', seed: 12 });
      await measure(`${label} app code`, file(`app-${size}.bin`, app), app.length, 'remote', runs);
      await measure(`${label} incompressible`, file(`random-${size}.bin`, random), random.length, 'remote', runs);
    }
    // The virtual ESP32's driver in the central's process, as the tests run it: its share.
    const largest = (name: string) => join(dir, `${name}-${4096 * KB}.bin`);
    await measure('4 MB app code', largest('app'), readFileSync(largest('app')).length, 'virtual', 3);
    await measure('4 MB incompressible', largest('random'), readFileSync(largest('random')).length, 'virtual', 3);
    if (!hci) return { rows, note: 'noble HCI path not measured (--no-hci)' };
    let btvirt: Btvirt | undefined;
    try {
      btvirt = await Btvirt.start();
    } catch (err) {
      return { rows, note: `noble HCI path not measured: ${(err as Error).message}` };
    }
    const device = await VirtualEsp32.start({ name: 'bench-cpu', slotSize: 0x500000, restartDelayMs: 20 });
    const peripheral = await OtaPeripheral.start(device);
    try {
      const preload = resolve(__dirname, '../test/support/emulated-controller/preload.js');
      const app = buildAppImage({ size: 1024 * KB, version: '2.0.2', seed: 13, fill });
      await measure('1 MB app code', file('hci-app.bin', app), app.length, 'system', 3, preload);
      return { rows };
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

/** The Node side: the client's steps in a warm process, then whole updates in fresh ones. */
async function nodeSide(hci: boolean): Promise<{ nodeCost: Record<string, number>; wholeUpdate: { rows: WholeUpdateRow[]; note?: string } }> {
  const cost = nodeCost();
  console.log(
    `\nNode side, the client's steps in a warm process, CPU per MB: parse ${cost.parseMsPerMb.toFixed(1)} ms, SHA-256 ${cost.hashMsPerMb.toFixed(1)} ms, ` +
      `deflate (app code) ${cost.compressMsPerMb.toFixed(1)} ms, the sample turning an incompressible image away ${cost.sampleMsPerMb.toFixed(1)} ms, chunk ${cost.chunkMsPerMb.toFixed(1)} ms`,
  );
  const whole = await wholeUpdateCpu(hci);
  if (whole.note) console.log(`  ${whole.note}`);
  return { nodeCost: cost, wholeUpdate: whole };
}

async function main(): Promise<void> {
  const started = Date.now();
  const hci = !process.argv.includes('--no-hci');
  if (process.argv.includes('--delta')) {
    // Delta patches on real code pairs alone (bench/delta.ts; its own bench/results/delta.json).
    await deltaBench();
    return;
  }
  if (process.argv.includes('--hardware')) {
    // A real ESP32 (test:hardware's environment), or with --virtual the same steps against a virtual one.
    await hardwareBench(process.argv.includes('--virtual'));
    return;
  }
  if (process.argv.includes('--node-side')) {
    // The Node side alone (its figures do not depend on the model's).
    const node = await nodeSide(hci);
    const file = join(ROOT, 'bench/results/node-side.json');
    writeFileSync(file, JSON.stringify({ node: process.version, ...node }, null, 2) + '\n');
    console.log(`\nwritten ${file} (${((Date.now() - started) / 1000).toFixed(1)} s)`);
    return;
  }
  const runs = await modelled();
  const range = await ranges();
  if (process.argv.includes('--modelled')) {
    // The modelled figures alone: no Node-side runs, no emulated controller.
    // They replace the modelled part of results.json; the rest stays as the last whole run left it.
    const file = join(ROOT, 'bench/results/results.json');
    mkdirSync(join(ROOT, 'bench/results'), { recursive: true });
    const previous = existsSync(file) ? (JSON.parse(readFileSync(file, 'utf8')) as Record<string, unknown>) : {};
    const modelledPart = { presets: PRESETS, modelled: runs, ranges: range.ranges, sensitivity: range.sensitivity, endToEndAssumed: END_TO_END };
    writeFileSync(file, JSON.stringify({ ...previous, ...modelledPart }, null, 2) + '\n');
    console.log(`\nwritten ${file} (${((Date.now() - started) / 1000).toFixed(1)} s)`);
    return;
  }
  const node = await nodeSide(hci);
  await deltaBench();
  const ram = coreRam();
  console.log(`OTA core static RAM (host build, size): data ${ram.data} + bss ${ram.bss} = ${ram.data + ram.bss} bytes; code ${ram.text} bytes`);
  const dir = join(ROOT, 'bench/results');
  mkdirSync(dir, { recursive: true });
  const file = join(dir, 'results.json');
  writeFileSync(
    file,
    JSON.stringify(
      {
        node: process.version,
        presets: PRESETS,
        modelled: runs,
        ranges: range.ranges,
        sensitivity: range.sensitivity,
        endToEndAssumed: END_TO_END,
        ...node,
        coreRam: { text: ram.text, data: ram.data, bss: ram.bss },
      },
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
