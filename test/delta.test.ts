/**
 * Delta patches (docs/DELTA.md): a computed patch rebuilds the new image
 * exactly, from random and structured pairs, whatever pieces it arrives in
 * and wherever a transfer rewinds to; patches stay small where little
 * changed (code that moved included) and never grow much beyond the image
 * where nothing is shared; a patch made for another base image is refused
 * before a byte is rebuilt; and the device's applier in C (firmware/host
 * test-delta) rebuilds the same images from these patches and reaches the
 * same verdict as the TypeScript one on damaged copies of them.
 */
import { strict as assert } from 'node:assert';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { applyPatch, PatchApplier } from '../lib/delta/apply';
import { computePatch } from '../lib/delta/diff';
import { decodeHeader, DELTA_BLOCK, DELTA_HEADER_SIZE, DeltaPatchError } from '../lib/delta/format';
import { suffixArray } from '../lib/delta/suffix-array';
import { ROOT } from './support/node-red-process';
import { mulberry32, Random } from './support/prng';

const sha256 = (b: Uint8Array) => createHash('sha256').update(b).digest();

function randomBytes(random: Random, n: number): Buffer {
  const out = Buffer.alloc(n);
  for (let i = 0; i < n; i++) out[i] = Math.floor(random() * 256);
  return out;
}

/**
 * A stand-in for a build of code: 32-bit words, a quarter of them
 * "addresses" into the image (as RISC-V and Xtensa code and literal pools
 * hold). `insertAt` bytes inserted at one place move everything after it,
 * and every address pointing past it changes by as much: the new build of
 * code where one function grew.
 */
function codeLike(random: Random, words: number, insertAt = -1, inserted = 0): { image: Buffer } {
  const base = 0x42000000;
  const out = Buffer.alloc(words * 4 + (insertAt >= 0 ? inserted : 0));
  const r = mulberry32(Math.floor(random() * 2 ** 32));
  let at = 0;
  for (let w = 0; w < words; w++) {
    if (insertAt >= 0 && w * 4 === insertAt) {
      for (let k = 0; k < inserted; k++) out[at++] = (k * 37) & 0xff;
    }
    const kind = r();
    const value = Math.floor(r() * 2 ** 32);
    if (kind < 0.25) {
      let target = Math.floor((value / 2 ** 32) * words) * 4;
      if (insertAt >= 0 && target >= insertAt) target += inserted;
      out.writeUInt32LE((base + target) >>> 0, at);
    } else {
      // Instructions repeat a lot: few distinct words.
      out.writeUInt32LE((value & 0x3f) * 0x01010101, at);
    }
    at += 4;
  }
  return { image: out };
}

/** Applies with the streaming applier in random pieces, rewinding at random; returns the image. */
function applyInPieces(old: Buffer, patch: Buffer, random: Random): Buffer {
  const parts: Buffer[] = [];
  const applier = new PatchApplier(
    (offset, length) => old.subarray(offset, offset + length),
    (bytes) => parts.push(Buffer.from(bytes)),
    { oldLimit: old.length },
  );
  let at = 0;
  while (at < patch.length) {
    const n = Math.min(patch.length - at, 1 + Math.floor(random() * 900));
    applier.feed(patch.subarray(at, at + n));
    at += n;
    if (at < patch.length && random() < 0.3) at = applier.rewind();
  }
  applier.finish();
  return Buffer.concat(parts);
}

/** A damaged copy of a patch, as a line the C test reads, with the TypeScript applier's verdict. */
function verdictLine(old: Buffer, patch: Buffer, random: Random): string {
  const kind = random();
  let damaged: Buffer;
  let spec: string;
  if (kind < 0.6) {
    // Mostly where the structure is: header, cursors, the first instructions of a block.
    const block = Math.floor(random() * Math.ceil(patch.length / DELTA_BLOCK));
    const at = random() < 0.5 ? Math.min(patch.length - 1, block * DELTA_BLOCK + Math.floor(random() * 24)) : Math.floor(random() * patch.length);
    const xor = 1 + Math.floor(random() * 255);
    damaged = Buffer.from(patch);
    damaged[at] ^= xor;
    spec = `flip ${at} ${xor}`;
  } else if (kind < 0.8) {
    const length = Math.floor(random() * patch.length);
    damaged = patch.subarray(0, length);
    spec = `cut ${length}`;
  } else {
    const at = Math.floor(random() * (patch.length + 1));
    const byte = Math.floor(random() * 256);
    damaged = Buffer.concat([patch.subarray(0, at), Buffer.from([byte]), patch.subarray(at)]);
    spec = `insert ${at} ${byte}`;
  }
  let produced = 0;
  let fault = 'OK';
  const applier = new PatchApplier(
    (offset, length) => old.subarray(offset, offset + length),
    (bytes) => (produced += bytes.length),
    { oldLimit: old.length, newLimit: 256 * 1024 },
  );
  try {
    applier.feed(damaged);
    applier.finish();
  } catch (err) {
    if (!(err instanceof DeltaPatchError)) throw err;
    fault = err.fault;
  }
  return `${spec} ${fault} ${produced}`;
}

describe('delta patches', function () {
  this.timeout(120_000);

  it('the suffix array orders every suffix (against a plain sort)', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 300 }), fc.integer({ min: 1, max: 256 }), (bytes, alphabet) => {
        const text = Buffer.from(bytes.map((b) => b % alphabet));
        const expected = [...text.keys()].sort((a, b) => Buffer.compare(text.subarray(a), text.subarray(b)));
        assert.deepEqual([...suffixArray(text)], expected);
      }),
      { numRuns: 400 },
    );
  });

  it('rebuilds the new image from random pairs: edits, moves, insertions, nothing shared', () => {
    const edit = fc.oneof(
      fc.record({ kind: fc.constant('flip' as const), at: fc.double({ min: 0, max: 1, noNaN: true }), n: fc.integer({ min: 1, max: 64 }) }),
      fc.record({ kind: fc.constant('insert' as const), at: fc.double({ min: 0, max: 1, noNaN: true }), n: fc.integer({ min: 1, max: 5000 }) }),
      fc.record({ kind: fc.constant('delete' as const), at: fc.double({ min: 0, max: 1, noNaN: true }), n: fc.integer({ min: 1, max: 5000 }) }),
      fc.record({ kind: fc.constant('move' as const), at: fc.double({ min: 0, max: 1, noNaN: true }), n: fc.integer({ min: 1, max: 9000 }) }),
    );
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 40_000 }), fc.array(edit, { maxLength: 12 }), fc.integer(), fc.boolean(), (size, edits, seed, unrelated) => {
        const random = mulberry32(seed);
        const old = randomBytes(random, size);
        let nw = unrelated ? randomBytes(random, Math.floor(random() * 40_000)) : Buffer.from(old);
        for (const e of edits) {
          const at = Math.floor(e.at * nw.length);
          if (e.kind === 'flip') for (let i = at; i < Math.min(nw.length, at + e.n); i++) nw[i] ^= 0x5a;
          if (e.kind === 'insert') nw = Buffer.concat([nw.subarray(0, at), randomBytes(random, e.n), nw.subarray(at)]);
          if (e.kind === 'delete') nw = Buffer.concat([nw.subarray(0, at), nw.subarray(at + e.n)]);
          if (e.kind === 'move') nw = Buffer.concat([nw.subarray(at, at + e.n), nw.subarray(0, at), nw.subarray(at + e.n)]);
        }
        const patch = computePatch(old, nw);
        assert.ok(applyPatch(old, patch).equals(nw));
        assert.ok(applyInPieces(old, patch, random).equals(nw));
        const h = decodeHeader(patch);
        assert.deepEqual([h.oldSize, h.newSize, h.patchSize], [old.length, nw.length, patch.length]);
        assert.ok(h.oldSha256.equals(sha256(old)) && h.newSha256.equals(sha256(nw)));
        // Nothing shared costs the image, a header, a cursor per block and a few opcodes: never much more.
        assert.ok(patch.length <= DELTA_HEADER_SIZE + nw.length + 16 * Math.ceil(nw.length / DELTA_BLOCK) + 16, `${patch.length} for ${nw.length}`);
      }),
      { numRuns: 150 },
    );
  });

  it('code that moved costs little: one function grown in 256 KB of code-like words', () => {
    const random = mulberry32(18);
    const { image: old } = codeLike(mulberry32(7), 64 * 1024);
    const { image: nw } = codeLike(mulberry32(7), 64 * 1024, 100_000, 600);
    const patch = computePatch(old, nw);
    assert.ok(applyInPieces(old, patch, random).equals(nw));
    // 600 new bytes, and about 16,000 addresses changed by 600 (each an ADD of a byte or two).
    const full = nw.length;
    assert.ok(patch.length < full / 4, `${patch.length} of ${full}`);
    // The same image again is a header and one COPY per block it spans.
    const same = computePatch(nw, nw);
    assert.ok(same.length <= DELTA_HEADER_SIZE + 8, `${same.length}`);
    assert.ok(applyPatch(nw, same).equals(nw));
  });

  it('instructions never cross a block, and every block starts with the positions reached', () => {
    const random = mulberry32(3);
    const old = randomBytes(random, 30_000);
    const nw = Buffer.concat([randomBytes(random, 9000), old.subarray(0, 12_000), randomBytes(random, 7000), old.subarray(15_000)]);
    for (let i = 0; i < nw.length; i += 97) nw[i] ^= 1;
    const patch = computePatch(old, nw);
    assert.ok(patch.length > 3 * DELTA_BLOCK);
    // Rewinding to each block from any point inside it rebuilds the same image.
    for (let block = 0; block * DELTA_BLOCK < patch.length; block++) {
      for (const within of [1, 100, DELTA_BLOCK - 1]) {
        const stop = Math.min(patch.length - 1, block * DELTA_BLOCK + within);
        const parts: Buffer[] = [];
        const applier = new PatchApplier(
          (o, l) => old.subarray(o, o + l),
          (b) => parts.push(Buffer.from(b)),
        );
        applier.feed(patch.subarray(0, stop));
        const from = applier.rewind();
        assert.equal(from, block * DELTA_BLOCK);
        applier.feed(patch.subarray(from));
        applier.finish();
        assert.ok(Buffer.concat(parts).equals(nw), `rewind in block ${block} at +${within}`);
      }
    }
  });

  it('a patch for another base image is refused before a byte is rebuilt', () => {
    const random = mulberry32(5);
    const old = randomBytes(random, 20_000);
    const nw = Buffer.concat([old.subarray(0, 10_000), randomBytes(random, 50), old.subarray(10_000)]);
    const patch = computePatch(old, nw);
    const other = randomBytes(random, 20_000);
    let emitted = 0;
    const check = new PatchApplier(
      (o, l) => other.subarray(o, o + l),
      (b) => (emitted += b.length),
      { oldLimit: other.length, checkHeader: (h) => h.oldSha256.equals(sha256(other)) },
    );
    assert.throws(
      () => check.feed(patch),
      (err: DeltaPatchError) => err.fault === 'BASE' && /base image/.test(err.message),
    );
    assert.equal(emitted, 0);
    // A smaller running image than the patch's base: refused from the header alone.
    const small = new PatchApplier(
      (o, l) => old.subarray(o, o + l),
      () => undefined,
      { oldLimit: old.length - 1 },
    );
    assert.throws(
      () => small.feed(patch.subarray(0, DELTA_HEADER_SIZE)),
      (err: DeltaPatchError) => err.fault === 'BASE',
    );
    const big = new PatchApplier(
      (o, l) => old.subarray(o, o + l),
      () => undefined,
      { newLimit: nw.length - 1 },
    );
    assert.throws(
      () => big.feed(patch),
      (err: DeltaPatchError) => err.fault === 'TOO_LARGE' && /does not fit/.test(err.message),
    );
    assert.throws(
      () => applyPatch(old, Buffer.from('not a patch at all, just some bytes'.repeat(4))),
      (err: DeltaPatchError) => err.fault === 'HEADER',
    );
  });

  it('the device applier in C rebuilds these patches and agrees on damaged ones', function () {
    const dir = mkdtempSync(join(tmpdir(), 'ble-ota-delta-'));
    try {
      const build = join(dir, 'build');
      execFileSync('make', ['-s', '-C', join(ROOT, 'firmware/host'), `BUILD_DIR=${build}`, `${build}/test-plain/test-delta`], { stdio: 'pipe' });
      const random = mulberry32(1818);
      const pairs: Array<[string, Buffer, Buffer]> = [];
      const { image: codeOld } = codeLike(mulberry32(9), 32 * 1024);
      const { image: codeNew } = codeLike(mulberry32(9), 32 * 1024, 40_000, 300);
      pairs.push(['code-moved', codeOld, codeNew]);
      const old = randomBytes(random, 60_000);
      const edited = Buffer.concat([old.subarray(0, 20_000), randomBytes(random, 5000), old.subarray(20_000, 50_000), old.subarray(52_000)]);
      for (let i = 0; i < edited.length; i += 501) edited[i] += 3;
      pairs.push(['edited', old, edited]);
      pairs.push(['unrelated', old, randomBytes(random, 30_000)]);
      pairs.push(['empty-new', old, Buffer.alloc(0)]);
      for (const [name, o, n] of pairs) {
        const patch = computePatch(o, n);
        writeFileSync(join(dir, `${name}.old`), o);
        writeFileSync(join(dir, `${name}.new`), n);
        writeFileSync(join(dir, `${name}.patch`), patch);
        const lines = Array.from({ length: 300 }, () => verdictLine(o, patch, random));
        writeFileSync(join(dir, `${name}.verdicts`), lines.join('\n') + '\n');
      }
      writeFileSync(join(dir, 'manifest.txt'), pairs.map(([name]) => name).join('\n') + '\n');
      let output: string;
      try {
        output = execFileSync(`${build}/test-plain/test-delta`, [dir], { encoding: 'utf8' });
      } catch (err) {
        assert.fail(`test-delta failed:\n${(err as { stdout?: string }).stdout ?? err}`);
      }
      assert.match(output, /delta: \d+ passed, 0 failed/);
      for (const [name] of pairs) assert.match(output, new RegExp(`${name}: \\d+-byte patch rebuilds \\d+ bytes; 300 damaged versions`));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
