/**
 * What one piece of work costs, measured in the fresh process the benchmark
 * starts for it (central.ts, delta-worker.ts): CPU (user + system) and wall
 * time, and the peak RSS during it above the RSS just before it (the work's
 * inputs already read: a caller holds them anyway).
 */
import { readFileSync, writeFileSync } from 'node:fs';

export interface Cost {
  cpuMs: number;
  wallMs: number;
  peakGrowthBytes: number;
  /** False where the peak could not be reset: it then is the process's since it started. */
  peakReset: boolean;
}

/** Starts the kernel's peak-RSS count afresh (Linux: clear_refs 5 resets VmHWM), so the peak read afterwards is the work's. */
function resetPeakRss(): boolean {
  try {
    writeFileSync('/proc/self/clear_refs', '5');
    return true;
  } catch {
    return false;
  }
}

/** The kernel's peak RSS of this process, in bytes. */
function peakRss(): number {
  try {
    const hwm = /VmHWM:\s+(\d+) kB/.exec(readFileSync('/proc/self/status', 'utf8'));
    if (hwm) return Number(hwm[1]) * 1024;
  } catch {
    // not Linux
  }
  return process.resourceUsage().maxRSS * 1024;
}

/** Runs work once and returns its result with what it cost this process. */
export async function measure<T>(work: () => T | Promise<T>): Promise<{ result: T; cost: Cost }> {
  const peakReset = resetPeakRss();
  const rssBefore = process.memoryUsage().rss;
  const cpu = process.cpuUsage();
  const started = process.hrtime.bigint();
  const result = await work();
  const wallMs = Number(process.hrtime.bigint() - started) / 1e6;
  const used = process.cpuUsage(cpu);
  const peakGrowthBytes = peakRss() - rssBefore;
  return { result, cost: { cpuMs: (used.user + used.system) / 1000, wallMs, peakGrowthBytes, peakReset } };
}
