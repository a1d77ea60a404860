/**
 * A small seeded PRNG for tests that pick faults and moments at random: a
 * failure prints its seed, and the seed replays the same choices.
 */
export type Random = () => number;

/** mulberry32: 32 bits of state, good enough to pick faults. */
export function mulberry32(seed: number): Random {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
