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

/** Starts the kernel's peak-RSS count afresh (Linux: clear_refs 5 resets VmHWM); false where it cannot. */
function resetPeakRss(): boolean {
  try {
    writeFileSync('/proc/self/clear_refs', '5');
    return true;
  } catch {
    return false;
  }
}

function peakRss(): number {
  try {
    const hwm = /VmHWM:\s+(\d+) kB/.exec(readFileSync('/proc/self/status', 'utf8'));
    if (hwm) return Number(hwm[1]) * 1024;
  } catch {
    // not Linux
  }
  return process.resourceUsage().maxRSS * 1024;
}

const [oldFile, newFile, patchFile] = process.argv.slice(2);
const oldImage = readFileSync(oldFile);
const newImage = readFileSync(newFile);
createHash('sha256').update(oldImage).digest();
createHash('sha256').update(newImage).digest();
const peakReset = resetPeakRss();
const rssBefore = process.memoryUsage().rss;
const cpu = process.cpuUsage();
const patch = computePatch(oldImage, newImage);
const used = process.cpuUsage(cpu);
const peakGrowthBytes = peakRss() - rssBefore;
writeFileSync(patchFile, patch);
console.log(JSON.stringify({ cpuMs: (used.user + used.system) / 1000, peakGrowthBytes, peakReset, patchBytes: patch.length }));
