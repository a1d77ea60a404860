'use strict';
// Puts what tsc does not build beside the compiled nodes: each node's editor
// HTML, its message catalogues and help (locales/), and the icons, which
// Node-RED looks for in an icons/ folder next to each node's .js file.
const fs = require('node:fs');
const path = require('node:path');

const root = path.resolve(__dirname, '..');
const nodesSrc = path.join(root, 'nodes');
const nodesOut = path.join(root, 'dist', 'nodes');

for (const name of fs.readdirSync(nodesSrc)) {
  const dir = path.join(nodesSrc, name);
  if (!fs.statSync(dir).isDirectory()) continue;
  const out = path.join(nodesOut, name);
  for (const file of fs.readdirSync(dir).filter((f) => f.endsWith('.html'))) {
    fs.mkdirSync(out, { recursive: true });
    fs.copyFileSync(path.join(dir, file), path.join(out, file));
    fs.cpSync(path.join(root, 'icons'), path.join(out, 'icons'), { recursive: true });
  }
  const locales = path.join(dir, 'locales');
  if (fs.existsSync(locales)) fs.cpSync(locales, path.join(out, 'locales'), { recursive: true });
}

// The command-line tool (package.json "bin"): tsc writes it without the
// executable bit. npm install sets it, but npm pack (npm 11) keeps the file's
// own mode for this path, so the published tarball gets the bit from here;
// it also lets a checkout run ./dist/lib/cli/main.js directly.
const cli = path.join(root, 'dist', 'lib', 'cli', 'main.js');
if (fs.existsSync(cli)) fs.chmodSync(cli, 0o755);
