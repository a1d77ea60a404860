/**
 * Suffix array by induced sorting (SA-IS: G. Nong, S. Zhang, W. H. Chan,
 * "Two Efficient Algorithms for Linear Time Suffix Array Construction",
 * IEEE Transactions on Computers 60(10), 2011), in linear time. The end of
 * the text acts as a sentinel smaller than every byte without being stored,
 * and the reduced problem of each level lives inside the output array, so
 * the memory is the array (4 bytes a byte of text) plus a byte of type per
 * byte of text and the buckets.
 */

type Text = Uint8Array | Int32Array;

const NONE = new Uint8Array(0);

/** The suffix array of `text`: the start of every suffix, in lexicographic order (a proper prefix first). */
export function suffixArray(text: Uint8Array): Int32Array {
  const sa = new Int32Array(text.length);
  sais(text, sa, text.length, 256);
  return sa;
}

/** true: S-type (smaller than the suffix after it); the last suffix is L-type (the sentinel follows). */
function classify(t: Text, n: number): Uint8Array {
  const s = new Uint8Array(n);
  for (let i = n - 2; i >= 0; i--) s[i] = t[i] < t[i + 1] || (t[i] === t[i + 1] && s[i + 1] === 1) ? 1 : 0;
  return s;
}

function bucketStarts(t: Text, n: number, bkt: Int32Array): void {
  bkt.fill(0);
  for (let i = 0; i < n; i++) bkt[t[i]]++;
  let sum = 0;
  for (let c = 0; c < bkt.length; c++) {
    const count = bkt[c];
    bkt[c] = sum;
    sum += count;
  }
}

function bucketEnds(t: Text, n: number, bkt: Int32Array): void {
  bkt.fill(0);
  for (let i = 0; i < n; i++) bkt[t[i]]++;
  let sum = 0;
  for (let c = 0; c < bkt.length; c++) {
    sum += bkt[c];
    bkt[c] = sum;
  }
}

/** From LMS suffixes at their buckets' ends: L-type suffixes left to right, then S-type right to left. */
function induce(t: Text, sa: Int32Array, s: Uint8Array, n: number, bkt: Int32Array): void {
  bucketStarts(t, n, bkt);
  // The last suffix is L-type and comes right after the sentinel.
  sa[bkt[t[n - 1]]++] = n - 1;
  for (let i = 0; i < n; i++) {
    const j = sa[i] - 1;
    if (j >= 0 && s[j] === 0) sa[bkt[t[j]]++] = j;
  }
  bucketEnds(t, n, bkt);
  for (let i = n - 1; i >= 0; i--) {
    const j = sa[i] - 1;
    if (j >= 0 && s[j] === 1) sa[--bkt[t[j]]] = j;
  }
}

function isLms(s: Uint8Array, i: number): boolean {
  return i > 0 && s[i] === 1 && s[i - 1] === 0;
}

/** Whether the LMS substrings at p and q differ (each runs to the next LMS position, or to the sentinel). */
function lmsDiffer(t: Text, s: Uint8Array, n: number, p: number, q: number): boolean {
  for (let d = 0; ; d++) {
    if (p + d === n || q + d === n) return true;
    if (t[p + d] !== t[q + d] || s[p + d] !== s[q + d]) return true;
    if (d > 0 && isLms(s, p + d)) return false;
  }
}

function sais(t: Text, sa: Int32Array, n: number, k: number): void {
  if (n === 0) return;
  if (n === 1) {
    sa[0] = 0;
    return;
  }
  let s = classify(t, n);
  const bkt = new Int32Array(k);

  // 1. Sort the LMS substrings: LMS positions at their buckets' ends, then induce.
  bucketEnds(t, n, bkt);
  sa.fill(-1, 0, n);
  for (let i = 1; i < n; i++) if (s[i] === 1 && s[i - 1] === 0) sa[--bkt[t[i]]] = i;
  induce(t, sa, s, n, bkt);

  // 2. Name them: the sorted LMS positions to sa[0, n1), each one's name at
  // sa[n1 + pos / 2] (LMS positions are at least 2 apart), then the names in
  // text order to the end of sa: the reduced text.
  let n1 = 0;
  for (let i = 0; i < n; i++) if (isLms(s, sa[i])) sa[n1++] = sa[i];
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

  // 3. The order of the LMS suffixes: from the reduced text's suffix array,
  // by recursion unless every name is unique.
  const reduced = sa.subarray(n - n1, n);
  const order = sa.subarray(0, n1);
  if (names < n1) {
    s = NONE; // the recursion needs the memory more than this level's types, found again after it
    sais(reduced, order, n1, names);
    s = classify(t, n);
  } else {
    for (let i = 0; i < n1; i++) order[reduced[i]] = i;
  }

  // 4. The LMS suffixes in order at their buckets' ends, then induce the rest.
  for (let i = 1, j = 0; i < n; i++) if (s[i] === 1 && s[i - 1] === 0) reduced[j++] = i;
  for (let i = 0; i < n1; i++) order[i] = reduced[order[i]];
  sa.fill(-1, n1, n);
  bucketEnds(t, n, bkt);
  for (let i = n1 - 1; i >= 0; i--) {
    const p = sa[i];
    sa[i] = -1;
    sa[--bkt[t[p]]] = p;
  }
  induce(t, sa, s, n, bkt);
}
