/**
 * Computes a delta patch (docs/DELTA.md) that rebuilds `newImage` from
 * `oldImage`, with Node's own modules only.
 *
 * Matching: a suffix array of the old image finds, for a position of the
 * new one, the longest run of the old image equal to what follows. Code
 * that moved in a new build is not equal to its old self: the addresses in
 * it changed (a call to a function that moved, a literal's address). So
 * the matcher follows an alignment (old position minus new position) and
 * keeps it while it predicts the new bytes about as well as the best exact
 * match would; only a match clearly better (THRESHOLD bytes more) starts a
 * new alignment. Each aligned stretch is extended forwards and backwards
 * while at least half of its bytes agree, and sent as COPY for equal runs
 * and ADD (the per-byte difference) for the rest; what no alignment covers
 * is INSERTed. This is the approach of Colin Percival's bsdiff ("Naive
 * differences of executable code", 2003), in a patch format of our own.
 *
 * Cost: the suffix array (linear time, 4 bytes per old byte plus a byte of
 * type) and one binary search per new position where no alignment holds.
 */
import { PatchWriter } from './format';
import { suffixArray } from './suffix-array';

/** A new alignment must match this many bytes more than the current one predicts. */
const THRESHOLD = 8;
/** Equal bytes between two differing ones that stay inside one ADD (an ADD and a COPY opcode cost 2 bytes). */
const GAP = 1;

/** The patch that rebuilds newImage from oldImage. */
export function computePatch(oldImage: Uint8Array, newImage: Uint8Array): Buffer {
  return new Differ(oldImage, newImage).run();
}

class Differ {
  private readonly sa: Int32Array;
  private readonly writer: PatchWriter;
  private scratch = new Uint8Array(4096);
  /** The last search's result. */
  private matchPos = 0;
  private matchLen = 0;

  constructor(
    private readonly old: Uint8Array,
    private readonly nw: Uint8Array,
  ) {
    this.sa = suffixArray(old);
    this.writer = new PatchWriter(old, nw);
  }

  run(): Buffer {
    const old = this.old;
    const nw = this.nw;
    const O = old.length;
    const N = nw.length;
    let scan = 0;
    let len = 0;
    let pos = 0;
    let lastScan = 0;
    let lastPos = 0;
    let lastOffset = 0;
    while (scan < N) {
      let oldScore = 0;
      scan += len;
      let scsc = scan;
      for (; scan < N; scan++) {
        this.search(scan);
        len = this.matchLen;
        pos = this.matchPos;
        // How many of the match's bytes the current alignment predicts as well.
        for (; scsc < scan + len; scsc++) {
          const o = scsc + lastOffset;
          if (o >= 0 && o < O && old[o] === nw[scsc]) oldScore++;
        }
        if ((len === oldScore && len !== 0) || len > oldScore + THRESHOLD) break;
        const o = scan + lastOffset;
        if (o >= 0 && o < O && old[o] === nw[scan]) oldScore--;
      }
      if (len === oldScore && scan !== N) continue;

      // [lastScan, scan) is settled: the old alignment's stretch forwards,
      // the new one's backwards from scan, what neither covers inserted.
      let lenf = 0;
      for (let i = 0, same = 0, best = 0; lastScan + i < scan && lastPos + i < O;) {
        if (old[lastPos + i] === nw[lastScan + i]) same++;
        i++;
        if (same * 2 - i > best * 2 - lenf) {
          best = same;
          lenf = i;
        }
      }
      let lenb = 0;
      if (scan < N) {
        for (let i = 1, same = 0, best = 0; scan >= lastScan + i && pos >= i; i++) {
          if (old[pos - i] === nw[scan - i]) same++;
          if (same * 2 - i > best * 2 - lenb) {
            best = same;
            lenb = i;
          }
        }
      }
      if (lastScan + lenf > scan - lenb) {
        // Both stretches claim the overlap: split it where the two agree best.
        const overlap = lastScan + lenf - (scan - lenb);
        let score = 0;
        let best = 0;
        let split = 0;
        for (let i = 0; i < overlap; i++) {
          if (nw[lastScan + lenf - overlap + i] === old[lastPos + lenf - overlap + i]) score++;
          if (nw[scan - lenb + i] === old[pos - lenb + i]) score--;
          if (score > best) {
            best = score;
            split = i + 1;
          }
        }
        lenf += split - overlap;
        lenb -= split;
      }
      if (lenf > 0) {
        this.writer.seekTo(lastPos);
        this.aligned(lastScan, lastPos, lenf);
      }
      if (scan - lenb > lastScan + lenf) this.writer.insert(nw.subarray(lastScan + lenf, scan - lenb));
      lastScan = scan - lenb;
      lastPos = pos - lenb;
      lastOffset = pos - scan;
    }
    return this.writer.finish();
  }

  /** `length` new bytes at `at` from old bytes at `from`: COPY where equal, ADD where not. */
  private aligned(at: number, from: number, length: number): void {
    const old = this.old;
    const nw = this.nw;
    let i = 0;
    while (i < length) {
      let j = i;
      while (j < length && old[from + j] === nw[at + j]) j++;
      if (j > i) {
        this.writer.copy(j - i);
        i = j;
        continue;
      }
      // A differing run, with short equal gaps inside it.
      while (j < length) {
        if (old[from + j] !== nw[at + j]) {
          j++;
          continue;
        }
        let g = j;
        while (g < length && g - j <= GAP && old[from + g] === nw[at + g]) g++;
        if (g - j <= GAP && g < length) {
          j = g;
          continue;
        }
        break;
      }
      if (this.scratch.length < j - i) this.scratch = new Uint8Array(Math.max(j - i, this.scratch.length * 2));
      for (let k = i; k < j; k++) this.scratch[k - i] = (nw[at + k] - old[from + k]) & 0xff;
      this.writer.add(this.scratch.subarray(0, j - i));
      i = j;
    }
  }

  /** The longest run of the old image equal to the new image at `scan`: matchPos, matchLen. */
  private search(scan: number): void {
    const sa = this.sa;
    const old = this.old;
    const nw = this.nw;
    const O = old.length;
    const N = nw.length;
    if (O === 0) {
      this.matchPos = 0;
      this.matchLen = 0;
      return;
    }
    let lo = 0;
    let hi = O - 1;
    let lcpLo = this.common(sa[lo], scan, 0);
    let lcpHi = this.common(sa[hi], scan, 0);
    while (hi - lo > 1) {
      const mid = (lo + hi) >>> 1;
      const p = sa[mid];
      // Every suffix between lo and hi shares at least the shorter of their common prefixes with the query.
      const l = this.common(p, scan, lcpLo < lcpHi ? lcpLo : lcpHi);
      if (scan + l < N && (p + l === O || old[p + l] < nw[scan + l])) {
        lo = mid;
        lcpLo = l;
      } else {
        hi = mid;
        lcpHi = l;
      }
    }
    if (lcpLo >= lcpHi) {
      this.matchPos = sa[lo];
      this.matchLen = lcpLo;
    } else {
      this.matchPos = sa[hi];
      this.matchLen = lcpHi;
    }
  }

  private common(p: number, scan: number, from: number): number {
    const old = this.old;
    const nw = this.nw;
    const max = Math.min(old.length - p, nw.length - scan);
    let l = from;
    while (l < max && old[p + l] === nw[scan + l]) l++;
    return l;
  }
}
