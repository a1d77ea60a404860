'use strict';
// `npm start`: a real Node-RED with this package installed into a user dir
// inside the repo (.node-red-demo, git-ignored) and the example flow
// deployed, updating a virtual ESP32.
//
// It runs beside a Node-RED the user already has: when the port (PORT, 1880
// by default) is taken, it takes the next free one, and prints the URL to
// open once Node-RED listens there. The flows are the user's after the first
// start: what was changed in the editor is kept, until `npm start -- --reset`
// puts the example back (the flows before it are kept in flows.json.before-reset).
//
// The demo is a fleet of its own, as docs/SECURITY.md sets one up: a fleet
// secret (the device node's credential; the virtual devices are provisioned
// from it) and a signing key (the virtual devices run an image signed with
// it and install only images signed with it; the example's sample node signs
// with it). Both are made once, in the demo's folder. In a real setup the
// signing key stays where images are built.
//
// Environment: PORT (default 1880), BLE_OTA_DEMO_DIR (default .node-red-demo).
const fs = require('node:fs');
const net = require('node:net');
const path = require('node:path');
const { spawn } = require('node:child_process');

const root = path.resolve(__dirname, '..');
const userDir = path.resolve(process.env.BLE_OTA_DEMO_DIR || path.join(root, '.node-red-demo'));
const pkg = require(path.join(root, 'package.json'));

const { generateSigningKey } = require(path.join(root, 'dist/lib/image/signature'));
const { newSecret } = require(path.join(root, 'dist/lib/client/session'));
const { ensureVirtualEsp32 } = require(path.join(root, 'dist/lib/virtual/build'));

/** The editor's page title: how the start tells its own Node-RED from another one on the port. */
const TITLE = 'Node-RED: BLE OTA demo';
/** Ports tried after the one asked for, before any free one the system gives. */
const NEXT_PORTS = 20;

const USAGE = `usage: npm start [-- --reset]

Starts Node-RED with the BLE OTA demo in ${path.relative(process.cwd(), userDir) || '.'}.
  --reset   put the example flow back (the flows before are kept in flows.json.before-reset)

Environment: PORT (default 1880; a taken port is skipped for the next free one),
BLE_OTA_DEMO_DIR (the demo's folder).
`;

class UsageError extends Error {}

function parseArgs(argv) {
  const options = { reset: false };
  for (const arg of argv) {
    if (arg === '--reset') options.reset = true;
    else if (arg === '--help' || arg === '-h') options.help = true;
    else throw new UsageError(`unknown option "${arg}"`);
  }
  return options;
}

function requestedPort() {
  const text = process.env.PORT;
  if (text === undefined || text.trim() === '') return 1880;
  const port = Number(text);
  if (!Number.isInteger(port) || port < 1 || port > 65535) throw new UsageError(`PORT is "${text}": give a port number from 1 to 65535`);
  return port;
}

/** Whether nothing listens on 127.0.0.1:port (a listener on all addresses counts too). */
function isFree(port) {
  return new Promise((resolve) => {
    const server = net.createServer();
    server.once('error', () => resolve(false));
    server.listen({ port, host: '127.0.0.1', exclusive: true }, () => server.close(() => resolve(true)));
  });
}

/** The port asked for when it is free, else the next free one. */
async function choosePort(wanted) {
  for (let port = wanted; port <= Math.min(wanted + NEXT_PORTS, 65535); port++) {
    if (await isFree(port)) return port;
  }
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

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
  return { secret: fs.readFileSync(secretFile, 'utf8').trim(), keyFile };
}

/** Writes the example as the demo's flows: at the first start, and with --reset. */
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

/** The flows: the user's from the last start, unless there are none yet or a reset was asked for. */
function prepareFlows(owner, reset) {
  const flows = path.join(userDir, 'flows.json');
  if (!fs.existsSync(flows)) {
    writeFlows(owner);
    return 'new';
  }
  if (!reset) return 'kept';
  fs.copyFileSync(flows, `${flows}.before-reset`);
  writeFlows(owner);
  return 'reset';
}

function writeSettings(port) {
  const settings = `module.exports = {
  uiHost: '127.0.0.1',
  uiPort: ${port},
  flowFile: 'flows.json',
  credentialSecret: false,
  fileWorkingDirectory: ${JSON.stringify(userDir)},
  editorTheme: { page: { title: ${JSON.stringify(TITLE)} }, tours: false, projects: { enabled: false } },
  // The demo sends nothing anywhere, and asks nothing about it.
  telemetry: { enabled: false },
  logging: { console: { level: 'info', metrics: false, audit: false } },
};
`;
  fs.writeFileSync(path.join(userDir, 'settings.js'), settings);
}

/** Resolves once this Node-RED serves its editor on the port; rejects if it exits first. */
function listening(child, url) {
  return new Promise((resolve, reject) => {
    let done = false;
    const onExit = (code) => {
      done = true;
      reject(new Error(`Node-RED stopped (exit status ${code}) before it listened on ${url}; its messages are above`));
    };
    child.once('exit', onExit);
    const poll = async () => {
      if (done) return;
      try {
        const page = await (await fetch(url)).text();
        // Its own title: not another server that took the port in the meantime.
        if (page.includes(`<title>${TITLE}</title>`)) {
          done = true;
          child.off('exit', onExit);
          resolve();
          return;
        }
      } catch {
        // Not listening yet.
      }
      setTimeout(poll, 200);
    };
    void poll();
  });
}

async function main() {
  const options = parseArgs(process.argv.slice(2));
  if (options.help) {
    process.stdout.write(USAGE);
    return;
  }
  const wanted = requestedPort();
  fs.mkdirSync(userDir, { recursive: true });
  installPackage();
  const owner = demoOwner();
  const flows = prepareFlows(owner, options.reset);
  await ensureVirtualEsp32(); // compile now, so the first update does not wait for it

  const port = await choosePort(wanted);
  if (port !== wanted) console.log(`Port ${wanted} is in use (another Node-RED?): the demo takes port ${port}.`);
  writeSettings(port);
  const url = `http://127.0.0.1:${port}`;

  const red = require.resolve('node-red/red.js', { paths: [root] });
  const child = spawn(process.execPath, [red, '--userDir', userDir, '--settings', path.join(userDir, 'settings.js')], {
    stdio: 'inherit',
    // The demo's device is in range from the start, so the device dialog's
    // Scan finds it; every virtual device is provisioned from the demo's
    // fleet secret and takes only images signed with its key, with which the
    // sample node signs.
    env: {
      BLE_OTA_VIRTUAL_DEVICES: 'esp32-demo',
      ...process.env,
      BLE_OTA_VIRTUAL_SECRET: owner.secret,
      BLE_OTA_VIRTUAL_SIGNING_KEY: owner.keyFile,
    },
  });
  let stopping = false;
  for (const signal of ['SIGINT', 'SIGTERM']) {
    process.on(signal, () => {
      stopping = true;
      child.kill(signal);
    });
  }
  try {
    await listening(child, url);
  } catch (err) {
    if (stopping) process.exit(0); // Ctrl-C while it started: nothing to report
    throw err;
  }
  child.on('exit', (code) => process.exit(code ?? 0));

  // A demo folder from before the sample node: its flow reads a file no start writes now.
  const stale = flows === 'kept' && fs.readFileSync(path.join(userDir, 'flows.json'), 'utf8').includes('firmware/demo-app.bin');
  const kept = stale
    ? 'Your flows from the last start are kept; they read firmware/demo-app.bin, which npm start no longer writes: npm start -- --reset puts the new example back (it makes its image with the sample node).'
    : flows === 'kept'
      ? 'Your flows from the last start are kept; npm start -- --reset puts the example back.'
      : flows === 'reset'
        ? `The example flow is back; the flows before it are in ${path.join(userDir, 'flows.json.before-reset')}.`
        : 'The example flow is deployed; what you change in it is kept across starts (npm start -- --reset puts it back).';
  console.log(`
  Node-RED with the BLE OTA demo is running: open ${url}
  Press the update button in the "BLE OTA demo" tab. ${kept}
  The demo fleet's secret and signing key are in ${path.join(userDir, 'owner')}; images you send to its devices must be signed with that key (npx esp32-ble-ota sign). Ctrl-C stops it.
`);
}

main().catch((err) => {
  if (err instanceof UsageError) {
    process.stderr.write(`npm start: ${err.message}\n${USAGE}`);
    process.exit(2);
  }
  console.error(`npm start failed: ${err.message}`);
  process.exit(1);
});
