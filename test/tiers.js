'use strict';
// The test tiers. `npm test`, which CI runs, runs every test file
// (.mocharc.json: dist/test/**/*.test.js). `npm run test:fast` runs the
// files named here: unit, conformance, parser and node tests, in under a
// minute (scripts/test-fast.js). A file not named here is in the full tier
// only, so a new test file always runs in CI; test/tiers.test.ts checks
// that every name here is a test file and that the full tier takes them all.
// Not here: whatever starts Node-RED, Mosquitto, Chromium or btvirt
// processes, builds firmware, packs the package, or waits out real-time
// timeouts (scan windows, retries, soak and fault runs).

/**
 * The fast tier, by file name under test/ without `.test.ts`, slowest
 * first: parallel workers take the files in this order, so the long ones
 * start at once and the short ones fill in beside them.
 */
const FAST = [
  'scan-node',
  'upload-node',
  'status-node',
  'config-migrations',
  'performance',
  'v2-e2e',
  'self-test',
  'compression',
  'delta',
  'delta-cache',
  'virtual-bindings',
  'bad-input-corpus',
  'signature',
  'esp-image',
  'virtual-chips',
  'virtual-e2e',
  'cancel-connect',
  'cli-files',
  'signed-images',
  'firmware-config',
  'info-versions',
  'sample-node',
  'link-report',
  'name-patterns',
  'properties',
  'esp-chips',
  'v2-conformance',
  'hardware-suite',
  'adapter-queue',
  'node-plumbing',
  'docs',
  'protocol-constants',
  'tiers',
  'version',
  'client-options',
  'hidden-addresses',
  'bench-hardware',
];

/** Compiled test files of these names, as mocha's spec takes them. */
function spec(names) {
  return names.map((name) => `dist/test/${name}.test.js`);
}

module.exports = { FAST, spec };
