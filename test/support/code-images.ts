/**
 * App image pairs for delta updates, made without a cross compiler: the
 * package's image builder filled with deterministic code-like bytes (the
 * real pairs, scripts/delta-pairs.js, need gcc-riscv64-unknown-elf, which
 * CI does not have).
 *
 * The bytes stand for a build: 32-bit words, a quarter of them addresses
 * into the image (as RISC-V and Xtensa code and literal pools hold), the
 * rest from a small set of instruction words. The "one function changed"
 * build inserts bytes at one place: everything after it moves, and every
 * address pointing past it changes by as much, as when a function grows.
 */
import { AppImageOptions, buildAppImage } from '../../lib/image/app-image-builder';
import { mulberry32 } from './prng';

/** Code-like bytes of `size`; with `grow`, the build where the function at `grow.at` gained `grow.bytes` bytes. */
export function codeBytes(size: number, seed: number, grow?: { at: number; bytes: number }): Buffer {
  const words = Math.ceil(size / 4);
  const base = 0x42000000;
  const inserted = grow ? grow.bytes : 0;
  const out = Buffer.alloc(words * 4 + inserted);
  const r = mulberry32(seed);
  let at = 0;
  for (let w = 0; w < words; w++) {
    if (grow && w * 4 === grow.at) {
      for (let k = 0; k < inserted; k++) out[at++] = (k * 37 + seed) & 0xff;
    }
    const kind = r();
    const value = Math.floor(r() * 2 ** 32);
    if (kind < 0.25) {
      let target = Math.floor((value / 2 ** 32) * words) * 4;
      if (grow && target >= grow.at) target += inserted;
      out.writeUInt32LE((base + target) >>> 0, at);
    } else {
      out.writeUInt32LE((value & 0x3f) * 0x01010101, at);
    }
    at += 4;
  }
  return out.subarray(0, size);
}

export interface CodePair {
  old: Buffer;
  new: Buffer;
}

/**
 * Version 1.0.0 and 1.0.1 (or `versions`) of an app of `size` bytes, the
 * second with one function grown by `grown` bytes in the middle. `options`: the rest of the
 * image (project, chip, signing keys).
 */
export function oneFunctionChanged(size: number, seed: number, options: AppImageOptions = {}, grown = 96, versions: [string, string] = ['1.0.0', '1.0.1']): CodePair {
  const at = Math.floor(size / 8) * 4; // in the middle, on a word
  return {
    old: buildAppImage({ ...options, size, seed, version: versions[0], fill: codeBytes(size, seed) }),
    new: buildAppImage({ ...options, size, seed, version: versions[1], fill: codeBytes(size, seed, { at, bytes: grown }) }),
  };
}

/** Another program altogether, of the same size: nothing in common with `oneFunctionChanged`'s pair of another seed. */
export function unrelatedApp(size: number, seed: number, options: AppImageOptions = {}): Buffer {
  return buildAppImage({ ...options, size, seed, version: '9.0.0', fill: codeBytes(size, seed ^ 0x5a5a5a5a) });
}
