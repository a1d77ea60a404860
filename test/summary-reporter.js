'use strict';
// Mocha's spec reporter, plus a closing "N passed, N failed, N skipped" line
// that CI reads to count the tests.
const Spec = require('mocha/lib/reporters/spec');

class SummaryReporter extends Spec {
  constructor(runner, options) {
    super(runner, options);
    runner.once('end', () => {
      const s = runner.stats;
      process.stdout.write(`\nmocha: ${s.passes} passed, ${s.failures} failed, ${s.pending} skipped\n`);
    });
  }
}

module.exports = SummaryReporter;
