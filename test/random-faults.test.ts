/**
 * Seeded random faults, not the fault matrix: each update meets a
 * random fault kind (a lost link, an unanswered request or discovery, lost
 * notifications, flash write errors once or for good, power cuts, a power
 * loss inside a flash operation, a second central taking the device, the
 * caller's cancel) at random moments and rates, and is retried as a caller
 * would, up to 3 more calls with the same image. After every call: a
 * success runs the new image confirmed; a failure's err.device is what the
 * device runs; after a power cycle the device boots the old or the new
 * image; no connection or noble listener is left. After the retries, every
 * fault that does not persist has ended in success. Over the run: no
 * unhandled rejection, no timers left behind, heap about flat.
 *
 * A violation prints its sequence seed: RANDOM_FAULTS_ONLY=<seed> runs that
 * fault plan alone; RANDOM_FAULTS_SEED changes the whole run (default fixed),
 * RANDOM_FAULTS_SEQUENCES its length. The engine, and the long run, are in
 * bench/random-faults.ts.
 */
import { strict as assert } from 'node:assert';
import { codeSummary, envOptions, PERSISTENT, RunReport, runRandomFaults, table, violationSummary } from '../bench/random-faults';

/** Updates (each with up to 3 retries), and devices at once: under a minute on 2 cores. */
const SEQUENCES = 250;
const CONCURRENCY = 6;
const DEFAULT_SEED = 0x13;

describe('random faults: seeded fault kinds, rates and moments, with retries', function () {
  this.timeout(300_000);
  let report: RunReport;
  const options = envOptions({ sequences: SEQUENCES, concurrency: CONCURRENCY, seed: DEFAULT_SEED });

  before(async function () {
    report = await runRandomFaults(options);
    const calls = report.sequences.reduce((n, s) => n + s.calls.length, 0);
    const indent = (text: string) => text.replace(/^/gm, '      ');
    console.log(indent(`seed ${report.seed}: ${report.sequences.length} updates, ${calls} calls in ${(report.ms / 1000).toFixed(1)} s`));
    console.log(indent(table(report)));
    if (report.violations.length) console.log(indent(violationSummary(report)));
    if (process.env.RANDOM_FAULTS_VERBOSE) console.log(indent(codeSummary(report)));
    console.log(
      indent(
        `heap ${(report.heapBefore / 1048576).toFixed(1)} -> ${(report.heapAfter / 1048576).toFixed(1)} MB${report.gc ? '' : ' (no gc)'}, timers ${report.timersBefore} -> ${report.timersAfter}`,
      ),
    );
  });

  const violations = (match: RegExp) => report.violations.filter((v) => match.test(v.message)).map((v) => `seed ${v.seed} call ${v.attempt} (${v.plan}): ${v.message}`);

  it('the faults were injected', () => {
    const planned = report.sequences.filter((s) => s.firingsPlanned > 0);
    const fired = planned.filter((s) => s.firingsFired > 0);
    assert.ok(fired.length >= planned.length * 0.8, `${fired.length} of ${planned.length} fault plans fired`);
  });

  it('a success leaves the new image running, confirmed', () => {
    assert.deepEqual(violations(/^success/), []);
  });

  it("a failure is a BleOtaError, and its err.device is what the device runs ('unknown' only after a restart or a CONFIRM left unanswered)", () => {
    assert.deepEqual(violations(/err\.device|not a BleOtaError/), []);
  });

  it('after a power cycle the device boots the old image or the new one, never anything else', () => {
    assert.deepEqual(violations(/power cycle/), []);
  });

  it('no call leaves a connection, or a listener on noble or its peripheral', () => {
    assert.deepEqual(violations(/connection stays open|listener/), []);
  });

  it('every fault that does not persist ends in success within 3 retries', () => {
    assert.deepEqual(violations(/no success after/), []);
    for (const s of report.sequences.filter((x) => PERSISTENT.has(x.kind) && x.successAfter === undefined)) {
      assert.ok(s.finalCode, `seed ${s.seed}: a persistent fault ended without an error code`);
    }
  });

  it('nothing else went wrong (no call hung, the harness held)', () => {
    assert.deepEqual(violations(/hung|harness/), []);
    assert.deepEqual(
      report.violations.map((v) => `seed ${v.seed}: ${v.message}`),
      [],
    );
  });

  it('no unhandled rejection', () => {
    assert.deepEqual(report.unhandledRejections, []);
  });

  it('no timers left behind, and the heap about flat', () => {
    assert.ok(report.timersAfter <= report.timersBefore + 3, `${report.timersBefore} timers before, ${report.timersAfter} after`);
    // Generous: only a leak that grows with every update fails this.
    assert.ok(report.heapAfter - report.heapBefore < 64 * 1048576, `heap grew by ${((report.heapAfter - report.heapBefore) / 1048576).toFixed(1)} MB`);
  });
});
