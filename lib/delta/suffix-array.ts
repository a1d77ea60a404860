/**
 * Suffix array by induced sorting (SA-IS: G. Nong, S. Zhang, W. H. Chan,
 * "Two Efficient Algorithms for Linear Time Suffix Array Construction",
 * IEEE Transactions on Computers 60(10), 2011), in linear time. The end of
 * the text acts as a sentinel smaller than every byte without being stored,
 * and the reduced problem of each level lives inside the output array (its
 * buckets too, where they fit), so the memory is the array (4 bytes a byte
 * of text) plus a bit of type per byte of text.
 *
 * Each loop is a function of its own: V8 compiles a hot loop while the
 * function around it still runs (on-stack replacement), and compiling a
 * large function whose later steps have not run yet is done again and again
 * as they do; small functions are compiled once or twice, each with what it
 * needs (a 1 MB patch in a fresh process: 19 deoptimisations instead of 71,
 * about a sixth less CPU).
 */

type Text = Uint8Array | Int32Array;

/** The suffix array of `text`: the start of every suffix, in lexicographic order (a proper prefix first). */
export function suffixArray(text: Uint8Array): Int32Array {
  const sa = new Int32Array(text.length);
  // A plain Uint8Array whatever the caller's (a Buffer is a subclass): one kind of byte text for the compiled code.
  sais(new Uint8Array(text.buffer, text.byteOffset, text.length), sa, text.length, 256);
  return sa;
}

/**
 * A bit per suffix, 1: S-type (smaller than the suffix after it); the last
 * suffix is L-type (the sentinel follows).
 */
function classify(t: Text, n: number): Uint8Array {
  const s = new Uint8Array((n >> 3) + 1);
  let next = 0;
  for (let i = n - 2; i >= 0; i--) {
    next = t[i] < t[i + 1] || (t[i] === t[i + 1] && next === 1) ? 1 : 0;
    if (next) s[i >> 3] |= 1 << (i & 7);
  }
  return s;
}

function sType(s: Uint8Array, i: number): number {
  return (s[i >> 3] >> (i & 7)) & 1;
}

function isLms(s: Uint8Array, i: number): boolean {
  return i > 0 && sType(s, i) === 1 && sType(s, i - 1) === 0;
}

/** bkt[c]: how many characters of the text are c. */
function countCharacters(t: Text, n: number, bkt: Int32Array): void {
  bkt.fill(0);
  for (let i = 0; i < n; i++) bkt[t[i]]++;
}

function bucketStarts(t: Text, n: number, bkt: Int32Array): void {
  countCharacters(t, n, bkt);
  let sum = 0;
  for (let c = 0; c < bkt.length; c++) {
    const count = bkt[c];
    bkt[c] = sum;
    sum += count;
  }
}

function bucketEnds(t: Text, n: number, bkt: Int32Array): void {
  countCharacters(t, n, bkt);
  let sum = 0;
  for (let c = 0; c < bkt.length; c++) {
    sum += bkt[c];
    bkt[c] = sum;
  }
}

/** From LMS suffixes at their buckets' ends: L-type suffixes left to right, then S-type right to left. */
function induce(t: Text, sa: Int32Array, s: Uint8Array, n: number, bkt: Int32Array): void {
  bucketStarts(t, n, bkt);
  induceL(t, sa, s, n, bkt);
  bucketEnds(t, n, bkt);
  induceS(t, sa, s, n, bkt);
}

function induceL(t: Text, sa: Int32Array, s: Uint8Array, n: number, bkt: Int32Array): void {
  // The last suffix is L-type and comes right after the sentinel.
  sa[bkt[t[n - 1]]++] = n - 1;
  for (let i = 0; i < n; i++) {
    const j = sa[i] - 1;
    if (j >= 0 && sType(s, j) === 0) sa[bkt[t[j]]++] = j;
  }
}

function induceS(t: Text, sa: Int32Array, s: Uint8Array, n: number, bkt: Int32Array): void {
  for (let i = n - 1; i >= 0; i--) {
    const j = sa[i] - 1;
    if (j >= 0 && sType(s, j) === 1) sa[--bkt[t[j]]] = j;
  }
}

/** Every LMS position at its bucket's end (bkt: the ends), the rest of sa -1. */
function placeLms(t: Text, sa: Int32Array, s: Uint8Array, n: number, bkt: Int32Array): void {
  sa.fill(-1, 0, n);
  for (let i = 1; i < n; i++) if (isLms(s, i)) sa[--bkt[t[i]]] = i;
}

/** The LMS positions among sa's n entries, in their order, moved to the front; returns how many. */
function gatherSortedLms(sa: Int32Array, s: Uint8Array, n: number): number {
  let n1 = 0;
  for (let i = 0; i < n; i++) if (isLms(s, sa[i])) sa[n1++] = sa[i];
  return n1;
}

/** Whether the LMS substrings at p and q differ (each runs to the next LMS position, or to the sentinel). */
function lmsDiffer(t: Text, s: Uint8Array, n: number, p: number, q: number): boolean {
  for (let d = 0; ; d++) {
    if (p + d === n || q + d === n) return true;
    if (t[p + d] !== t[q + d] || sType(s, p + d) !== sType(s, q + d)) return true;
    if (d > 0 && isLms(s, p + d)) return false;
  }
}

/**
 * Names the n1 sorted LMS substrings at sa's front (equal ones alike): each
 * one's name at sa[n1 + pos / 2] (LMS positions are at least 2 apart), then
 * the names in text order to the end of sa (the reduced text). Returns how
 * many names.
 */
function nameLms(t: Text, sa: Int32Array, s: Uint8Array, n: number, n1: number): number {
  sa.fill(-1, n1, n);
  let names = 0;
  let prev = -1;
  for (let i = 0; i < n1; i++) {
    const p = sa[i];
    if (prev < 0 || lmsDiffer(t, s, n, p, prev)) names++;
    prev = p;
    sa[n1 + (p >> 1)] = names - 1;
  }
  for (let i = n - 1, j = n - 1; i >= n1; i--) if (sa[i] >= 0) sa[j--] = sa[i];
  return names;
}

/** Every name unique: the reduced text's suffix array is its inverse. */
function invert(reduced: Int32Array, order: Int32Array, n1: number): void {
  for (let i = 0; i < n1; i++) order[reduced[i]] = i;
}

/** The reduced text's suffix array (order) turned into LMS positions, the LMS positions in text order listed in `reduced`. */
function lmsInOrder(s: Uint8Array, n: number, reduced: Int32Array, order: Int32Array, n1: number): void {
  for (let i = 1, j = 0; i < n; i++) if (isLms(s, i)) reduced[j++] = i;
  for (let i = 0; i < n1; i++) order[i] = reduced[order[i]];
}

/** The sorted LMS suffixes at sa's front moved to their buckets' ends (bkt: the ends), the rest -1. */
function placeSortedLms(t: Text, sa: Int32Array, n: number, n1: number, bkt: Int32Array): void {
  sa.fill(-1, n1, n);
  for (let i = n1 - 1; i >= 0; i--) {
    const p = sa[i];
    sa[i] = -1;
    sa[--bkt[t[p]]] = p;
  }
}

/** `spare`: an unused stretch of a caller's array, for the buckets when they fit. */
function sais(t: Text, sa: Int32Array, n: number, k: number, spare?: Int32Array): void {
  if (n === 0) return;
  if (n === 1) {
    sa[0] = 0;
    return;
  }
  const s = classify(t, n);
  const bkt = spare && spare.length >= k ? spare.subarray(0, k) : new Int32Array(k);

  // 1. Sort the LMS substrings: LMS positions at their buckets' ends, then induce.
  bucketEnds(t, n, bkt);
  placeLms(t, sa, s, n, bkt);
  induce(t, sa, s, n, bkt);

  // 2. Name them; the names in text order are the reduced text.
  const n1 = gatherSortedLms(sa, s, n);
  const names = nameLms(t, sa, s, n, n1);

  // 3. The order of the LMS suffixes: from the reduced text's suffix array,
  // by recursion unless every name is unique.
  const reduced = sa.subarray(n - n1, n);
  const order = sa.subarray(0, n1);
  // Between the LMS order and the reduced text lie n - 2 n1 unused entries: the recursion's buckets.
  if (names < n1) sais(reduced, order, n1, names, sa.subarray(n1, n - n1));
  else invert(reduced, order, n1);

  // 4. The LMS suffixes in order at their buckets' ends, then induce the rest.
  lmsInOrder(s, n, reduced, order, n1);
  bucketEnds(t, n, bkt);
  placeSortedLms(t, sa, n, n1, bkt);
  induce(t, sa, s, n, bkt);
}
