'use strict';
// Removes what tsc left in dist/ from sources that are gone (a file moved
// or deleted): tsc never deletes, so such a file would still ship in the
// package (dist/lib, dist/nodes) or still run as a test (dist/test).
// Only compiled output (.js, .js.map, .d.ts) is touched: copy-assets.js
// puts none of those beside the nodes.
const fs = require('node:fs');
const path = require('node:path');

const root = path.resolve(__dirname, '..');
const dist = path.join(root, 'dist');
const COMPILED = /\.(js|js\.map|d\.ts)$/;

/** Files under dir, relative to it (readdirSync's recursive option needs Node 18.17). */
function walk(dir, prefix = '') {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const name = path.join(prefix, entry.name);
    return entry.isDirectory() ? walk(path.join(dir, entry.name), name) : [name];
  });
}

for (const top of ['lib', 'nodes', 'test', 'bench']) {
  const dir = path.join(dist, top);
  if (!fs.existsSync(dir)) continue;
  for (const file of walk(dir)) {
    if (!COMPILED.test(file)) continue;
    const source = path.join(root, top, file.replace(COMPILED, '.ts'));
    if (fs.existsSync(source)) continue;
    fs.rmSync(path.join(dir, file), { force: true });
  }
}
