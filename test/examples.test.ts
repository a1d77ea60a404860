/**
 * Every flow in examples/, imported as it is into a fresh Node-RED user dir
 * with only this package installed, deployed, and run end to end as its
 * comment tells a user to: its buttons pressed, its endpoints called,
 * against the virtual ESP32s its device node declares; the MQTT ones with
 * a real Mosquitto. Nothing is written into the user dir: the examples make
 * their firmware with the sample node. The one change to a flow is the
 * broker's port (the test's Mosquitto listens on a free one).
 *
 * examples/dashboard-*.json are left to test/dashboard.test.ts, which runs
 * them with Node-RED Dashboard in Chromium.
 */
import { strict as assert } from 'node:assert';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseEspImage } from '../lib/image/esp-image';
import { isSampleImage, sampleImage } from '../lib/image/sample-image';
import { Mosquitto, MqttClient } from './support/mosquitto';
import { NodeRedProcess, ROOT } from './support/node-red-process';

type FlowNode = Record<string, unknown> & { id: string; type: string };

/** The examples this file runs: all of them but the dashboard's. */
const EXAMPLES = readdirSync(join(ROOT, 'examples')).filter((f) => f.endsWith('.json') && !f.startsWith('dashboard-'));

function example(file: string, brokerPort?: number): FlowNode[] {
  const flow = JSON.parse(readFileSync(join(ROOT, 'examples', file), 'utf8')) as FlowNode[];
  return flow.map((n) => (n.type === 'mqtt-broker' && brokerPort !== undefined ? { ...n, port: String(brokerPort) } : n));
}

/** The Inject nodes a user presses (not the timers). */
function buttons(flow: FlowNode[]): FlowNode[] {
  return flow.filter((n) => n.type === 'inject' && !n.repeat && !n.crontab);
}

function button(flow: FlowNode[], name: string): string {
  const inject = buttons(flow).find((n) => n.name === name);
  assert.ok(inject, `a button named "${name}"`);
  return inject.id;
}

/**
 * Test probes beside an example, not part of it: a Complete node that
 * fires each time the node `of` has handled a message, and a Debug node
 * that logs `property` of that message as `[debug:probe <label>] <value>`.
 */
function probe(of: string, label: string, property: string): FlowNode[] {
  const id = `probe-${label.replace(/\W/g, '-')}`;
  return [
    { id: `${id}-c`, type: 'complete', z: '', name: '', scope: [of], uncaught: false, wires: [[`${id}-d`]] },
    { id: `${id}-d`, type: 'debug', z: '', name: `probe ${label}`, active: true, tosidebar: false, console: true, complete: property, targetType: 'msg', wires: [] },
  ];
}

const count = (text: string, pattern: RegExp) => (text.match(new RegExp(pattern.source, 'g')) ?? []).length;

/** Waits until Node-RED's output from `from` on has `times` lines matching `pattern`. */
async function waitForCount(nr: NodeRedProcess, pattern: RegExp, times: number, timeoutMs: number, from = 0): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (count(nr.output.slice(from), pattern) < times) {
    if (Date.now() > deadline) throw new Error(`${count(nr.output.slice(from), pattern)} of ${times} ${pattern} within ${timeoutMs} ms:\n${nr.output.slice(-3000)}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Waits until `seen` has a message on `topic` that `accept`s. */
async function message(seen: Array<{ topic: string; text: string }>, topic: string, timeoutMs: number, accept: (t: string) => boolean = () => true): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const m = seen.find((s) => s.topic === topic && accept(s.text));
    if (m) return m.text;
    if (Date.now() > deadline) throw new Error(`nothing on ${topic} within ${timeoutMs} ms: ${JSON.stringify(seen.slice(-10))}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** The examples a describe block below runs; the last test checks that this is every one. */
const run = new Set<string>();
function runs(file: string, title: string, body: () => void): void {
  run.add(file);
  describe(`${file}: ${title}`, body);
}

describe('examples', function () {
  this.timeout(120_000);

  it('every example is valid flow JSON with unique ids, and a comment saying what to press or open', () => {
    for (const file of readdirSync(join(ROOT, 'examples')).filter((f) => f.endsWith('.json'))) {
      const flow = example(file);
      assert.ok(Array.isArray(flow) && flow.length > 0, file);
      const ids = new Set(flow.map((n) => n.id));
      assert.equal(ids.size, flow.length, `${file}: unique ids`);
      for (const n of flow) {
        for (const out of (n.wires as string[][] | undefined) ?? []) for (const id of out) assert.ok(ids.has(id), `${file}: ${n.id} wires to ${id}`);
      }
      if (file.startsWith('dashboard-')) continue; // its own test says what it shows
      const info = String(flow.find((n) => n.type === 'comment')?.info ?? '');
      assert.ok(info.length > 40, `${file} explains itself in a comment node`);
      const pressed = buttons(flow).map((n) => String(n.name));
      for (const name of pressed) assert.ok(info.includes(`**${name}**`), `${file}: the comment tells to press **${name}**`);
      if (pressed.length === 0) assert.match(info, /Nothing to press|^Open \*\*/, `${file}: the comment says what to do`);
    }
  });

  it('every device node on the virtual radio puts devices in range, its own device among them', () => {
    for (const file of EXAMPLES) {
      for (const n of example(file).filter((x) => x.type === 'ble-ota-device' && x.backend === 'virtual')) {
        const declared = String(n.virtualDevices ?? '')
          .split('\n')
          .map((line) => line.trim().split(/\s+/)[0])
          .filter(Boolean);
        assert.ok(declared.length > 0, `${file}: ${String(n.name)} declares its virtual devices (In range)`);
        if (n.device) assert.ok(declared.includes(String(n.device)), `${file}: ${String(n.device)} is in range`);
      }
    }
  });

  runs('update-virtual-esp32.json', 'update, sample image, upload, Debug', () => {
    let nr: NodeRedProcess;
    after(() => nr?.stop());

    it('the update button updates the virtual ESP32 with the sample; pressed again, the device already runs it', async () => {
      const flow = example('update-virtual-esp32.json');
      nr = await NodeRedProcess.start(flow);
      await nr.inject(button(flow, 'update'));
      // Imported into a plain Node-RED: a development build, no fleet secret; the log says so.
      await nr.waitForOutput(
        /updated esp32-demo to demo-app 2\.0\.0 in [\d.]+ s \(v2, confirmed, device id [0-9a-f:]{17}, not authenticated: nothing proves it was your device\)/,
        60_000,
      );
      const from = nr.output.length;
      await nr.inject(button(flow, 'update'));
      await nr.waitForOutput(/esp32-demo already runs demo-app 2\.0\.0: skipped/, 60_000, from);
    });
  });

  runs('http-firmware-endpoint.json', 'a page and endpoints that take firmware and answer the result', () => {
    let nr: NodeRedProcess;
    before(async () => {
      nr = await NodeRedProcess.start(example('http-firmware-endpoint.json'));
    });
    after(() => nr?.stop());

    it('GET /firmware is the upload page, which links the sample image', async () => {
      const res = await fetch(`${nr.url}/firmware`);
      assert.equal(res.status, 200);
      assert.match(res.headers.get('content-type') ?? '', /^text\/html/);
      const page = await res.text();
      assert.match(page, /<form method="post" action="firmware\/form\?device=esp32-http" enctype="multipart\/form-data">/);
      assert.match(page, /<a href="firmware\/sample\.bin"/);
    });

    it("the page works at /firmware and at /firmware/ (sent on to /firmware), under Node-RED's root or httpNodeRoot: its links reach the form endpoint and the sample", async () => {
      const check = async (root: string) => {
        const moved = await fetch(`${root}/firmware/`, { redirect: 'manual' });
        assert.deepEqual([moved.status, moved.headers.get('location')], [302, '../firmware']);
        for (const path of [`${root}/firmware`, `${root}/firmware/`]) {
          const res = await fetch(path);
          assert.equal(res.status, 200, path);
          const page = await res.text();
          const action = /<form method="post" action="([^"]+)"/.exec(page)?.[1];
          const sample = /<a href="([^"]+)"/.exec(page)?.[1];
          assert.ok(action !== undefined && sample !== undefined, page);
          assert.equal(new URL(action, res.url).href, `${root}/firmware/form?device=esp32-http`, path);
          const download = await fetch(new URL(sample, res.url));
          assert.equal(download.status, 200, path);
          assert.ok(isSampleImage(Buffer.from(await download.arrayBuffer())), path);
        }
      };
      await check(nr.url);
      // The editor under /red, the flows' endpoints under /api.
      const moved = await NodeRedProcess.start(example('http-firmware-endpoint.json'), "httpAdminRoot: '/red', httpNodeRoot: '/api'");
      try {
        await check(`${moved.url}/api`);
      } finally {
        await moved.stop();
      }
    });

    it('the sample image it serves, POSTed, updates the device; the form upload does the same', async () => {
      const download = await fetch(`${nr.url}/firmware/sample.bin`);
      assert.equal(download.status, 200);
      assert.match(download.headers.get('content-disposition') ?? '', /attachment; filename="http-app-2\.0\.0\.bin"/);
      const image = Buffer.from(await download.arrayBuffer());
      assert.ok(isSampleImage(image));
      assert.equal(parseEspImage(image).appDesc.version, '2.0.0');

      const res = await fetch(`${nr.url}/firmware?device=esp32-http-a`, {
        method: 'POST',
        headers: { 'Content-Type': 'application/octet-stream' },
        body: image,
      });
      assert.equal(res.status, 200);
      const body = (await res.json()) as { device: { name: string }; image: { project: string; version: string }; confirmed: boolean };
      assert.deepEqual([body.device.name, body.image.project, body.image.version, body.confirmed], ['esp32-http-a', 'http-app', '2.0.0', true]);

      // As the page's form sends it.
      const form = new FormData();
      form.append('firmware', new Blob([image]), 'http-app-2.0.0.bin');
      const fromForm = await fetch(`${nr.url}/firmware/form?device=esp32-http`, { method: 'POST', body: form });
      assert.equal(fromForm.status, 200);
      assert.equal(((await fromForm.json()) as { device: { name: string } }).device.name, 'esp32-http');
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
        body: sampleImage({ projectName: 'http-app', version: '1.5.0', size: 20_000 }),
      });
      assert.equal(res.status, 422);
      assert.equal(((await res.json()) as { error: { code: string } }).error.code, 'DOWNGRADE_REFUSED');
    });

    it("?device given twice (or with brackets) answers 400 INVALID_ARGUMENT in the request's terms: give one device", async () => {
      const post = (query: string) =>
        fetch(`${nr.url}/firmware?${query}`, {
          method: 'POST',
          headers: { 'Content-Type': 'application/octet-stream' },
          body: sampleImage({ projectName: 'http-app', version: '3.0.0', size: 20_000 }),
        });
      for (const [query, given] of [
        ['device=esp32-http-a&device=esp32-http-b', '?device 2 times'],
        ['device[x]=esp32-http-a', '?device with brackets'],
      ]) {
        const res = await post(query);
        assert.equal(res.status, 400, query);
        const { error } = (await res.json()) as { error: { code: string; message: string } };
        assert.equal(error.code, 'INVALID_ARGUMENT', query);
        // Not the upload node's words about msg.device, which an HTTP client never set.
        assert.ok(error.message.startsWith(`This request gives ${given}`), error.message);
        assert.match(error.message, /give one device, \?device=NAME_OR_ADDRESS, or leave \?device out .* Nothing was sent\.$/);
      }
    });
  });

  runs('mqtt-firmware-update.json', 'firmware over MQTT, status back over MQTT (real Mosquitto)', () => {
    let broker: Mosquitto | undefined;
    let nr: NodeRedProcess | undefined;
    let client: MqttClient | undefined;
    const seen: Array<{ topic: string; text: string }> = [];
    const flow = () => example('mqtt-firmware-update.json', broker!.port);
    before(async function () {
      broker = await Mosquitto.start();
      if (!broker) return this.skip(); // mosquitto not installed: .ci/run installs it
      nr = await NodeRedProcess.start(flow());
      await nr.waitForOutput(/Connected to broker/, 20_000);
      client = await broker.client();
      client.on('message', (topic, payload) => seen.push({ topic, text: payload.toString() }));
      await client.subscribe('ota/+/status');
    });
    after(async () => {
      await client?.endAsync();
      await nr?.stop();
      await broker?.stop();
    });

    it('send a sample publishes a sample image; the device in the topic is updated, each step back on its status topic and in Debug', async () => {
      await nr!.inject(button(flow(), 'send a sample'));
      const last = await message(seen, 'ota/esp32-mqtt/status', 60_000, (l) => /confirmed|failed/.test(l));
      assert.match(last, /^esp32-mqtt: confirmed 2\.0\.0 in [\d.]+ s$/);
      const lines = seen.filter((s) => s.topic === 'ota/esp32-mqtt/status').map((s) => s.text);
      for (const state of ['queued', 'connecting', 'uploading', 'verifying', 'restarting', 'confirming']) {
        assert.ok(
          lines.some((l) => l.startsWith(`esp32-mqtt: ${state}`)),
          `${state} in ${JSON.stringify(lines)}`,
        );
      }
      // A percent while the image goes, not after it (a restart at "100 %" reads as a step of the transfer).
      assert.ok(
        lines.some((l) => /^esp32-mqtt: uploading \d+ %$/.test(l)),
        JSON.stringify(lines),
      );
      assert.deepEqual(
        lines.filter((l) => / %/.test(l) && !l.startsWith('esp32-mqtt: uploading')),
        [],
      );
    });

    it('a message that is not firmware comes back as a failure with the reason', async () => {
      await client!.publish('ota/esp32-mqtt-b/firmware', Buffer.from('definitely not firmware'), { qos: 1 });
      const line = await message(seen, 'ota/esp32-mqtt-b/status', 20_000, (l) => /failed/.test(l));
      assert.match(line, /^esp32-mqtt-b: failed \(IMAGE_NOT_AN_IMAGE: /);
    });
  });

  runs('scan-and-report-versions.json', 'scan, one line with every device', () => {
    let nr: NodeRedProcess;
    after(() => nr?.stop());

    it('lists the devices in range that the name pattern matches, with the version each runs', async () => {
      const flow = example('scan-and-report-versions.json');
      nr = await NodeRedProcess.start(flow);
      await nr.inject(button(flow, 'scan'));
      const [line] = await nr.waitForOutput(/esp32-[ab] [0-9a-f:]{17} runs 1\.0\.0; esp32-[ab] [0-9a-f:]{17} runs 1\.0\.0\n/, 30_000);
      assert.ok(line.includes('esp32-a') && line.includes('esp32-b'));
      assert.ok(!nr.output.includes('kitchen-light'), 'the name pattern leaves out the other device in range');
    });
  });

  runs('fleet-update.json', 'scan, pick the devices not at the target version, update them in turn', () => {
    let nr: NodeRedProcess;
    after(() => nr?.stop());

    it('updates every device not at the target version, one after the other; pressed again, none', async () => {
      const flow = example('fleet-update.json');
      const scan = flow.find((n) => n.type === 'ble-ota-scan')!.id;
      const chosen = flow.find((n) => n.type === 'change' && n.name === 'this device, the image')!.id;
      nr = await NodeRedProcess.start([...flow, ...probe(scan, 'scan', 'targetVersion'), ...probe(chosen, 'chosen', 'device')]);
      const updateFleet = button(flow, 'update fleet');
      await nr.inject(updateFleet);
      for (const n of [1, 2, 3]) await nr.waitForOutput(new RegExp(`updated esp32-fleet-${n} to fleet-app 2\\.0\\.0`), 60_000);
      const updates = () => count(nr.output, /updated esp32-fleet-\d to fleet-app/);
      assert.equal(updates(), 3, 'each device once');
      assert.equal(count(nr.output, /\[debug:probe chosen\] /), 3);

      // Pressed again, twice: once the second scan is over, what it found went through the
      // switch before the third scan ends; none of it was chosen for an update.
      for (const scans of [2, 3]) {
        await nr.inject(updateFleet);
        await waitForCount(nr, /\[debug:probe scan\] 2\.0\.0\n/, scans, 30_000);
      }
      assert.equal(count(nr.output, /\[debug:probe chosen\] /), 3, 'devices at the target version are left alone');
      assert.equal(updates(), 3);
      assert.doesNotMatch(nr.output, /\[(error|warn)\] \[/);
    });
  });

  // The two fleet examples run together: a controller publishes a job, a gateway takes it.
  describe('fleet-controller.json and fleet-gateway.json (real Mosquitto)', () => {
    run.add('fleet-controller.json').add('fleet-gateway.json');
    let broker: Mosquitto | undefined;
    let gateway: NodeRedProcess | undefined;
    let controller: NodeRedProcess | undefined;
    let client: MqttClient | undefined;
    const seen: Array<{ topic: string; text: string }> = [];
    before(async function () {
      broker = await Mosquitto.start();
      if (!broker) return this.skip();
      [gateway, controller] = await Promise.all([
        NodeRedProcess.start(example('fleet-gateway.json', broker.port), '', { GATEWAY_ID: 'gw-1' }),
        // Its progress debug node to the console too: what the sidebar would show.
        NodeRedProcess.start(example('fleet-controller.json', broker.port).map((n) => (n.type === 'debug' && n.name === 'progress' ? { ...n, console: true } : n))),
      ]);
      await Promise.all([gateway, controller].map((nr) => nr.waitForOutput(/Connected to broker/, 20_000)));
      client = await broker.client();
      client.on('message', (topic, payload) => topic.startsWith('ota/fleet/reports/') && seen.push({ topic, text: payload.toString() }));
      await client.subscribe('ota/fleet/reports/#');
    });
    after(async () => {
      await client?.endAsync();
      await Promise.all([gateway?.stop(), controller?.stop()]);
      await broker?.stop();
    });

    it("the controller's start job sends a sample image as a job; the gateway updates the job's devices; the controller reports", async () => {
      await controller!.inject(button(example('fleet-controller.json'), 'start job'));
      const deadline = Date.now() + 90_000;
      while (!seen.length && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
      assert.ok(seen.length, 'a report');
      const report = JSON.parse(seen[0].text) as { outcome: string; devices: Array<{ name: string; status: string; version: string; gateway: string }> };
      assert.equal(report.outcome, 'complete');
      assert.deepEqual(
        report.devices.map((d) => [d.name, d.status, d.version, d.gateway]),
        [1, 2, 3].map((n) => [`esp32-fleet-${n}`, 'updated', '2.0.0', 'gw-1']),
      );
      for (const n of [1, 2, 3]) assert.match(gateway!.output, new RegExp(`updated esp32-fleet-${n} to fleet-app 2\\.0\\.0`));
      // The progress summaries name each device's fields that have a value (no "error: undefined" after a success).
      assert.match(controller!.output, /esp32-fleet-1/);
      assert.doesNotMatch(controller!.output, /: undefined/);
    });
  });

  describe('fleet-gateway.json without a GATEWAY_ID', () => {
    let broker: Mosquitto | undefined;
    let nr: NodeRedProcess | undefined;
    before(async function () {
      broker = await Mosquitto.start();
      if (!broker) return this.skip();
      const flow = example('fleet-gateway.json', broker.port);
      const jobs = flow.find((n) => n.type === 'function' && n.name === 'job and image')!.id;
      nr = await NodeRedProcess.start([...flow, ...probe(jobs, 'jobs', 'topic')], '', { GATEWAY_ID: '' });
      await nr.waitForOutput(/Connected to broker/, 20_000);
    });
    after(async () => {
      await nr?.stop();
      await broker?.stop();
    });

    it('says once what to do, not at every tick', async () => {
      const flow = example('fleet-gateway.json');
      const tick = flow.find((n) => n.type === 'inject' && n.repeat)!.id;
      for (let i = 0; i < 3; i++) await nr!.inject(tick);
      await waitForCount(nr!, /\[debug:probe jobs\] tick\n/, 3, 20_000);
      const warning =
        /GATEWAY_ID is not set, so this gateway takes no jobs\. Give it an id of its own \(e\.g\. hall-2\): in the editor under Menu > Settings > Environment, then Deploy; or start Node-RED with it \(GATEWAY_ID=hall-2 node-red\)\./;
      assert.match(nr!.output, warning);
      assert.equal(count(nr!.output, /GATEWAY_ID is not set/), 1, nr!.output);
      assert.doesNotMatch(nr!.output, /\[error\]/);
    });
  });

  it('runs every example (dashboard-*.json aside: test/dashboard.test.ts runs those)', () => {
    assert.deepEqual([...run].sort(), [...EXAMPLES].sort(), 'an example without a run here');
  });
});
