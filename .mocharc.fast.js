'use strict';
// `npm run test:fast`: the fast tier (test/tiers.js), its files in parallel
// workers (most of their time is spent waiting on virtual devices and
// Node-RED, not on the CPU).
const base = require('./.mocharc.json');
const { FAST, spec } = require('./test/tiers');

module.exports = { ...base, spec: spec(FAST), parallel: true, jobs: 3 };
