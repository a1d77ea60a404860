'use strict';
// `npm start`: a real Node-RED on http://127.0.0.1:1880 with this package
// installed into a user dir inside the repo (.node-red-demo, git-ignored) and
// the example flow deployed, updating a virtual ESP32.
//
// Environment: PORT (default 1880), BLE_OTA_DEMO_DIR (default .node-red-demo).
const fs = require('node:fs');
const path = require('node:path');
const { spawn } = require('node:child_process');

const root = path.resolve(__dirname, '..');
const userDir = path.resolve(process.env.BLE_OTA_DEMO_DIR || path.join(root, '.node-red-demo'));
const port = Number(process.env.PORT || 1880);
const pkg = require(path.join(root, 'package.json'));

const { buildAppImage } = require(path.join(root, 'dist/lib/image/app-image-builder'));
const { ensureVirtualEsp32 } = require(path.join(root, 'dist/lib/virtual/build'));

function installPackage() {
  // The package goes in as `npm install <path>` would put it: a link in the
  // user dir's node_modules, so a rebuild is picked up by the next start.
  const modules = path.join(userDir, 'node_modules');
  fs.mkdirSync(modules, { recursive: true });
  const link = path.join(modules, pkg.name);
  fs.rmSync(link, { recursive: true, force: true });
  fs.symlinkSync(path.relative(modules, root), link, 'dir');
  fs.writeFileSync(
    path.join(userDir, 'package.json'),
    JSON.stringify({ name: 'node-red-demo', private: true, dependencies: { [pkg.name]: `file:${path.relative(userDir, root)}` } }, null, 2),
  );
}

function writeFirmware() {
  const dir = path.join(userDir, 'firmware');
  fs.mkdirSync(dir, { recursive: true });
  const image = buildAppImage({ projectName: 'demo-app', version: '2.0.0', size: 512 * 1024, seed: 2 });
  fs.writeFileSync(path.join(dir, 'demo-app.bin'), image);
}

function writeFlows() {
  // The example has no tab of its own (Import > Examples puts it in the
  // current one): give it one.
  const example = JSON.parse(fs.readFileSync(path.join(root, 'examples/update-virtual-esp32.json'), 'utf8'));
  const tab = { id: 'b1e07a0000000001', type: 'tab', label: 'BLE OTA demo' };
  const nodes = example.map((n) => ('z' in n ? { ...n, z: tab.id } : n));
  fs.writeFileSync(path.join(userDir, 'flows.json'), JSON.stringify([tab, ...nodes], null, 2));
}

function writeSettings() {
  const settings = `module.exports = {
  uiHost: '127.0.0.1',
  uiPort: ${port},
  flowFile: 'flows.json',
  credentialSecret: false,
  fileWorkingDirectory: ${JSON.stringify(userDir)},
  editorTheme: { tours: false, projects: { enabled: false } },
  // The demo sends nothing anywhere, and asks nothing about it.
  telemetry: { enabled: false },
  logging: { console: { level: 'info', metrics: false, audit: false } },
};
`;
  fs.writeFileSync(path.join(userDir, 'settings.js'), settings);
}

async function main() {
  fs.mkdirSync(userDir, { recursive: true });
  installPackage();
  writeFirmware();
  writeFlows();
  writeSettings();
  await ensureVirtualEsp32(); // compile now, so the first update does not wait for it

  const red = require.resolve('node-red/red.js', { paths: [root] });
  const child = spawn(process.execPath, [red, '--userDir', userDir, '--settings', path.join(userDir, 'settings.js')], {
    stdio: 'inherit',
    // The demo's device is in range from the start, so the device dialog's Scan finds it.
    env: { BLE_OTA_VIRTUAL_DEVICES: 'esp32-demo', ...process.env },
  });
  console.log(`Node-RED with the BLE OTA demo: http://127.0.0.1:${port} (Ctrl-C to stop)`);
  for (const signal of ['SIGINT', 'SIGTERM']) process.on(signal, () => child.kill(signal));
  child.on('exit', (code) => process.exit(code ?? 0));
}

main().catch((err) => {
  console.error(`npm start failed: ${err.message}`);
  process.exit(1);
});
