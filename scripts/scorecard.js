'use strict';
// The flow library's scorecard, `node-red-dev validate`, run where
// catalogue.nodered.org cannot be reached: its two catalogue lookups (P08,
// a package of a similar name; N02, node types another package registers)
// get an empty catalogue; everything else runs as published, the npm
// registry lookups included. docs/SCORECARD.md has the output and what the
// two lookups mean for this package.
//
//   node scripts/scorecard.js            (needs npx and the npm registry)
const { spawnSync } = require('node:child_process');
const { writeFileSync, mkdtempSync } = require('node:fs');
const { join, resolve } = require('node:path');
const { tmpdir } = require('node:os');

const shim = join(mkdtempSync(join(tmpdir(), 'scorecard-')), 'offline-catalogue.js');
writeFileSync(
  shim,
  `const Module = require('module');
const load = Module._load;
Module._load = function (request, parent, isMain) {
  const mod = load.apply(this, arguments);
  if (request === 'axios' && !mod.__offlineCatalogue) {
    const get = mod.get.bind(mod);
    mod.get = (url, ...rest) =>
      /catalogue\\.nodered\\.org/.test(url) ? Promise.resolve({ data: { modules: [] } }) : get(url, ...rest);
    mod.__offlineCatalogue = true;
  }
  return mod;
};
`,
);
const result = spawnSync('npx', ['--yes', 'node-red-dev@0.1.6', 'validate', '-p', resolve(__dirname, '..')], {
  stdio: 'inherit',
  env: { ...process.env, NODE_OPTIONS: `${process.env.NODE_OPTIONS ?? ''} --require ${shim}`.trim() },
});
process.exit(result.status ?? 1);
