/**
 * The real Bluetooth stacks in the loop: the OTA client on noble's own HCI,
 * L2CAP, ATT and GATT code (what users run on a Raspberry Pi), through
 * BlueZ's emulated controllers (btvirt), to bleno's peripheral stack serving
 * the firmware's OTA core. Only the kernel socket under noble and bleno is
 * replaced (test/support/emulated-controller).
 */
import { strict as assert } from 'node:assert';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { BleOtaClient } from '../lib/client/ota-client';
import type { NobleLike } from '../lib/client/noble-types';
import { BleOtaError } from '../lib/errors';
import { buildAppImage } from '../lib/image/app-image-builder';
import { loadSystemNoble } from '../lib/noble-loader';
import { VirtualDeviceOptions, VirtualEsp32 } from '../lib/virtual/virtual-device';
import { Btvirt } from './support/emulated-controller/btvirt';
import { installEmulatedHciTransport, UnixHciSocket } from './support/emulated-controller/hci-transport';
import { OtaPeripheral, PeripheralOptions } from './support/emulated-controller/ota-peripheral';
import { eventually } from './support/eventually';
import { NodeRedProcess } from './support/node-red-process';

const SECRET = '5e'.repeat(32);
/** HCI reason "connection timeout": what both hosts see when the radio link is lost. */
const CONNECTION_TIMEOUT = 0x08;

/** The noble events the client listens to while it works: none may stay behind. */
const NOBLE_EVENTS = ['stateChange', 'discover', 'scanStart', 'scanStop', 'warning'];

/** Makes a process's noble reach the emulated controllers (node --require). */
const PRELOAD = resolve(__dirname, 'support/emulated-controller/preload.js');
const CLI = resolve(__dirname, '../lib/cli/main.js');

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs node with the preload; `watch` sees the output as it comes. */
function runNode(args: string[], env: Record<string, string> = {}, watch?: (output: string, child: ReturnType<typeof spawn>) => void): Promise<Run> {
  return new Promise((done, fail) => {
    const child = spawn(process.execPath, ['--require', PRELOAD, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } });
    const run: Run = { code: null, stdout: '', stderr: '' };
    child.stdout.on('data', (d: Buffer) => {
      run.stdout += d.toString();
      watch?.(run.stdout + run.stderr, child);
    });
    child.stderr.on('data', (d: Buffer) => {
      run.stderr += d.toString();
      watch?.(run.stdout + run.stderr, child);
    });
    child.on('error', fail);
    child.on('exit', (code) => done({ ...run, code }));
  });
}

describe('the real Bluetooth stacks: noble HCI -> emulated controllers -> bleno -> firmware core', function () {
  this.timeout(120_000);
  let btvirt: Btvirt;
  let noble: NobleLike;
  let device: VirtualEsp32 | undefined;
  let peripheral: OtaPeripheral | undefined;
  const client = () => new BleOtaClient({ noble: loadSystemNoble, timeouts: { scanMs: 10_000 } });

  before(async () => {
    btvirt = await Btvirt.start();
    installEmulatedHciTransport();
    noble = loadSystemNoble();
  });

  after(async () => {
    await btvirt?.stop();
  });

  afterEach(async () => {
    await peripheral?.stop();
    await device?.stop();
    peripheral = undefined;
    device = undefined;
  });

  async function serve(options: VirtualDeviceOptions = {}, peripheralOptions: PeripheralOptions = {}): Promise<VirtualEsp32> {
    device = await VirtualEsp32.start({ name: 'esp32', restartDelayMs: 20, ...options });
    peripheral = await OtaPeripheral.start(device, peripheralOptions);
    return device;
  }

  function listeners(): number[] {
    return NOBLE_EVENTS.map((e) => (noble as unknown as NodeJS.EventEmitter).listenerCount(e));
  }

  it('updates with protocol v2, compressed and keyed, restarts and confirms over noble HCI', async () => {
    const d = await serve({ fleetSecret: SECRET });
    const before = listeners();
    const image = buildAppImage({ size: 256 * 1024, version: '2.0.0', fill: Buffer.from('app code and strings compress; '.repeat(64)) });

    const result = await client().update({ target: { name: 'esp32' }, image, secret: SECRET });

    assert.equal(result.protocol, 'v2');
    assert.equal(result.authenticated, true);
    assert.equal(result.confirmed, true);
    assert.equal(result.restarted, true);
    assert.equal(result.runningVersion, '2.0.0');
    assert.equal(result.mtu, 256, 'the MTU noble and bleno really negotiate');
    assert.ok(result.packets * result.packetSize < image.length, `compressed: ${result.packets} packets of ${result.packetSize} bytes for ${image.length}`);
    const state = await d.state();
    assert.equal(state.slots[state.running].state, 'valid');
    assert.ok((await d.readFlash(state.running, 0, image.length)).equals(image));
    assert.deepEqual(listeners(), before, 'no noble listener left behind');
  });

  it('sends an incompressible image uncompressed, in packets that fit the negotiated MTU', async () => {
    const d = await serve();
    const image = buildAppImage({ size: 128 * 1024, version: '2.0.1', seed: 3 });

    const result = await client().update({ target: { name: 'esp32' }, image, compress: false });

    assert.equal(result.packetSize, 256 - 3 - 4 - 9, 'ATT MTU minus the write header, the offset and the v2 stream header');
    assert.equal(result.packets, Math.ceil(image.length / result.packetSize));
    const state = await d.state();
    assert.ok((await d.readFlash(state.running, 0, image.length)).equals(image));
  });

  it("updates a device running the seed's firmware with the seed protocol", async () => {
    const d = await serve({ protocol: 'seed' });
    const image = buildAppImage({ size: 64 * 1024, version: '1.5.0', seed: 4 });

    const result = await client().update({ target: { name: 'esp32' }, image });

    assert.equal(result.protocol, 'seed');
    assert.equal(result.restarted, true);
    const state = await d.state();
    assert.equal(state.slots[state.running].size, image.length, 'the device runs the new image');
    assert.ok((await d.readFlash(state.running, 0, image.length)).equals(image));
  });

  it('finds a device by name when it does not advertise the OTA service', async () => {
    await serve({ name: 'kitchen-node' }, { advertiseService: false });
    const image = buildAppImage({ size: 32 * 1024, version: '2.0.2', seed: 5 });

    const result = await client().update({ target: { name: 'kitchen-node' }, image });

    assert.equal(result.device.name, 'kitchen-node');
    assert.equal(result.runningVersion, '2.0.2');
  });

  for (const who of ['peripheral', 'controller'] as const) {
    it(`resumes where it stopped when the ${who} drops the link mid-transfer`, async () => {
      const d = await serve();
      const image = buildAppImage({ size: 384 * 1024, version: '2.1.0', seed: 6 });
      let dropped = false;

      const result = await client().update({
        target: { name: 'esp32' },
        image,
        compress: false,
        onProgress: (p) => {
          if (dropped || p.phase !== 'uploading' || p.bytesSent < image.length / 3) return;
          dropped = true;
          if (who === 'peripheral') peripheral!.dropLink();
          else peripheral!.loseLink(CONNECTION_TIMEOUT);
        },
      });

      assert.ok(dropped);
      assert.equal(result.resumes, 1);
      assert.equal(result.confirmed, true);
      assert.ok(result.packets * result.packetSize < image.length * 1.5, `resumed, not restarted: ${result.packets} packets`);
      const state = await d.state();
      assert.ok((await d.readFlash(state.running, 0, image.length)).equals(image));
    });
  }

  it('cancels mid-transfer with CANCELLED, and the next update resumes and completes', async () => {
    const d = await serve();
    const image = buildAppImage({ size: 384 * 1024, version: '2.2.0', seed: 7 });
    const controller = new AbortController();
    const before = listeners();

    const cancelled = client().update({
      target: { name: 'esp32' },
      image,
      compress: false,
      signal: controller.signal,
      onProgress: (p) => {
        if (p.phase === 'uploading' && p.bytesSent > image.length / 2) controller.abort();
      },
    });
    await assert.rejects(cancelled, (err: unknown) => err instanceof BleOtaError && err.code === 'CANCELLED');
    // The device learns of the closed link over the air, after the call has ended.
    await eventually(
      () => d.state(),
      (s) => s.transfer === 'suspended',
      30_000,
      'a v2 transfer waiting for its resume',
    );
    assert.deepEqual(listeners(), before, 'no noble listener left behind');

    const result = await client().update({ target: { name: 'esp32' }, image, compress: false });
    assert.equal(result.runningVersion, '2.2.0');
    assert.ok(result.packets < Math.ceil(image.length / result.packetSize), 'the second call sent only what was missing');
  });

  it('cancelled at each HCI packet of its connection, noble keeps working: the next update completes', async () => {
    // The cancel lands between two packets of the connection's setup (LE Connection
    // Complete, MTU exchange, discovery...), one packet later in each round, until
    // the connection was made before it.
    await serve();
    const image = buildAppImage({ size: 32 * 1024, version: '2.3.0', seed: 8 });
    const before = listeners();
    const warnings: string[] = [];
    const onWarning = (w: Error) => warnings.push(w.message);
    process.on('warning', onWarning);
    let rounds = 0;
    for (let connected = false; !connected; rounds++) {
      assert.ok(rounds < 200, 'the connection is made within 200 packets');
      const controller = new AbortController();
      let seen = 0;
      const count = () => ++seen > rounds && controller.abort();
      const sockets = [...UnixHciSocket.open];
      await assert.rejects(
        client().update({
          target: { name: 'esp32' },
          image,
          signal: controller.signal,
          onProgress: (p) => {
            if (p.phase === 'connecting' && seen === 0) for (const socket of sockets) socket.on('data', count);
            else if (p.phase !== 'connecting' && p.phase !== 'scanning') connected = true;
          },
        }),
        (err: unknown) => err instanceof BleOtaError && err.code === 'CANCELLED',
      );
      for (const socket of sockets) socket.off('data', count);
    }
    process.off('warning', onWarning);
    assert.ok(rounds > 5, `${rounds} points of the connection tried`);
    assert.deepEqual(listeners(), before, 'no noble listener left behind');
    assert.deepEqual(warnings, [], 'no listener piling up on the peripheral');
    const result = await client().update({ target: { name: 'esp32' }, image: buildAppImage({ size: 32 * 1024, version: '2.3.1', seed: 9 }) });
    assert.equal(result.runningVersion, '2.3.1');
    assert.equal(result.confirmed, true);
  });

  it('a device that loses power as END is sent is updated on the next connection, every time', async () => {
    // Its handles are the same after the reboot: an answer of the old link must not be taken for one of the new.
    const d = await serve();
    for (let i = 0; i < 3; i++) {
      const image = buildAppImage({ size: 48 * 1024, version: `2.4.${i}`, seed: 20 + i });
      let cut = false;
      const result = await client().update({
        target: { name: 'esp32' },
        image,
        compress: false,
        onProgress: (p) => {
          if (cut || p.phase !== 'verifying') return;
          cut = true;
          void d.powerCycle();
        },
      });
      assert.ok(cut);
      assert.equal(result.runningVersion, `2.4.${i}`);
      assert.equal(result.confirmed, true);
      assert.equal(result.resumes, 1);
    }
  });

  describe('the system Bluetooth path in other processes, as users run it', () => {
    let dir: string;
    before(() => (dir = mkdtempSync(join(tmpdir(), 'ble-ota-hci-'))));
    after(() => rmSync(dir, { recursive: true, force: true }));

    function imageFile(name: string, version: string, size: number): string {
      const file = join(dir, name);
      writeFileSync(file, buildAppImage({ size, version, seed: size % 97 }));
      return file;
    }

    it('the CLI on Ctrl-C cancels the update: exit 130 and a CANCELLED JSON document', async () => {
      await serve();
      const file = imageFile('cancel.bin', '3.0.0', 1024 * 1024);
      let interrupted = false;
      const run = await runNode([CLI, 'upload', file, '--device', 'esp32', '--json'], {}, (output, child) => {
        if (!interrupted && /uploading/.test(output)) {
          interrupted = true;
          child.kill('SIGINT');
        }
      });
      assert.ok(interrupted, `the upload never started:\n${run.stderr}`);
      assert.equal(run.code, 130, run.stderr);
      assert.equal((JSON.parse(run.stdout) as { error: { code: string } }).error.code, 'CANCELLED');
    });

    it('the CLI updates in HCI user-channel mode, where noble itself never asks the controller for its buffers', async () => {
      const d = await serve();
      const file = imageFile('user-channel.bin', '3.1.0', 96 * 1024);
      const run = await runNode([CLI, 'upload', file, '--device', 'esp32', '--json'], { HCI_CHANNEL_USER: '1' });
      assert.equal(run.code, 0, run.stderr);
      assert.equal((JSON.parse(run.stdout) as { runningVersion: string }).runningVersion, '3.1.0');
      const state = await d.state();
      assert.equal(state.slots[state.running].state, 'valid');
    });

    it('a script using the library exits by itself after releaseSystemBluetooth()', async () => {
      await serve();
      const file = imageFile('script.bin', '3.2.0', 48 * 1024);
      const script = `
        const { BleOtaClient, releaseSystemBluetooth } = require(${JSON.stringify(resolve(__dirname, '../lib/index.js'))});
        const image = require('node:fs').readFileSync(${JSON.stringify(file)});
        new BleOtaClient().update({ target: { name: 'esp32' }, image })
          .then((r) => console.log('updated to', r.runningVersion))
          .finally(() => releaseSystemBluetooth());`;
      const run = await runNode(['-e', script]);
      assert.equal(run.code, 0, run.stderr);
      assert.match(run.stdout, /updated to 3\.2\.0/);
    });

    it('a Node-RED flow whose device node uses the system Bluetooth updates the device', async () => {
      const d = await serve({ name: 'garage' });
      const file = imageFile('flow.bin', '3.3.0', 64 * 1024);
      const nr = await NodeRedProcess.start(
        [
          { id: 'i', type: 'inject', z: 'x', props: [{ p: 'payload' }], payloadType: 'date', wires: [['f']] },
          { id: 'f', type: 'file in', z: 'x', filename: file, filenameType: 'str', format: '', encoding: 'none', wires: [['u']] },
          { id: 'u', type: 'ble-ota-upload', z: 'x', device: 'd', wires: [['log'], ['log']] },
          { id: 'log', type: 'debug', z: 'x', active: true, tosidebar: false, console: true, complete: 'payload', wires: [] },
          { id: 'd', type: 'ble-ota-device', device: 'garage', backend: 'bluetooth', scanTimeout: 10, operationTimeout: 10 },
        ],
        '',
        { NODE_OPTIONS: `--require ${PRELOAD}` },
      );
      try {
        await nr.inject('i');
        await nr.waitForOutput(/runningVersion: '3\.3\.0'|"runningVersion":"3\.3\.0"/, 60_000);
        const state = await d.state();
        assert.equal(state.slots[state.running].state, 'valid');
      } finally {
        await nr.stop();
      }
    });
  });
});
