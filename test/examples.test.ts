/**
 * Every flow in examples/, deployed into a real Node-RED process with this
 * package, and run to its end against virtual ESP32s; the HTTP example with
 * real HTTP requests.
 */
import { strict as assert } from 'node:assert';
import { readdirSync, readFileSync, writeFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { buildAppImage } from '../lib/image/app-image-builder';
import { Mosquitto } from './support/mosquitto';
import { NodeRedProcess, ROOT } from './support/node-red-process';

type FlowNode = Record<string, unknown> & { id: string; type: string };

function example(file: string): FlowNode[] {
  return JSON.parse(readFileSync(join(ROOT, 'examples', file), 'utf8')) as FlowNode[];
}

describe('examples', function () {
  this.timeout(120_000);

  it('every example is valid flow JSON whose nodes are ours or Node-RED core nodes, with a comment saying what it does', () => {
    for (const file of readdirSync(join(ROOT, 'examples')).filter((f) => f.endsWith('.json'))) {
      const flow = example(file);
      assert.ok(Array.isArray(flow) && flow.length > 0, file);
      const comment = flow.find((n) => n.type === 'comment');
      assert.ok(comment && String(comment.info ?? '').length > 40, `${file} explains itself in a comment node`);
      const ids = new Set(flow.map((n) => n.id));
      assert.equal(ids.size, flow.length, `${file}: unique ids`);
      for (const n of flow) {
        for (const out of (n.wires as string[][] | undefined) ?? []) for (const id of out) assert.ok(ids.has(id), `${file}: ${n.id} wires to ${id}`);
      }
    }
  });

  describe('update-virtual-esp32.json: Inject, File In, upload, Debug', () => {
    let nr: NodeRedProcess;
    after(() => nr?.stop());

    it('reads the file and updates the virtual ESP32', async () => {
      const flow = example('update-virtual-esp32.json');
      nr = await NodeRedProcess.start(flow);
      mkdirSync(join(nr.userDir, 'firmware'), { recursive: true });
      writeFileSync(join(nr.userDir, 'firmware/demo-app.bin'), buildAppImage({ projectName: 'from-file', version: '1.2.3', size: 100_000 }));
      await nr.inject(flow.find((n) => n.type === 'inject')!.id);
      // Imported into a plain Node-RED: a development build, no fleet secret; the log says so.
      await nr.waitForOutput(/updated esp32-demo to from-file 1\.2\.3 in [\d.]+ s \(v2, confirmed, device id [0-9a-f:]{17}, not authenticated: nothing proves it was your device\)/, 60_000);
    });
  });

  describe('http-firmware-endpoint.json: POST a firmware file, get the result', () => {
    let nr: NodeRedProcess;
    before(async () => {
      nr = await NodeRedProcess.start(example('http-firmware-endpoint.json'));
    });
    after(() => nr?.stop());

    it('a binary POST updates the device and answers 200 with the result', async () => {
      const image = buildAppImage({ projectName: 'http-app', version: '3.2.1', size: 120_000 });
      const res = await fetch(`${nr.url}/firmware?device=esp32-http-a`, {
        method: 'POST',
        headers: { 'Content-Type': 'application/octet-stream' },
        body: image,
      });
      assert.equal(res.status, 200);
      const body = (await res.json()) as { device: { name: string }; image: { version: string }; confirmed: boolean };
      assert.equal(body.device.name, 'esp32-http-a');
      assert.equal(body.image.version, '3.2.1');
      assert.equal(body.confirmed, true);
    });

    it('a multipart upload works the same', async () => {
      const form = new FormData();
      form.append('firmware', new Blob([buildAppImage({ projectName: 'http-app', version: '3.2.2', size: 50_000 })]), 'app.bin');
      const res = await fetch(`${nr.url}/firmware/form?device=esp32-http-b`, { method: 'POST', body: form });
      assert.equal(res.status, 200);
      assert.equal(((await res.json()) as { image: { version: string } }).image.version, '3.2.2');
    });

    it('a file that is not an image answers 422 with the code and message', async () => {
      const res = await fetch(`${nr.url}/firmware`, {
        method: 'POST',
        headers: { 'Content-Type': 'application/octet-stream' },
        body: Buffer.from('this is not firmware at all, just some text in a file'),
      });
      assert.equal(res.status, 422);
      const body = (await res.json()) as { error: { code: string; message: string } };
      assert.equal(body.error.code, 'IMAGE_NOT_AN_IMAGE');
      assert.match(body.error.message, /not an ESP|not a/i);
    });

    it('an older version than the device runs answers 422 DOWNGRADE_REFUSED', async () => {
      const res = await fetch(`${nr.url}/firmware?device=esp32-http-a`, {
        method: 'POST',
        headers: { 'Content-Type': 'application/octet-stream' },
        body: buildAppImage({ projectName: 'http-app', version: '3.0.0', size: 20_000 }),
      });
      assert.equal(res.status, 422);
      assert.equal(((await res.json()) as { error: { code: string } }).error.code, 'DOWNGRADE_REFUSED');
    });
  });

  describe('mqtt-firmware-update.json: firmware over MQTT, status back over MQTT (real Mosquitto)', () => {
    let broker: Mosquitto | undefined;
    let nr: NodeRedProcess | undefined;
    before(async function () {
      broker = await Mosquitto.start();
      if (!broker) return this.skip(); // mosquitto not installed: .ci/run installs it
      const flow = example('mqtt-firmware-update.json').map((n) => (n.type === 'mqtt-broker' ? { ...n, port: String(broker!.port) } : n));
      nr = await NodeRedProcess.start(flow);
      await nr.waitForOutput(/Connected to broker/, 20_000);
    });
    after(async () => {
      await nr?.stop();
      await broker?.stop();
    });

    it('a binary firmware message updates the device named in the topic; each step comes back on its status topic', async () => {
      const client = await broker!.client();
      const lines: string[] = [];
      try {
        await client.subscribe('ota/+/status');
        client.on('message', (topic, payload) => topic === 'ota/esp32-mqtt-a/status' && lines.push(payload.toString()));
        await client.publish('ota/esp32-mqtt-a/firmware', buildAppImage({ projectName: 'mqtt-app', version: '4.5.6', size: 150_000 }), { qos: 1 });
        const deadline = Date.now() + 60_000;
        while (!lines.some((l) => /confirmed/.test(l)) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
      } finally {
        await client.endAsync();
      }
      assert.match(lines[lines.length - 1], /^esp32-mqtt-a: confirmed 100 % 4\.5\.6 in [\d.]+ s$/);
      for (const state of ['queued', 'connecting', 'uploading', 'verifying', 'restarting', 'confirming']) {
        assert.ok(lines.some((l) => l.startsWith(`esp32-mqtt-a: ${state}`)), `${state} in ${JSON.stringify(lines)}`);
      }
    });

    it('a message that is not firmware comes back as a failure with the reason', async () => {
      const client = await broker!.client();
      const lines: string[] = [];
      try {
        await client.subscribe('ota/+/status');
        client.on('message', (topic, payload) => topic === 'ota/esp32-mqtt-b/status' && lines.push(payload.toString()));
        await client.publish('ota/esp32-mqtt-b/firmware', Buffer.from('definitely not firmware'), { qos: 1 });
        const deadline = Date.now() + 20_000;
        while (!lines.some((l) => /failed/.test(l)) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
      } finally {
        await client.endAsync();
      }
      assert.ok(lines.some((l) => /^esp32-mqtt-b: failed \(IMAGE_NOT_AN_IMAGE: /.test(l)), JSON.stringify(lines));
    });
  });

  describe('scan-and-report-versions.json', () => {
    let nr: NodeRedProcess;
    after(() => nr?.stop());

    it('lists the devices in range with the version each runs', async () => {
      const flow = example('scan-and-report-versions.json');
      nr = await NodeRedProcess.start(flow, '', { BLE_OTA_VIRTUAL_DEVICES: 'esp32-a,esp32-b,other' });
      await nr.inject(flow.find((n) => n.type === 'inject')!.id);
      const [line] = await nr.waitForOutput(/esp32-[ab] [0-9a-f:]{17} runs 1\.0\.0; esp32-[ab] [0-9a-f:]{17} runs 1\.0\.0\n/, 30_000);
      assert.ok(!line.includes('other'), 'the name pattern leaves out other devices');
    });
  });

  describe('fleet-update.json', () => {
    let nr: NodeRedProcess;
    after(() => nr?.stop());

    it('updates every device not at the target version, one after the other, and none a second time', async () => {
      const flow = example('fleet-update.json');
      nr = await NodeRedProcess.start(flow, '', { BLE_OTA_VIRTUAL_DEVICES: 'esp32-fleet-1,esp32-fleet-2,esp32-fleet-3' });
      mkdirSync(join(nr.userDir, 'firmware'), { recursive: true });
      writeFileSync(join(nr.userDir, 'firmware/fleet-app.bin'), buildAppImage({ projectName: 'fleet-app', version: '2.0.0', size: 80_000 }));
      const inject = flow.find((n) => n.type === 'inject')!.id;
      await nr.inject(inject);
      for (const n of [1, 2, 3]) await nr.waitForOutput(new RegExp(`updated esp32-fleet-${n} to fleet-app 2\\.0\\.0`), 60_000);
      const updates = () => (nr.output.match(/updated esp32-fleet-\d to fleet-app/g) ?? []).length;
      assert.equal(updates(), 3);
      const order = [...nr.output.matchAll(/updated (esp32-fleet-\d) to/g)].map((m) => m[1]);
      assert.equal(new Set(order).size, 3, 'each device once');

      const from = nr.output.length;
      await nr.inject(inject);
      await new Promise((r) => setTimeout(r, 6000)); // a scan of 3 s, then nothing to do
      assert.equal(updates(), 3, 'devices at the target version are left alone');
      assert.ok(!/failed|error/i.test(nr.output.slice(from)), nr.output.slice(from));
    });
  });
});
