/**
 * Name patterns (the scan node's, a fleet job's `match` from the broker)
 * are globs matched without backtracking: a hostile pattern against a long
 * name anyone in radio range can advertise takes a number of steps
 * proportional to the name, counted here rather than timed.
 */
import { strict as assert } from 'node:assert';
import { readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import fc from 'fast-check';
import { globWalk, namePattern } from '../lib/client/discovery';

const ROOT = resolve(__dirname, '../..');

/** What the glob means, by the textbook table (no backtracking either): the reference for the walk. */
function reference(p: string, s: string): boolean {
  let row = Array.from({ length: s.length + 1 }, (_, j) => j === 0);
  for (const c of p) {
    const next = new Array<boolean>(s.length + 1).fill(false);
    next[0] = c === '*' && row[0];
    for (let j = 1; j <= s.length; j++) {
      next[j] = c === '*' ? row[j] || next[j - 1] : row[j - 1] && (c === '?' || c === s[j - 1]);
    }
    row = next;
  }
  return row[s.length];
}

/** Patterns that make a backtracking matcher take exponential or quadratic time, in glob form. */
const HOSTILE = [
  'a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*!', // what /^(a+)+!$/ asks, as a glob
  '*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*b',
  '*' + 'a'.repeat(30) + 'b', // the walk's own worst case: a long literal after a star
  '*?*?*?*?*?*?*?*?*?*?*?*?*?*?*?*?!',
];

/**
 * counts: steps for names of doubling length. Linear (a x n + b): each
 * doubling adds twice what the previous one added; a quadratic term would
 * make it four times.
 */
function assertLinear(p: string, counts: number[]): void {
  for (let k = 2; k < counts.length; k++) {
    const added = counts[k] - counts[k - 1];
    const before = counts[k - 1] - counts[k - 2];
    assert.ok(added <= 2 * before + p.length, `${p}: ${counts.join(', ')} steps`);
  }
}

describe('name patterns', () => {
  it('the documented glob syntax: * any run, ? one character, any case, everything else literal', () => {
    const cases: Array<[string, string, boolean]> = [
      ['esp32-*', 'ESP32-Kitchen', true],
      ['esp32-?', 'esp32-1', true],
      ['esp32-?', 'esp32-10', false],
      ['esp32.*', 'esp32-1', false],
      ['*-hall-*', 'esp32-hall-3', true],
      ['', '', true],
      ['', 'x', false],
      ['*', '', true],
      ['[ab]', 'a', false],
      ['[ab]', '[ab]', true],
    ];
    for (const [p, name, expected] of cases) assert.equal(namePattern(p)(name), expected, `${p} against ${name}`);
  });

  it('a regular expression is refused with a clear error, never compiled', () => {
    for (const p of ['/^(a+)+$/', '/esp32-\\d+/i']) {
      assert.throws(() => namePattern(p), { code: 'INVALID_ARGUMENT', message: /globs .* not regular expressions/ });
    }
  });

  it('agrees with the reference on any pattern and name, within (pattern + 1) x (name + 1) steps', () => {
    const text = fc.string({ unit: fc.constantFrom('a', 'b', '*', '?'), maxLength: 12 });
    const name = fc.string({ unit: fc.constantFrom('a', 'b'), maxLength: 16 });
    fc.assert(
      fc.property(text, name, (p, s) => {
        const { matched, steps } = globWalk(p, s);
        return matched === reference(p, s) && steps <= (p.length + 1) * (s.length + 1);
      }),
      { numRuns: 5000, seed: 16 },
    );
  });

  it('a hostile pattern against a long name: steps grow linearly with the name', () => {
    for (const p of HOSTILE) {
      const counts = [1_000, 2_000, 4_000, 8_000].map((n) => {
        const { matched, steps } = globWalk(p, 'a'.repeat(n));
        assert.equal(matched, false);
        assert.ok(steps <= (p.length + 1) * (n + 1), `${p}: ${steps} steps for ${n} characters`);
        return steps;
      });
      assertLinear(p, counts);
    }
    // What /^(a+)+$/ took seconds for: a BLE name's worth of a's and a stop, decided in a few steps per character.
    assert.ok(globWalk('a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*!', 'a'.repeat(247) + 'x').steps < 10 * 248);
  });

  it("the fleet gateway example's job match walks the same way: linear in the name", () => {
    const flow = JSON.parse(readFileSync(join(ROOT, 'examples/fleet-gateway.json'), 'utf8')) as Array<Record<string, unknown>>;
    const node = flow.find((n) => n.type === 'function' && n.name === 'claim what is free');
    assert.ok(node, 'the claim function');
    const source = String(node.func);
    assert.doesNotMatch(source, /new RegExp|\.match\(|\.test\(/, 'no regular expression from a job');
    const walk = /function globMatch\(pattern, name\) \{[\s\S]*?\n\}/.exec(source);
    assert.ok(walk, "the example's globMatch");
    const globMatch = new Function(`${walk[0]}; return globMatch;`)() as (p: unknown, n: unknown) => boolean;

    /** A name whose characters the walk reads through a counter: each turn of its loop reads name.length once. */
    function counted(n: number): { name: unknown; reads: () => number } {
      const chars = 'a'.repeat(n);
      let reads = 0;
      const lower = new Proxy(
        {},
        {
          get: (_t, key) => {
            if (key === 'length') {
              reads++;
              return chars.length;
            }
            return typeof key === 'string' && /^\d+$/.test(key) ? chars[Number(key)] : undefined;
          },
        },
      );
      return { name: { toLowerCase: () => lower }, reads: () => reads };
    }
    for (const p of HOSTILE) {
      const counts = [1_000, 2_000, 4_000, 8_000].map((n) => {
        const c = counted(n);
        assert.equal(globMatch(p, c.name), false);
        assert.ok(c.reads() <= (p.length + 1) * (n + 1), `${p}: ${c.reads()} turns for ${n} characters`);
        return c.reads();
      });
      assertLinear(p, counts);
    }
    assert.equal(globMatch('esp32-fleet-*', 'ESP32-FLEET-7'), true);
  });
});
