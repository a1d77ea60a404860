/**
 * One patch computed in a fresh process, for the benchmark (bench/delta.ts):
 *
 *   node delta-worker.js <old.bin> <new.bin> <patch out>
 *
 * Prints one JSON line: the CPU (user + system) of computePatch and its
 * peak RSS above the RSS just before it (both images already read and
 * hashed, as a client has them: it finds the base image by its SHA-256 and
 * sends the new one's), then writes the patch.
 */
import { createHash } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { computePatch } from '../lib/delta/diff';
import { measure } from './fresh-process';

async function main(): Promise<void> {
  const [oldFile, newFile, patchFile] = process.argv.slice(2);
  const oldImage = readFileSync(oldFile);
  const newImage = readFileSync(newFile);
  createHash('sha256').update(oldImage).digest();
  createHash('sha256').update(newImage).digest();
  const { result: patch, cost } = await measure(() => computePatch(oldImage, newImage));
  writeFileSync(patchFile, patch);
  console.log(JSON.stringify({ cpuMs: cost.cpuMs, peakGrowthBytes: cost.peakGrowthBytes, peakReset: cost.peakReset, patchBytes: patch.length }));
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
