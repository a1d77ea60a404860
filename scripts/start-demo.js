'use strict';
// `npm start`: a real Node-RED on http://127.0.0.1:1880 with this package
// installed into a user dir inside the repo (.node-red-demo, git-ignored) and
// the example flow deployed, updating a virtual ESP32.
//
// The demo is a fleet of its own, as docs/SECURITY.md sets one up: a fleet
// secret (the device node's credential; the virtual devices are provisioned
// from it) and a signing key (the virtual devices run an image signed with
// it and install only images signed with it; the demo image is). Both are
// made once, in the demo's folder. In a real setup the signing key stays
// where images are built.
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
const { generateSigningKey } = require(path.join(root, 'dist/lib/image/signature'));
const { newSecret } = require(path.join(root, 'dist/lib/client/session'));
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

/** The demo fleet's secret and signing key, made at the first start and kept. */
function demoOwner() {
  const dir = path.join(userDir, 'owner');
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  const secretFile = path.join(dir, 'fleet.secret');
  const keyFile = path.join(dir, 'signing-key.pem');
  if (!fs.existsSync(secretFile)) fs.writeFileSync(secretFile, `${newSecret().toString('hex')}\n`, { mode: 0o600 });
  if (!fs.existsSync(keyFile)) fs.writeFileSync(keyFile, generateSigningKey('ecdsa256'), { mode: 0o600 });
  return { secret: fs.readFileSync(secretFile, 'utf8').trim(), keyFile, signingKey: fs.readFileSync(keyFile, 'utf8') };
}

function writeFirmware(owner) {
  const dir = path.join(userDir, 'firmware');
  fs.mkdirSync(dir, { recursive: true });
  const image = buildAppImage({ projectName: 'demo-app', version: '2.0.0', size: 512 * 1024, seed: 2, signingKeys: owner.signingKey });
  fs.writeFileSync(path.join(dir, 'demo-app.bin'), image);
}

function writeFlows(owner) {
  // The example has no tab of its own (Import > Examples puts it in the
  // current one): give it one.
  const example = JSON.parse(fs.readFileSync(path.join(root, 'examples/update-virtual-esp32.json'), 'utf8'));
  const tab = { id: 'b1e07a0000000001', type: 'tab', label: 'BLE OTA demo' };
  const nodes = example.map((n) => ('z' in n ? { ...n, z: tab.id } : n));
  fs.writeFileSync(path.join(userDir, 'flows.json'), JSON.stringify([tab, ...nodes], null, 2));
  // The device node's fleet secret, where Node-RED keeps credentials (not
  // encrypted: the demo's settings have credentialSecret false).
  const credentials = {};
  for (const n of nodes) if (n.type === 'ble-ota-device') credentials[n.id] = { secret: owner.secret };
  fs.writeFileSync(path.join(userDir, 'flows_cred.json'), JSON.stringify(credentials, null, 2), { mode: 0o600 });
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
  const owner = demoOwner();
  writeFirmware(owner);
  writeFlows(owner);
  writeSettings();
  await ensureVirtualEsp32(); // compile now, so the first update does not wait for it

  const red = require.resolve('node-red/red.js', { paths: [root] });
  const child = spawn(process.execPath, [red, '--userDir', userDir, '--settings', path.join(userDir, 'settings.js')], {
    stdio: 'inherit',
    // The demo's device is in range from the start, so the device dialog's
    // Scan finds it; every virtual device is provisioned from the demo's
    // fleet secret and takes only images signed with its key.
    env: {
      BLE_OTA_VIRTUAL_DEVICES: 'esp32-demo',
      ...process.env,
      BLE_OTA_VIRTUAL_SECRET: owner.secret,
      BLE_OTA_VIRTUAL_SIGNING_KEY: owner.keyFile,
    },
  });
  console.log(`Node-RED with the BLE OTA demo: http://127.0.0.1:${port} (Ctrl-C to stop)`);
  console.log(`The demo fleet's secret and signing key are in ${path.join(userDir, 'owner')}; images you send to its devices must be signed with that key (npx esp32-ble-ota sign).`);
  for (const signal of ['SIGINT', 'SIGTERM']) process.on(signal, () => child.kill(signal));
  child.on('exit', (code) => process.exit(code ?? 0));
}

main().catch((err) => {
  console.error(`npm start failed: ${err.message}`);
  process.exit(1);
});
