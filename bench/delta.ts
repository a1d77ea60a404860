/**
 * Delta updates on real code (docs/DELTA.md, `npm run bench -- --delta`):
 * for each pair that scripts/delta-pairs.js builds (ESP32-C3 app images of
 * RISC-V code, Debian's gcc-riscv64-unknown-elf), the full image's size as
 * it goes over the air (DEFLATE chunks), the patch's size the same way, the
 * ratio, and the CPU and peak memory of computing the patch, each in a
 * fresh process (bench/delta-worker.ts), median and max of 3. Then the
 * same at 1 MB and 4 MB (the pairs' code repeated to fill an image), for
 * the cost per MB. Writes bench/results/delta.json.
 *
 * Without the cross compiler or the Debian source packages the pairs are
 * skipped with a message saying what to install; the sized rows still run.
 *
 * Then a delta update end to end, in virtual time (modelled-update.ts): the
 * 1 MB one-function change on the Linux gateway preset, from the call to
 * the confirmed result, by patch and by the full image, with the bytes
 * each sent over the air.
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { applyPatch } from '../lib/delta/apply';
import { computePatchOffThread } from '../lib/delta/patch-thread';
import { PRESETS } from '../lib/virtual/link-model';
import { oneFunctionChanged } from '../test/support/code-images';
import { END_TO_END, modelledUpdate } from './modelled-update';
import { buildAppImage } from '../lib/image/app-image-builder';
import { encodedLength } from '../lib/protocol/deflate-chunks';

const ROOT = resolve(__dirname, '../..');
const KB = 1024;
const MB = 1024 * KB;
const RUNS = 3;

interface Pair {
  name: string;
  what: string;
  old: Buffer;
  new: Buffer;
}

interface PairsModule {
  buildPairs(): Promise<Pair[]>;
  PairsUnavailable: new (message: string) => Error;
}

interface WorkerRun {
  cpuMs: number;
  peakGrowthBytes: number;
  patchBytes: number;
}

export interface DeltaRow {
  pair: string;
  what: string;
  oldBytes: number;
  newBytes: number;
  /** The new image over the air: DEFLATE chunks as the client sends them. */
  fullCompressed: number;
  patchBytes: number;
  /** The patch over the air, the same way. */
  patchCompressed: number;
  /** patchCompressed / fullCompressed. */
  ratio: number;
  /** What a client that falls back to the full image when the patch is not smaller sends. */
  sent: number;
  cpuMs: { median: number; max: number };
  cpuMsPerMb: number;
  peakGrowthBytes: { median: number; max: number };
  /** Peak growth over the new image's size. */
  peakGrowthRatio: number;
}

function worker(oldFile: string, newFile: string, patchFile: string): Promise<WorkerRun> {
  const script = join(__dirname, 'delta-worker.js');
  return new Promise((done, fail) => {
    const child = spawn(process.execPath, [script, oldFile, newFile, patchFile], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.on('exit', (code) => (code === 0 ? done(JSON.parse(out.trim().split('\n').pop() ?? '') as WorkerRun) : fail(new Error(`delta worker exited ${code}`))));
  });
}

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

async function measure(dir: string, pair: Pair): Promise<DeltaRow> {
  const oldFile = join(dir, `${pair.name}.old.bin`);
  const newFile = join(dir, `${pair.name}.new.bin`);
  const patchFile = join(dir, `${pair.name}.patch`);
  writeFileSync(oldFile, pair.old);
  writeFileSync(newFile, pair.new);
  const runs: WorkerRun[] = [];
  for (let i = 0; i < RUNS; i++) runs.push(await worker(oldFile, newFile, patchFile));
  const patch = readFileSync(patchFile);
  if (!applyPatch(pair.old, patch).equals(pair.new)) throw new Error(`${pair.name}: the patch does not rebuild the image`);
  const fullCompressed = encodedLength(pair.new);
  const patchCompressed = encodedLength(patch);
  const cpu = runs.map((r) => r.cpuMs);
  const peak = runs.map((r) => r.peakGrowthBytes);
  return {
    pair: pair.name,
    what: pair.what,
    oldBytes: pair.old.length,
    newBytes: pair.new.length,
    fullCompressed,
    patchBytes: patch.length,
    patchCompressed,
    ratio: patchCompressed / fullCompressed,
    sent: Math.min(patchCompressed, fullCompressed),
    cpuMs: { median: median(cpu), max: Math.max(...cpu) },
    cpuMsPerMb: median(cpu) / (pair.new.length / MB),
    peakGrowthBytes: { median: median(peak), max: Math.max(...peak) },
    peakGrowthRatio: median(peak) / pair.new.length,
  };
}

/** The pairs' code (or, without them, the S2 blink fixture's, or random bytes) repeated to `size`, old and new. */
function sized(size: number, pairs: Pair[], chipId = 5): Pair {
  const blink = resolve(ROOT, '../shared/fixtures/esptool-images/esp_idf_blink_esp32s2.bin');
  const one = pairs.find((p) => p.name === 'one-function');
  if (one) {
    // Every program of the pairs, one after the other, as old; the same with the changed function's build in the base's place as new.
    const others = pairs.filter((p) => p.name !== 'one-function').map((p) => p.new);
    return {
      name: `${size / MB} MB`,
      what: "the pairs' programs repeated, one function changed",
      old: buildAppImage({ chipId, size, version: '1.0.0', seed: 1, fill: Buffer.concat([one.old, ...others]) }),
      new: buildAppImage({ chipId, size, version: '1.0.1', seed: 2, fill: Buffer.concat([one.new, ...others]) }),
    };
  }
  const fill = existsSync(blink) ? readFileSync(blink) : undefined;
  const old = buildAppImage({ size, version: '1.0.0', seed: 1, fill });
  const nw = Buffer.from(old);
  nw.write('1.0.1', 48); // the app descriptor's version
  for (let i = Math.floor(size / 2); i < Math.floor(size / 2) + 200; i++) nw[i] ^= 0x21;
  return { name: `${size / MB} MB`, what: 'app code, 200 bytes changed', old, new: nw };
}

function print(row: DeltaRow): void {
  const kb = (n: number) => (n / KB).toFixed(1);
  console.log(
    `  ${row.pair.padEnd(15)} ${kb(row.newBytes).padStart(7)} KB  full ${kb(row.fullCompressed).padStart(7)} KB  patch ${kb(row.patchBytes).padStart(7)} KB, ` +
      `${kb(row.patchCompressed).padStart(7)} KB compressed  ${`${(row.ratio * 100).toFixed(2)} %`.padStart(8)}  ` +
      `CPU ${row.cpuMs.median.toFixed(0).padStart(5)} ms (max ${row.cpuMs.max.toFixed(0)}), ${row.cpuMsPerMb.toFixed(0)} ms/MB  ` +
      `peak RSS growth ${(row.peakGrowthBytes.median / MB).toFixed(1)} MB, ${row.peakGrowthRatio.toFixed(1)} x`,
  );
}

/** One modelled update of the end-to-end part. */
export interface EndToEndRow {
  method: 'patch' | 'full';
  idleErase: boolean;
  /** Stream bytes over the air (DEFLATE chunks of the patch, or of the image). */
  bytesOverAir: number;
  transferMs: number;
  /** Virtual time from the call to the confirmed result. */
  wholeMs: number;
  /** The client's CPU before BEGIN (the patch on its worker thread, its encoding and the full image's, for the choice; median of 3, the first compiling the matcher); 0 for the full image. */
  planMs: number;
  /** wholeMs + planMs + what virtual time leaves out (two scans, the device's boot; END_TO_END). */
  endToEndMs: number;
}

export interface EndToEnd {
  preset: string;
  pair: string;
  imageBytes: number;
  rows: EndToEndRow[];
}

/**
 * The 1 MB one-function change, by patch and whole, on the Linux gateway
 * preset (Bluetooth 5 adapter, ESP32): modelled time from the call to the
 * confirmed result, typical flash, with and without the idle erase before.
 */
async function endToEnd(pair: Pair): Promise<EndToEnd> {
  const preset = PRESETS.find((p) => p.name === 'linux-noble-esp32');
  if (!preset) throw new Error('no linux-noble-esp32 preset');
  // What the client computes before it sends a patch (planDelivery), as it does it: the patch on
  // its worker thread, its stream's length and the full image's. The process's CPU time (the
  // thread's included; the main thread waits): on a machine shared with other work, wall time
  // says more about the others than about the patch. The first run compiles the matcher.
  const plans: number[] = [];
  for (let i = 0; i < RUNS; i++) {
    const cpu = process.cpuUsage();
    const patch = await computePatchOffThread(pair.old, pair.new);
    encodedLength(patch);
    encodedLength(pair.new);
    const used = process.cpuUsage(cpu);
    plans.push((used.user + used.system) / 1000);
  }
  const planMs = median(plans);
  const rows: EndToEndRow[] = [];
  for (const idleErase of [false, true]) {
    for (const method of ['patch', 'full'] as const) {
      const run = await modelledUpdate(preset, pair.new, {
        protocol: 'v2',
        compress: true,
        idleErase,
        baseImage: pair.old,
        chipId: pair.new.readUInt16LE(12),
        ...(method === 'full' ? { delta: false } : {}),
      });
      if (run.delivery?.method !== method) throw new Error(`the ${method} run went as ${run.delivery?.method} (${run.delivery?.reason ?? ''})`);
      const plan = method === 'patch' ? planMs : 0;
      rows.push({
        method,
        idleErase,
        bytesOverAir: run.delivery.bytesOverAir,
        transferMs: run.transferMs,
        wholeMs: run.wholeMs,
        planMs: plan,
        endToEndMs: run.endToEndMs + plan,
      });
    }
  }
  return { preset: preset.name, pair: pair.what, imageBytes: pair.new.length, rows };
}

function printEndToEnd(e: EndToEnd): void {
  console.log(`
Delta update end to end, modelled: ${e.preset}, ${e.pair}, ${(e.imageBytes / MB).toFixed(2)} MB, typical flash`);
  console.log(
    `  (end to end: the call to the confirmed result, plus ${END_TO_END.scans} scans of ${END_TO_END.scanMs} ms and a ${END_TO_END.bootMs} ms boot assumed, plus the CPU of computing the patch)`,
  );
  for (const r of e.rows) {
    console.log(
      `  ${r.method.padEnd(5)} ${r.idleErase ? 'after idle erase' : 'erase as it goes'}  over the air ${(r.bytesOverAir / KB).toFixed(1).padStart(7)} KB  ` +
        `transfer ${(r.transferMs / 1000).toFixed(2)} s  call to confirmed ${(r.wholeMs / 1000).toFixed(2)} s  patch CPU ${(r.planMs / 1000).toFixed(2)} s  end to end ${(r.endToEndMs / 1000).toFixed(2)} s`,
    );
  }
}

/** Runs the delta benchmark; returns its rows (also written to bench/results/delta.json). */
export async function deltaBench(): Promise<{ rows: DeltaRow[]; note?: string; endToEnd?: EndToEnd }> {
  // scripts/ is plain JavaScript, outside the compiled tree.
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const pairsModule = require(join(ROOT, 'scripts/delta-pairs.js')) as PairsModule;
  let pairs: Pair[] = [];
  let note: string | undefined;
  console.log('\nDelta updates: patches over the air (DEFLATE chunks) against the full image, computed in fresh processes (median of 3)');
  try {
    pairs = await pairsModule.buildPairs();
  } catch (err) {
    if (!(err instanceof pairsModule.PairsUnavailable)) throw err;
    note = (err as Error).message;
    console.log(`  ${note}`);
  }
  const dir = mkdtempSync(join(tmpdir(), 'ble-ota-delta-bench-'));
  const rows: DeltaRow[] = [];
  try {
    for (const pair of [...pairs, sized(1 * MB, pairs), sized(4 * MB, pairs)]) {
      const row = await measure(dir, pair);
      rows.push(row);
      print(row);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  // The preset's chip is an ESP32: the real pairs' 1 MB row in an ESP32 image when they could be
  // built; else code-like bytes with one function grown (test/support/code-images.ts).
  const e2e = await endToEnd(
    pairs.length > 0 ? sized(1 * MB, pairs, 0) : { name: '1 MB', what: 'code-like bytes, one function grown', ...oneFunctionChanged(1 * MB, 1, { chipId: 0 }) },
  );
  printEndToEnd(e2e);
  const out = join(ROOT, 'bench/results');
  mkdirSync(out, { recursive: true });
  writeFileSync(join(out, 'delta.json'), JSON.stringify({ node: process.version, rows, note, endToEnd: e2e }, null, 2) + '\n');
  console.log(`  written ${join(out, 'delta.json')}`);
  return { rows, note, endToEnd: e2e };
}
