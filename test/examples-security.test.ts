/**
 * The MQTT, HTTP and fleet examples under attack, as imported, in a real
 * Node-RED with a real Mosquitto, against virtual ESP32s built as our
 * firmware's default (provisioned from the owner's fleet secret, signed
 * images only); the owner set the fleet secret in the device node, as the
 * examples say:
 * - anyone on the broker publishes an unsigned, a wrongly signed, a
 *   tampered and an older signed image: each fails with its code on the
 *   status topic, and the owner's next image goes through on top of the
 *   owner's previous one;
 * - an anonymous POST of an unsigned image gets 422 IMAGE_NOT_SIGNED;
 * - a fleet job without the image's SHA-256 is ignored, an image message
 *   that is not the one the job names is ignored and logged,
 *   and a job whose url points at the gateway's loopback makes
 *   it fetch nothing; a device that only shows the job's version is still
 *   updated (the scan proves nothing), and a job's deviceIds refuse a device
 *   with another id; a job's name pattern cannot stall the gateway.
 */
import { strict as assert } from 'node:assert';
import { createHash } from 'node:crypto';
import { createServer, Server } from 'node:http';
import { AddressInfo } from 'node:net';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { createContext, runInContext } from 'node:vm';
import { buildAppImage } from '../lib/image/app-image-builder';
import { generateSigningKey } from '../lib/image/signature';
import { nodeRedInChromium } from './support/chromium';
import { Mosquitto, MqttClient } from './support/mosquitto';
import { NodeRedProcess, ROOT } from './support/node-red-process';
import { addressFromName } from '../lib/virtual/virtual-device';
import { OWNER, ownedVirtualEnv, signedImage } from './support/owner';

type FlowNode = Record<string, unknown> & { id: string; type: string };

function example(file: string, brokerPort?: number): FlowNode[] {
  const flow = JSON.parse(readFileSync(join(ROOT, 'examples', file), 'utf8')) as FlowNode[];
  return flow.map((n) => (n.type === 'mqtt-broker' && brokerPort ? { ...n, port: String(brokerPort) } : n));
}

/** Deploys flows through the admin API (as the editor does), the device nodes given the owner's fleet secret. */
async function deployOwned(nr: NodeRedProcess, flow: FlowNode[]): Promise<void> {
  await nr.deploy(flow, (n) => (n.type === 'ble-ota-device' ? { secret: OWNER.secret } : undefined));
}

/** A valid image whose bytes were changed after it was signed (its own checksum and hash made consistent). */
function tampered(version: string, secureVersion: number): Buffer {
  const good = signedImage({ size: 40_000, projectName: 'mqtt-app', version, secureVersion, seed: 71 });
  const evil = buildAppImage({ size: 40_000, projectName: 'mqtt-app', version, secureVersion, seed: 72 });
  const out = Buffer.from(good);
  evil.copy(out, 0, 0, Math.min(evil.length, good.length - 4096));
  return out;
}

/** The first line that matches `until`, waiting up to timeoutMs for it. */
async function collect(topic: string, lines: string[], until: RegExp, timeoutMs: number): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const hit = lines.find((l) => until.test(l));
    if (hit) return hit;
    if (Date.now() > deadline) throw new Error(`no ${until} on ${topic} within ${timeoutMs} ms: ${JSON.stringify(lines.slice(-8))}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe('the examples under attack (real Node-RED, real Mosquitto, owned virtual devices)', function () {
  this.timeout(180_000);

  describe('mqtt-firmware-update.json: anyone on the broker publishes images', () => {
    let broker: Mosquitto | undefined;
    let nr: NodeRedProcess | undefined;
    let attacker: MqttClient | undefined;
    const lines: string[] = [];

    before(async function () {
      broker = await Mosquitto.start();
      if (!broker) return this.skip(); // mosquitto not installed: .ci/run installs it
      nr = await NodeRedProcess.start([], '', ownedVirtualEnv());
      await deployOwned(nr, example('mqtt-firmware-update.json', broker.port));
      await nr.waitForOutput(/Connected to broker/, 20_000);
      attacker = await broker.client();
      await attacker.subscribe('ota/esp32-mqtt/status');
      attacker.on('message', (_topic, payload) => lines.push(payload.toString()));
    });
    after(async () => {
      await attacker?.endAsync();
      await nr?.stop();
      await broker?.stop();
    });

    async function publish(image: Buffer, until: RegExp): Promise<string> {
      lines.length = 0;
      await attacker!.publish('ota/esp32-mqtt/firmware', image, { qos: 1 });
      return collect('ota/esp32-mqtt/status', lines, until, 60_000);
    }

    it("the owner's signed image goes in (secure_version 3)", async () => {
      await publish(signedImage({ size: 60_000, projectName: 'mqtt-app', version: '3.0.0', secureVersion: 3, seed: 70 }), /^esp32-mqtt: confirmed 3\.0\.0/);
    });

    const attacks: Array<[string, () => Buffer, string]> = [
      ['an unsigned image', () => buildAppImage({ size: 40_000, projectName: 'mqtt-app', version: '6.6.6', secureVersion: 9, seed: 73 }), 'IMAGE_NOT_SIGNED'],
      [
        'an image signed with another key',
        () => buildAppImage({ size: 40_000, projectName: 'mqtt-app', version: '6.6.6', secureVersion: 9, seed: 74, signingKeys: generateSigningKey('ecdsa256') }),
        'IMAGE_SIGNATURE_INVALID',
      ],
      ['a signed image changed after signing', () => tampered('6.6.6', 9), 'IMAGE_SIGNATURE_INVALID'],
      [
        'an older image the owner once signed (secure_version 2)',
        () => signedImage({ size: 40_000, projectName: 'mqtt-app', version: '2.0.0', secureVersion: 2, seed: 75 }),
        'SECURE_VERSION_TOO_OLD',
      ],
    ];
    for (const [what, make, code] of attacks) {
      it(`${what}: fails with ${code} on the status topic, nothing installed`, async () => {
        const line = await publish(make(), /^esp32-mqtt: failed/);
        assert.match(line, new RegExp(`^esp32-mqtt: failed \\(${code}: `));
        assert.ok(!lines.some((l) => /: uploading/.test(l)), 'no image byte went out');
      });
    }

    it("the owner's next image goes in on top of the owner's previous one", async () => {
      lines.length = 0;
      const line = await publish(signedImage({ size: 60_000, projectName: 'mqtt-app', version: '3.1.0', secureVersion: 3, seed: 76 }), /^esp32-mqtt: confirmed/);
      assert.match(line, /^esp32-mqtt: confirmed 3\.1\.0/);
      assert.match(nr!.output, /updated esp32-mqtt to mqtt-app 3\.1\.0 in [\d.]+ s \(v2, confirmed, device id [0-9a-f:]{17}\)/);
      // The result the flow logs names what the device ran before: the owner's 3.0.0.
      assert.doesNotMatch(nr!.output, /updated esp32-mqtt to mqtt-app (6\.6\.6|2\.0\.0)/);
    });
  });

  describe('http-firmware-endpoint.json: anonymous POSTs', () => {
    let nr: NodeRedProcess;
    before(async () => {
      // The device this test names, besides those the example declares.
      nr = await NodeRedProcess.start([], '', { ...ownedVirtualEnv(), BLE_OTA_VIRTUAL_DEVICES: 'esp32-http-owned' });
      await deployOwned(nr, example('http-firmware-endpoint.json'));
    });
    after(() => nr?.stop());

    const post = (image: Buffer) => fetch(`${nr.url}/firmware?device=esp32-http-owned`, { method: 'POST', headers: { 'Content-Type': 'application/octet-stream' }, body: image });

    it("an unsigned image gets 422 IMAGE_NOT_SIGNED, a foreign one IMAGE_SIGNATURE_INVALID; the owner's goes in", async () => {
      const unsigned = await post(buildAppImage({ size: 30_000, projectName: 'http-app', version: '9.9.9', seed: 80 }));
      assert.equal(unsigned.status, 422);
      assert.equal(((await unsigned.json()) as { error: { code: string } }).error.code, 'IMAGE_NOT_SIGNED');
      const foreign = await post(buildAppImage({ size: 30_000, projectName: 'http-app', version: '9.9.9', seed: 81, signingKeys: generateSigningKey('ecdsa256') }));
      assert.equal(foreign.status, 422);
      assert.equal(((await foreign.json()) as { error: { code: string } }).error.code, 'IMAGE_SIGNATURE_INVALID');
      const owner = await post(signedImage({ size: 30_000, projectName: 'http-app', version: '1.5.0', seed: 82 }));
      assert.equal(owner.status, 200);
      const body = (await owner.json()) as { runningVersion: string; previousVersion: string; authenticated: boolean };
      assert.equal(body.runningVersion, '1.5.0');
      assert.equal(body.previousVersion, '1.0.0', 'the attacks installed nothing');
      assert.equal(body.authenticated, true);
    });
  });

  describe("http-firmware-endpoint.json: a page of another site, in the owner's browser", () => {
    // The owner's browser reaches this Node-RED (on the LAN, or with the login it keeps for
    // httpNodeAuth); a page of another site it opens sends a signed image the owner never meant
    // for this device (a factory test of another project): a request a browser sends without
    // asking anyone (no CORS preflight), whose answer the page cannot read but whose update runs.
    let evil: Server | undefined;
    const chrome = nodeRedInChromium(
      async () => {
        const nr = await NodeRedProcess.start([], '', ownedVirtualEnv());
        await deployOwned(nr, example('http-firmware-endpoint.json'));
        const factory = signedImage({ size: 30_000, projectName: 'factory-test', version: '9.0.0', seed: 83 });
        const target = `${nr.url}/firmware`;
        // Another site: localhost, where Node-RED is 127.0.0.1.
        evil = createServer((_req, res) => {
          res.setHeader('content-type', 'text/html');
          res.end(`<!DOCTYPE html><script>
          const image = Uint8Array.from(atob('${factory.toString('base64')}'), (c) => c.charCodeAt(0));
          const form = new FormData();
          form.append('firmware', new Blob([image]), 'app.bin');
          window.attack = Promise.all([
            // The raw endpoint: a type a page may send anywhere; Node-RED reads its body as bytes.
            fetch('${target}?device=esp32-http', { method: 'POST', mode: 'no-cors', credentials: 'include', body: new Blob([image], { type: 'multipart/form-data' }) }),
            fetch('${target}/form?device=esp32-http', { method: 'POST', mode: 'no-cors', credentials: 'include', body: form }),
          ]).then(() => 'sent', (err) => String(err));
        </script>`);
        });
        await new Promise<void>((r) => evil!.listen(0, '127.0.0.1', r));
        return nr;
      },
      { width: 800, height: 600 },
    );
    after(() => evil?.close());

    it("its requests are refused with 403 and install nothing; the endpoint's own page still updates", async () => {
      const { nr, page } = chrome;
      const from = nr.output.length;
      await page.goto(`http://localhost:${(evil!.address() as AddressInfo).port}/`);
      assert.equal(await page.evaluate('window.attack'), 'sent', 'the browser sent both requests');
      // The owner's own page, the form it serves, for the same device: the image goes in on top of what the device ran.
      await page.goto(`${nr.url}/firmware`);
      const owner = signedImage({ size: 30_000, projectName: 'http-app', version: '1.6.0', seed: 84 });
      await page.setInputFiles('input[type=file]', { name: 'http-app-1.6.0.bin', mimeType: 'application/octet-stream', buffer: owner });
      await Promise.all([page.waitForURL(/\/firmware\/form/), page.click('button')]);
      const body = JSON.parse((await page.textContent('body')) ?? '') as { runningVersion: string; previousVersion: string; authenticated: boolean };
      assert.equal(body.runningVersion, '1.6.0');
      assert.equal(body.previousVersion, '1.0.0', 'the other site installed nothing');
      assert.equal(body.authenticated, true);
      assert.doesNotMatch(nr.output.slice(from), /factory-test/);
    });

    it('a browser that says only Origin (no Sec-Fetch-Site): another host gets 403 CROSS_SITE_REQUEST, this host goes on to the upload node', async () => {
      const { nr } = chrome;
      const unsigned = buildAppImage({ size: 30_000, projectName: 'http-app', version: '9.9.9', seed: 85 });
      const post = (origin: string) =>
        fetch(`${nr.url}/firmware?device=esp32-http`, { method: 'POST', headers: { 'Content-Type': 'application/octet-stream', Origin: origin }, body: unsigned });
      for (const origin of ['http://evil.example', 'null', `http://127.0.0.1:${nr.port + 1}`]) {
        const res = await post(origin);
        assert.equal(res.status, 403, origin);
        assert.equal(((await res.json()) as { error: { code: string } }).error.code, 'CROSS_SITE_REQUEST');
      }
      const own = await post(nr.url);
      assert.equal(own.status, 422);
      assert.equal(((await own.json()) as { error: { code: string } }).error.code, 'IMAGE_NOT_SIGNED');
    });
  });

  describe("the broker as docs/SECURITY.md sets it up: a gateway login's oversized message", () => {
    /** A configuration block of docs/SECURITY.md: the lines after its first line, `# <name>`. */
    function documented(name: string): string {
      const doc = readFileSync(join(ROOT, 'docs', 'SECURITY.md'), 'utf8');
      const block = new RegExp(`\\n( *)\`\`\`\\n\\1# ${name}\\n([\\s\\S]*?)\\n\\1\`\`\``).exec(doc);
      assert.ok(block, `docs/SECURITY.md has a ${name} block`);
      return block[2].replace(new RegExp(`^${block[1]}`, 'gm'), '') + '\n';
    }
    let broker: Mosquitto | undefined;
    before(async function () {
      // Its limits; the test's broker has its own listener, logins and files.
      const limits = documented('mosquitto.conf')
        .split('\n')
        .filter((l) => l.trim() && !/^\s*(#|listener|certfile|keyfile|cafile|allow_anonymous|password_file|acl_file)\b/.test(l))
        .join('\n');
      broker = await Mosquitto.start({ users: { controller: 'c-pass', 'gw-evil': 'e-pass' }, acl: documented('acl_file'), conf: limits });
      if (!broker) return this.skip();
    });
    after(() => broker?.stop());

    it("a claim larger than an image reaches no Node-RED: the broker ends the sender's connection", async () => {
      const controller = await broker!.client('controller');
      const evil = await broker!.client('gw-evil');
      await controller.subscribe('ota/fleet/claims/#');
      // Either the broker drops the sender, or the message reaches the controller's login: whichever comes first.
      const outcome = new Promise<string>((r) => {
        evil.on('close', () => r('the sender was disconnected'));
        controller.on('message', (_topic, payload) => payload.length > 1024 && r(`${payload.length} bytes reached the controller`));
      });
      evil.publish('ota/fleet/claims/gw-evil/j/d', Buffer.alloc(20 * 1024 * 1024, 'a'), { qos: 0 }).catch(() => undefined);
      assert.equal(await outcome, 'the sender was disconnected');
      // The largest image (16 MB) still goes from the controller to the gateways.
      const gateway = await broker!.client('gw-evil');
      await gateway.subscribe('ota/fleet/jobs/#');
      const image = new Promise<number>((r) => gateway.on('message', (_topic, payload) => r(payload.length)));
      await controller.publish('ota/fleet/jobs/fleet-20250101120000/image', Buffer.alloc(16 * 1024 * 1024, 0xe9), { qos: 1 });
      assert.equal(await image, 16 * 1024 * 1024);
      await gateway.endAsync();
      await controller.endAsync();
      await evil.endAsync();
    });
  });

  describe('fleet-gateway.json: jobs from anyone on the broker', () => {
    let broker: Mosquitto | undefined;
    let gw: NodeRedProcess | undefined;
    let client: MqttClient | undefined;
    let lure: Server | undefined;
    let lured = 0;
    const results: Array<{ topic: string; text: string }> = [];

    before(async function () {
      broker = await Mosquitto.start();
      if (!broker) return this.skip();
      // What only the gateway can reach: a service on its loopback.
      lure = createServer((_req, res) => {
        lured++;
        res.end('internal secret');
      });
      await new Promise<void>((r) => lure!.listen(0, '127.0.0.1', r));
      gw = await NodeRedProcess.start([], '', { ...ownedVirtualEnv(), GATEWAY_ID: 'gw-1', BLE_OTA_VIRTUAL_DEVICES: 'esp32-fleet-x' });
      await deployOwned(gw, example('fleet-gateway.json', broker.port));
      await gw.waitForOutput(/Connected to broker/, 20_000);
      client = await broker.client();
      await client.subscribe('ota/fleet/results/#');
      await client.subscribe('ota/fleet/claims/#');
      client.on('message', (topic, payload) => results.push({ topic, text: payload.toString() }));
    });
    after(async () => {
      await client?.endAsync();
      await gw?.stop();
      await broker?.stop();
      lure?.close();
    });

    it("a job whose url points at the gateway's loopback fetches nothing", async () => {
      const port = (lure!.address() as AddressInfo).port;
      const from = gw!.output.length;
      const image = signedImage({ size: 20_000, projectName: 'fleet-app', version: '5.0.0', seed: 90 });
      const job = {
        version: '5.0.0',
        devices: ['esp32-fleet-x'],
        url: `http://127.0.0.1:${port}/secret`,
        sha256: createHash('sha256').update(image).digest('hex'),
        size: image.length,
      };
      await client!.publish('ota/fleet/jobs/lure', JSON.stringify(job), { qos: 1, retain: true });
      await gw!.waitForOutput(/job lure is ignored: its "url" is not on a host this gateway fetches from \(FLEET_URL_HOSTS: none\); nothing was fetched/, 20_000, from);
      await new Promise((r) => setTimeout(r, 1000));
      assert.equal(lured, 0, 'the gateway made no request');
      assert.ok(!gw!.output.includes('internal secret'));
      await client!.publish('ota/fleet/jobs/lure', '', { qos: 1, retain: true });
    });

    it("a job without the image's SHA-256 is ignored", async () => {
      const from = gw!.output.length;
      await client!.publish('ota/fleet/jobs/nohash', JSON.stringify({ version: '5.0.0', devices: ['esp32-fleet-x'] }), { qos: 1, retain: true });
      await gw!.waitForOutput(/job nohash is ignored: it has no "sha256"/, 20_000, from);
      await client!.publish('ota/fleet/jobs/nohash', '', { qos: 1, retain: true });
    });

    it('an image message that is not the one the job names is ignored and logged: nothing is sent to a device', async () => {
      const named = signedImage({ size: 20_000, projectName: 'fleet-app', version: '5.0.0', seed: 91 });
      const swapped = buildAppImage({ size: 20_000, projectName: 'fleet-app', version: '5.0.0', seed: 92 });
      const job = { version: '5.0.0', devices: ['esp32-fleet-x'], sha256: createHash('sha256').update(named).digest('hex'), size: named.length, settleMs: 200, timeoutS: 60 };
      const from = gw!.output.length;
      await client!.publish('ota/fleet/jobs/swap/image', swapped, { qos: 1, retain: true });
      await client!.publish('ota/fleet/jobs/swap', JSON.stringify(job), { qos: 1, retain: true });
      await gw!.waitForOutput(/job swap: an image message that came before the job is not the job's image \(its SHA-256 or size differs from the job's\): ignored/, 20_000, from);
      // Without its image the job does not start: no claim, no result (the job's own image would start it).
      assert.ok(!results.some((x) => x.topic.endsWith('/swap/esp32-fleet-x')));
      assert.doesNotMatch(gw!.output.slice(from), /updated esp32-fleet-x|IMAGE_MISMATCH/);
      await endJob('swap');
    });

    /** Ends a job as the controller does (a gateway runs one job at a time: the next one waits for it). */
    async function endJob(id: string): Promise<void> {
      await client!.publish(`ota/fleet/jobs/${id}`, '', { qos: 1, retain: true });
      await client!.publish(`ota/fleet/jobs/${id}/image`, '', { qos: 1, retain: true });
    }

    /**
     * Publishes a job with its image and waits for the device's result, or
     * for the gateway to release the device (a claim with a reason); then
     * ends the job.
     */
    async function runJob(id: string, image: Buffer, job: Record<string, unknown>): Promise<FleetResult> {
      const named = { devices: ['esp32-fleet-x'], sha256: createHash('sha256').update(image).digest('hex'), size: image.length, settleMs: 200, timeoutS: 60, ...job };
      await client!.publish(`ota/fleet/jobs/${id}/image`, image, { qos: 1, retain: true });
      await client!.publish(`ota/fleet/jobs/${id}`, JSON.stringify(named), { qos: 1, retain: true });
      const deadline = Date.now() + 60_000;
      for (;;) {
        const r = results.find((x) => x.topic === `ota/fleet/results/gw-1/${id}/esp32-fleet-x`);
        const released = results.find((x) => x.topic === `ota/fleet/claims/gw-1/${id}/esp32-fleet-x` && x.text.includes('"released"'));
        if (r || released) await endJob(id);
        if (r) return JSON.parse(r.text) as FleetResult;
        if (released) return { status: 'released', ...(JSON.parse(released.text) as { reason: string }) };
        if (Date.now() > deadline) throw new Error(`no result for job ${id}`);
        await new Promise((res) => setTimeout(res, 50));
      }
    }

    it("a device that shows the job's version but runs another build is updated, not reported current from the scan", async () => {
      // The device advertises virtual-esp32 1.0.0, as an impostor could: the job's 1.0.0 is another build.
      const image = signedImage({ size: 20_000, projectName: 'virtual-esp32', version: '1.0.0', seed: 93 });
      const result = await runJob('same-version', image, { version: '1.0.0' });
      assert.equal(result.status, 'updated');
      assert.equal(result.previousVersion, '1.0.0');
      assert.equal(result.authenticated, true);
      // The same image again: now the device proves it runs it, and nothing is written.
      const again = await runJob('same-version-2', image, { version: '1.0.0' });
      assert.equal(again.status, 'current');
      assert.equal(again.authenticated, true);
    });

    it('deviceIds binds a name to a device id: another id is released for other gateways, the right one updated and reported', async () => {
      const image = signedImage({ size: 20_000, projectName: 'fleet-app', version: '5.1.0', seed: 94 });
      const from = gw!.output.length;
      const wrong = await runJob('wrong-id', image, { version: '5.1.0', deviceIds: { 'esp32-fleet-x': '24:0a:c4:00:00:01' } });
      // Not "failed": the device that answered was not the one meant; a gateway that reaches that one may still update it.
      assert.equal(wrong.status, 'released');
      assert.match(wrong.reason ?? '', /^WRONG_DEVICE: /);
      assert.doesNotMatch(gw!.output.slice(from), /updated esp32-fleet-x/);
      const id = addressFromName('esp32-fleet-x');
      const right = await runJob('right-id', image, { version: '5.1.0', deviceIds: { 'esp32-fleet-x': id } });
      assert.equal(right.status, 'updated');
      assert.equal(right.deviceId, id);
      assert.equal(right.authenticated, true);
    });
  });

  /**
   * A function node of an example, run as Node-RED runs it: its own flow
   * and node context, env, the modules it names, and timers that run only
   * when the test says (virtual time).
   */
  class FunctionRun {
    readonly flow = new Map<string, unknown>();
    readonly context = new Map<string, unknown>();
    readonly log: string[] = [];
    readonly sent: unknown[] = [];
    readonly timers: Array<{ ms: number; fn: () => void }> = [];
    constructor(
      private readonly file: string,
      private readonly env: Record<string, string> = {},
    ) {}
    run(name: string, msg: Record<string, unknown>): unknown {
      const node = example(this.file).find((n) => n.type === 'function' && n.name === name)!;
      const store = (m: Map<string, unknown>) => ({ get: (k: string) => m.get(k), set: (k: string, v: unknown) => m.set(k, v) });
      const api = {
        status: () => undefined,
        warn: (t: string) => this.log.push(`warn: ${t}`),
        error: (t: string) => this.log.push(`error: ${t}`),
        log: (t: string) => this.log.push(`log: ${t}`),
        send: (m: unknown) => this.sent.push(m),
      };
      const args = ['msg', 'node', 'context', 'flow', 'env', 'setTimeout', 'clearTimeout', 'url', 'crypto'];
      const fn = new Function(...args, String(node.func)) as (...a: unknown[]) => unknown;
      const setTimer = (f: () => void, ms: number) => this.timers.push({ ms, fn: f });
      // eslint-disable-next-line @typescript-eslint/no-require-imports
      return fn(msg, api, store(this.context), store(this.flow), { get: (k: string) => this.env[k] }, setTimer, () => undefined, require('node:url'), require('node:crypto'));
    }
  }

  describe("dashboard-fleet-progress.json's 'to each device': what it takes from the page", () => {
    it('updates only a device the page lists (or all of them for Update all): another name from the page is warned about and updates nothing', () => {
      const c = new FunctionRun('dashboard-fleet-progress.json');
      c.run('page state', { payload: [{ name: 'esp32-lab-1', version: '1.0.0' }, { name: 'esp32-lab-2' }] });
      const updates = (device: unknown) => {
        const out = c.run('to each device', { payload: Buffer.from('image'), device }) as Array<Array<{ device: string }>> | null;
        return out ? out[0].map((m) => m.device) : [];
      };
      assert.deepEqual(updates('esp32-lab-2'), ['esp32-lab-2']);
      assert.deepEqual(updates('*'), ['esp32-lab-1', 'esp32-lab-2']);
      for (const other of ['esp32-neighbour', '__proto__', 'toString', { name: 'esp32-lab-1' }, undefined]) assert.deepEqual(updates(other), [], JSON.stringify(other));
      assert.equal(c.log.length, 5);
      assert.match(c.log[0], /^warn: "esp32-neighbour" is no device on the page: not updated/);
    });

    it("a device named like an object's property (toString, __proto__, constructor) is a row like any other: the page's table stays whole, and the function's objects keep their prototype", () => {
      // As Node-RED runs a function: in a context of its own, which the flow context outlives.
      const realm = createContext({});
      const store = new Map<string, unknown>();
      const flow = { get: (k: string) => store.get(k), set: (k: string, v: unknown) => store.set(k, v) };
      const warned: string[] = [];
      const run = (name: string, msg: Record<string, unknown>) => {
        const func = String(example('dashboard-fleet-progress.json').find((n) => n.type === 'function' && n.name === name)!.func);
        const fn = runInContext(`(function (msg, node, flow) {\n${func}\n})`, realm) as (...a: unknown[]) => unknown;
        return fn(msg, { warn: (t: string) => warned.push(t) }, flow);
      };
      type Page = { payload: Array<{ name: string; state: string; version: string } | null> };
      // Anyone in range may advertise such a name; a scan lists it beside the lab's devices.
      run('page state', { payload: [{ name: 'esp32-lab-1', version: '1.0.0' }, { name: 'toString' }, { name: '__proto__', version: '6.6.6' }, { name: 'constructor' }] });
      // As the page receives it: JSON, in which a row that is no object would be null.
      const page = JSON.parse(
        JSON.stringify(run('page state', { event: { device: { name: '__proto__', address: 'aa:bb:cc:dd:ee:ff' }, state: 'connecting', percent: 3 } })),
      ) as Page;
      assert.deepEqual(
        page.payload.map((r) => r && [r.name, r.state, r.version]),
        [
          ['__proto__', 'connecting', '6.6.6'],
          ['constructor', 'idle', '?'],
          ['esp32-lab-1', 'idle', '1.0.0'],
          ['toString', 'idle', '?'],
        ],
      );
      assert.equal(runInContext('JSON.stringify([typeof ({}).state, typeof ({}).busy, typeof ({}).toString])', realm), '["undefined","undefined","function"]');
      // Each is on the page, so a click on its row updates it, and only it.
      for (const name of ['toString', '__proto__', 'esp32-lab-1']) {
        const out = run('to each device', { payload: Buffer.from('image'), device: name }) as Array<Array<{ device: string }>>;
        assert.deepEqual(
          Array.from(out[0], (m) => m.device),
          [name],
        );
      }
      assert.deepEqual(warned, []);
    });
  });

  describe("fleet-controller.json's aggregate: what it takes from the broker", () => {
    type Row = { name: string; status: string; gateway?: string; authenticated?: boolean; released?: { gateway: string; reason: string } };
    type Report = { outcome: string; counts: Record<string, number>; devices: Row[]; unproven: string[] };
    const send = (c: FunctionRun, topic: string, payload: unknown) => c.run('aggregate', { topic, payload: typeof payload === 'string' ? payload : JSON.stringify(payload) });
    /** The report the last finished job sent (its third output). */
    const report = (c: FunctionRun) => ((c.sent.at(-1) as unknown[])[2] as { payload: Report }).payload;
    const result = (status: string, more: Record<string, unknown> = {}) => ({ status, version: '2.0.0', confirmed: true, authenticated: true, ...more });

    it('a result counts only from the gateway that holds the device; "updated" only when confirmed; devices without proof are listed unproven', () => {
      const c = new FunctionRun('fleet-controller.json');
      send(c, 'ota/fleet/jobs/j', { version: '2.0.0', devices: ['d1', 'd2', 'd3', 'd4'], sha256: 'a'.repeat(64), size: 1 });
      for (const [gw, d] of [
        ['gw-a', 'd1'],
        ['gw-a', 'd2'],
        ['gw-b', 'd3'],
        ['gw-b', 'd4'],
      ])
        send(c, `ota/fleet/claims/${gw}/j/${d}`, { state: 'updating' });
      // Another gateway login claims a device gw-a holds, and reports every device.
      send(c, 'ota/fleet/claims/gw-evil/j/d1', { state: 'done' });
      for (const d of ['d1', 'd2', 'd3', 'd4']) send(c, `ota/fleet/results/gw-evil/j/${d}`, result('updated'));
      assert.equal(c.log.filter((l) => /from gw-evil, which does not hold it \(gw-[ab] does\): ignored/.test(l)).length, 4);
      send(c, 'ota/fleet/results/gw-a/j/d1', result('updated'));
      send(c, 'ota/fleet/results/gw-a/j/d2', result('updated', { confirmed: false }));
      send(c, 'ota/fleet/results/gw-b/j/d3', result('updated', { authenticated: false }));
      send(c, 'ota/fleet/results/gw-b/j/d4', result('current'));
      const r = report(c);
      assert.equal(r.outcome, 'complete');
      assert.deepEqual(
        r.devices.map((d) => [d.name, d.status, d.gateway, d.authenticated]),
        [
          ['d1', 'updated', 'gw-a', true],
          ['d2', 'unconfirmed', 'gw-a', true],
          ['d3', 'updated', 'gw-b', false],
          ['d4', 'current', 'gw-b', true],
        ],
      );
      assert.deepEqual(r.counts, { updated: 2, current: 1, unconfirmed: 1, failed: 0, 'not reached': 0, 'not started': 0 });
      assert.deepEqual(r.unproven, ['d3']);
      assert.ok(c.log.some((l) => /^warn: job j: 1 device\(s\) did not prove they are yours \(authenticated: false\): d3\./.test(l)));
    });

    it('a gateway login cannot take over a device another gateway holds: offline only on its own topic, and a released device goes to no one', () => {
      const c = new FunctionRun('fleet-controller.json');
      send(c, 'ota/fleet/jobs/j', { version: '2.0.0', devices: ['d1', 'd2'], sha256: 'a'.repeat(64), size: 1 });
      send(c, 'ota/fleet/claims/gw-a/j/d1', { state: 'updating' });
      // gw-evil says "updating" on its own topic while gw-a holds d1, then says gw-a went offline.
      send(c, 'ota/fleet/claims/gw-evil/j/d1', { state: 'updating' });
      const released = () => c.log.filter((l) => /went offline/.test(l));
      assert.equal(send(c, 'ota/fleet/gateways/offline', 'gw-a'), null, 'the old shared topic names no gateway');
      const own = send(c, 'ota/fleet/gateways/gw-evil/offline', 'gw-a') as Array<Array<{ topic: string }>>;
      assert.deepEqual(
        own[0].map((m) => m.topic),
        ['ota/fleet/claims/gw-evil/j/d1'],
        'the payload is not read: only the gateway of the topic is released',
      );
      assert.deepEqual(released(), ['warn: gw-evil went offline: released 1 device(s) for other gateways']);
      send(c, 'ota/fleet/results/gw-evil/j/d1', result('failed'));
      assert.match(c.log.at(-1)!, /a result for d1 from gw-evil, which does not hold it \(gw-a does\): ignored/);
      // gw-a really goes offline: the device is free, not handed to the gateway that said "updating" meanwhile.
      send(c, 'ota/fleet/claims/gw-evil/j/d1', { state: 'updating' });
      const mine = send(c, 'ota/fleet/gateways/gw-a/offline', '') as Array<Array<{ topic: string; payload: string }>>;
      assert.deepEqual(
        mine[0].map((m) => m.topic),
        ['ota/fleet/claims/gw-a/j/d1'],
      );
      send(c, 'ota/fleet/claims/gw-a/j/d1', mine[0][0].payload);
      send(c, 'ota/fleet/results/gw-evil/j/d1', result('failed'));
      assert.match(c.log.at(-1)!, /a result for d1 from gw-evil, which does not hold it \(no gateway does\): ignored/);
      // gw-a was still there and still updates d1: it says so again, and its result counts.
      send(c, 'ota/fleet/claims/gw-a/j/d1', { state: 'updating' });
      send(c, 'ota/fleet/claims/gw-b/j/d2', { state: 'updating' });
      send(c, 'ota/fleet/results/gw-a/j/d1', result('updated'));
      send(c, 'ota/fleet/results/gw-b/j/d2', result('updated'));
      assert.deepEqual(
        report(c).devices.map((d) => [d.name, d.status, d.gateway]),
        [
          ['d1', 'updated', 'gw-a'],
          ['d2', 'updated', 'gw-b'],
        ],
      );
    });

    it('a job id published again after its report is a new job, followed and reported again', () => {
      const c = new FunctionRun('fleet-controller.json');
      for (const [status, code] of [
        ['failed', 'AUTH_FAILED'],
        ['updated', undefined],
      ]) {
        send(c, 'ota/fleet/jobs/fw-2', { version: '2.0.0', devices: ['d1'], sha256: 'a'.repeat(64), size: 1 });
        send(c, 'ota/fleet/claims/gw-a/fw-2/d1', { state: 'updating' });
        send(c, 'ota/fleet/results/gw-a/fw-2/d1', result(String(status), code ? { error: { code, message: 'wrong secret' } } : {}));
        assert.deepEqual(
          report(c).devices.map((d) => [d.name, d.status]),
          [['d1', status]],
        );
        // What the report cleared comes back empty: nothing is followed any more.
        send(c, 'ota/fleet/jobs/fw-2', '');
        send(c, 'ota/fleet/claims/gw-a/fw-2/d1', '');
      }
      assert.equal(c.sent.filter((m) => Array.isArray(m) && m[2]).length, 2, 'two reports');
    });

    it("a gateway's claims and results that name no run (a gateway of an earlier example) count for the run followed; those naming another run do not", () => {
      const c = new FunctionRun('fleet-controller.json');
      const published = c.run('publish the job', { job: { id: 'j', version: '2.0.0', devices: ['d1', 'd2'] }, payload: Buffer.from('x') }) as Array<
        Array<{ topic: string; payload: string }>
      >;
      const jobMessage = published[0].find((m) => m.topic === 'ota/fleet/jobs/j')!;
      const run = (JSON.parse(jobMessage.payload) as { run: string }).run;
      send(c, jobMessage.topic, jobMessage.payload);
      send(c, 'ota/fleet/claims/gw-old/j/d1', { state: 'updating' });
      send(c, 'ota/fleet/results/gw-old/j/d1', result('updated'));
      send(c, 'ota/fleet/claims/gw-new/j/d2', { state: 'updating', run: 'an-earlier-run' });
      send(c, 'ota/fleet/results/gw-new/j/d2', result('updated', { run: 'an-earlier-run' }));
      send(c, 'ota/fleet/claims/gw-new/j/d2', { state: 'updating', run });
      send(c, 'ota/fleet/results/gw-new/j/d2', result('failed', { run }));
      assert.deepEqual(
        report(c).devices.map((d) => [d.name, d.status, d.gateway]),
        [
          ['d1', 'updated', 'gw-old'],
          ['d2', 'failed', 'gw-new'],
        ],
      );
    });

    it('at timeoutS, the devices of a job no gateway started are "not started", not "not reached"', () => {
      const c = new FunctionRun('fleet-controller.json');
      send(c, 'ota/fleet/jobs/waited', { version: '2.0.0', devices: ['d2'], sha256: 'a'.repeat(64), size: 1, timeoutS: 900 });
      send(c, 'ota/fleet/jobs/ran', { version: '2.0.0', devices: ['d3'], sha256: 'a'.repeat(64), size: 1, timeoutS: 900 });
      send(c, 'ota/fleet/gateways/gw-a/started', 'ran');
      const ends = c.timers.filter((t) => t.ms === 900_000).map((t) => t.fn);
      ends[0]();
      let r = report(c) as Report & { notReached: string[]; notStarted: string[] };
      assert.deepEqual([r.devices.map((d) => [d.name, d.status]), r.notReached, r.notStarted, r.counts['not started']], [[['d2', 'not started']], [], ['d2'], 1]);
      assert.match(c.log.at(-1)!, /^warn: job waited: no gateway started it before its timeoutS \(900 s\): its devices are reported "not started"/);
      ends[1]();
      r = report(c) as Report & { notReached: string[]; notStarted: string[] };
      assert.deepEqual([r.devices.map((d) => [d.name, d.status]), r.notReached, r.notStarted], [[['d3', 'not reached']], ['d3'], []]);
    });

    it('a "match" job counts devices left out only once it follows its cap: a "left out" before that is no one\'s word', () => {
      const c = new FunctionRun('fleet-controller.json');
      send(c, 'ota/fleet/jobs/m', { version: '2.0.0', match: 'esp32-*', sha256: 'a'.repeat(64), size: 1, timeoutS: 60, run: 'r1', maxDevices: 2 });
      send(c, 'ota/fleet/claims/gw-a/m/esp32-1', { state: 'updating', run: 'r1' });
      // Any gateway login can say it left a device out: with one device of two followed, nothing was.
      send(c, 'ota/fleet/claims/gw-evil/m/esp32-ghost', { state: 'left out', run: 'r1' });
      send(c, 'ota/fleet/claims/gw-a/m/esp32-2', { state: 'updating', run: 'r1' });
      // At the cap, a gateway's "left out" is counted.
      send(c, 'ota/fleet/claims/gw-b/m/esp32-3', { state: 'left out', run: 'r1' });
      c.timers.find((t) => t.ms === 60_000)!.fn(); // the job's timeoutS
      const r = report(c) as Report & { leftOut?: { devices: number } };
      assert.deepEqual(
        r.devices.map((d) => d.name),
        ['esp32-1', 'esp32-2'],
      );
      assert.equal(r.leftOut?.devices, 1);
    });

    it("a holding gateway's result and progress are taken as the fields a gateway sends, each of its type and bounded: no object of a login's choosing grows the report", () => {
      const c = new FunctionRun('fleet-controller.json');
      send(c, 'ota/fleet/jobs/j', { version: '2.0.0', devices: ['d1', 'd2', 'd3'], sha256: 'a'.repeat(64), size: 1, timeoutS: 60 });
      for (const d of ['d1', 'd2', 'd3']) send(c, `ota/fleet/claims/gw-a/j/${d}`, { state: 'updating' });
      const big = 'x'.repeat(100_000);
      send(c, 'ota/fleet/progress/gw-a/j/d3', { phase: { nested: big }, percent: big });
      send(c, 'ota/fleet/results/gw-a/j/d1', result('failed', { error: { code: 'TIMEOUT', message: big, stack: big, extra: { deep: big } }, version: big, durationMs: big }));
      send(c, 'ota/fleet/results/gw-a/j/d2', result('updated', { version: { v: big }, previousVersion: ['1.0.0'], deviceId: 42, durationMs: 1234 }));
      c.timers.find((t) => t.ms === 60_000)!.fn(); // the job's timeoutS
      const r = report(c) as Report & { devices: Array<Row & Record<string, unknown>> };
      const [d1, d2, d3] = r.devices;
      assert.deepEqual(d3, { name: 'd3', status: 'updating', gateway: 'gw-a' }, 'progress that is no phase nor percent is not taken');
      assert.deepEqual(d1.error, { code: 'TIMEOUT', message: `${'x'.repeat(999)}…` });
      assert.equal(d1.version, `${'x'.repeat(63)}…`);
      assert.equal(d1.durationMs, undefined);
      assert.deepEqual([d2.status, d2.version, d2.previousVersion, d2.deviceId, d2.durationMs], ['updated', undefined, undefined, undefined, 1234]);
      assert.ok(JSON.stringify(r).length < 3000, `the report is ${JSON.stringify(r).length} characters`);
    });

    it('devices named __proto__ or constructor are followed like any other, and change no object of the process', () => {
      const c = new FunctionRun('fleet-controller.json');
      send(c, 'ota/fleet/jobs/p', { version: '2.0.0', match: '*', sha256: 'a'.repeat(64), size: 1, timeoutS: 30 });
      for (const d of ['__proto__', 'constructor', 'toString']) {
        send(c, `ota/fleet/claims/gw-a/p/${d}`, { state: 'updating' });
        send(c, `ota/fleet/results/gw-a/p/${d}`, result('updated', { version: '6.6.6', deviceId: 'de:ad' }));
      }
      assert.equal(({} as Record<string, unknown>).version, undefined, 'Object.prototype untouched');
      c.timers.find((t) => t.ms === 30_000)!.fn(); // the job's timeoutS
      const r = report(c);
      assert.deepEqual(
        r.devices.map((d) => [d.name, d.status]),
        [
          ['__proto__', 'updated'],
          ['constructor', 'updated'],
          ['toString', 'updated'],
        ],
      );
      const devices = (c.sent.at(-1) as Array<{ payload: { devices: Record<string, Row> } }>)[1].payload.devices;
      assert.deepEqual(Object.keys(devices), ['__proto__', 'constructor', 'toString']);
      assert.equal(Object.getPrototypeOf(devices), Object.prototype);
    });

    it("a match job follows at most 500 devices, each from a claim on its gateway's topic; summaries go at most once a second, the last one always", () => {
      const c = new FunctionRun('fleet-controller.json');
      const summaries: Array<{ payload: { devices: Record<string, unknown>; total: number } }> = [];
      const take = (out: unknown) => {
        const s = Array.isArray(out) ? (out[1] as (typeof summaries)[number] | null) : null;
        if (s) summaries.push(s);
      };
      const sent = () => c.sent.splice(0).forEach(take);
      take(send(c, 'ota/fleet/jobs/m', { version: '2.0.0', match: 'esp32-*', sha256: 'a'.repeat(64), size: 1, timeoutS: 60 }));
      // Progress and results name no device of their own: only a claim does.
      take(send(c, 'ota/fleet/results/gw-evil/m/esp32-ghost', result('updated')));
      take(send(c, 'ota/fleet/progress/gw-evil/m/esp32-ghost', { phase: 'uploading', percent: 50 }));
      for (let i = 0; i < 800; i++) take(send(c, `ota/fleet/claims/gw-evil/m/esp32-${i}`, { state: 'claiming' }));
      assert.deepEqual(
        c.log.filter((l) => /at most/.test(l)),
        [
          'warn: job m: a "match" job follows at most 500 devices; claims for more (from gw-evil: esp32-500) are not followed, and their devices are not in the report. List the devices in "devices", or split the job.',
        ],
      );
      assert.equal(summaries.length, 1, 'the one at the start; the changes wait for the second to end');
      const second = () =>
        c.timers
          .filter((t) => t.ms === 1000)
          .at(-1)!
          .fn();
      second();
      sent();
      assert.equal(summaries.length, 2);
      assert.equal(Object.keys(summaries[1].payload.devices).length, 500);
      second(); // nothing changed meanwhile: nothing sent
      sent();
      assert.equal(summaries.length, 2);
      take(send(c, 'ota/fleet/claims/gw-a/m/esp32-0', { state: 'updating' }));
      take(send(c, 'ota/fleet/results/gw-a/m/esp32-0', result('updated')));
      assert.equal(summaries.length, 3, 'the first change after a quiet second goes at once');
      c.timers.find((t) => t.ms === 60_000)!.fn(); // the timeoutS: the report, and the last summary
      const r = report(c);
      sent();
      assert.equal(summaries.length, 4);
      assert.equal(r.devices.length, 500);
      assert.ok(!r.devices.some((d) => d.name === 'esp32-ghost' || d.name === 'esp32-500'));
      assert.deepEqual(r.devices.find((d) => d.name === 'esp32-0')!.status, 'updated');
    });

    it('a job listing a device twice follows and counts it once; a release reason that is not text is left out, a long one cut', () => {
      const c = new FunctionRun('fleet-controller.json');
      send(c, 'ota/fleet/jobs/j', { version: '2.0.0', devices: ['d1', 'd1', 'd2'], sha256: 'a'.repeat(64), size: 1 });
      assert.deepEqual(c.log, ['warn: job j lists 1 device name(s) more than once: each device is followed and counted once']);
      send(c, 'ota/fleet/claims/gw-a/j/d1', { state: 'updating' });
      send(c, 'ota/fleet/claims/gw-a/j/d2', { state: 'updating' });
      send(c, 'ota/fleet/claims/gw-a/j/d2', { state: 'released', reason: { toString: 1 } });
      send(c, 'ota/fleet/claims/gw-b/j/d2', { state: 'updating' });
      send(c, 'ota/fleet/claims/gw-b/j/d2', { state: 'released', reason: 'WRONG_DEVICE: ' + 'x'.repeat(1000) });
      send(c, 'ota/fleet/results/gw-a/j/d1', result('updated'));
      c.timers.find((t) => t.ms === 3_600_000)!.fn();
      const r = report(c);
      assert.deepEqual(
        r.devices.map((d) => [d.name, d.status, d.released?.gateway, d.released?.reason.length]),
        [
          ['d1', 'updated', undefined, undefined],
          ['d2', 'not reached', 'gw-b', 200],
        ],
      );
      assert.deepEqual([r.counts.updated, r.counts['not reached']], [1, 1]);
    });

    it('a timeoutS longer than a timer can wait (24.8 days) is refused with the limit, not reported "timed out" at once', () => {
      const c = new FunctionRun('fleet-controller.json');
      send(c, 'ota/fleet/jobs/month', { version: '2.0.0', devices: ['d1'], sha256: 'a'.repeat(64), size: 1, timeoutS: 30 * 86400 });
      assert.equal(c.timers.length, 0);
      assert.deepEqual(c.log, [
        'error: job month is not followed: its "timeoutS" (2592000) is longer than a timer can wait: at most 2147483 seconds (24.8 days); the gateways ignore it too',
      ]);
      send(c, 'ota/fleet/jobs/long', { version: '2.0.0', devices: ['d1'], sha256: 'a'.repeat(64), size: 1, timeoutS: 2147483 });
      assert.deepEqual(
        c.timers.map((t) => t.ms),
        [2147483000, 1000], // its timeoutS, and the second before the next summary
      );
      const publish = new FunctionRun('fleet-controller.json');
      assert.equal(publish.run('publish the job', { job: { version: '2.0.0', devices: ['d1'], timeoutS: 30 * 86400 }, payload: Buffer.from('x') }), null);
      assert.match(publish.log[0], /^error: job fleet-\d{14}: "timeoutS" \(2592000\) is longer than a timer can wait: at most 2147483 seconds \(24\.8 days\)$/);
    });
  });

  describe("fleet-gateway.json's jobs, claims and name patterns", () => {
    const IMAGE = Buffer.from('image');
    const SHA = createHash('sha256').update(IMAGE).digest('hex');
    /** A gateway that got job `id` (and its image): what "job and image" sends, and its state. */
    function gateway(): FunctionRun {
      return new FunctionRun('fleet-gateway.json', { GATEWAY_ID: 'gw-1' });
    }
    function job(g: FunctionRun, id: string, body: Record<string, unknown>): unknown {
      g.run('job and image', { topic: `ota/fleet/jobs/${id}/image`, payload: IMAGE });
      return g.run('job and image', { topic: `ota/fleet/jobs/${id}`, payload: JSON.stringify({ version: '1.0.0', sha256: SHA, size: 5, settleMs: 0, ...body }) });
    }
    /** The gateway's "claim what is free" on a scan that found `names`, for a job that "job and image" took. */
    function claim(match: string, names: string[]): string[] {
      const g = gateway();
      job(g, 'j', { match });
      const out = g.run('claim what is free', { jobId: 'j', payload: names.map((name) => ({ name, address: '24:0a:c4:00:00:02', version: '0.9.0' })) }) as Array<
        Array<{ topic: string }>
      > | null;
      return (out?.[0] ?? []).filter((m) => m.topic.startsWith('ota/fleet/claims/')).map((m) => decodeURIComponent(m.topic.split('/').pop()!));
    }

    it('devices named like built-in properties (constructor, toString, __proto__) are claimed like any other', () => {
      assert.deepEqual(claim('*', ['constructor', 'toString', 'esp32-1']), ['constructor', 'toString', 'esp32-1']);
      assert.deepEqual(claim('*o*', ['__proto__', 'hasOwnProperty', 'valueOf']), ['__proto__', 'hasOwnProperty', 'valueOf']);
    });

    it('claims go on its own topic, ota/fleet/claims/<gateway>/<job>/<device>', () => {
      const g = gateway();
      job(g, 'j', { devices: ['esp32-1'] });
      const out = g.run('claim what is free', { jobId: 'j', payload: [{ name: 'esp32-1' }] }) as Array<Array<{ topic: string }>>;
      assert.deepEqual(
        out[0].map((m) => m.topic).filter((t) => t.startsWith('ota/fleet/claims/')),
        ['ota/fleet/claims/gw-1/j/esp32-1'],
      );
    });

    it('connects its broker node with birth, close and last will on its own topic, ota/fleet/gateways/<gateway>/…', () => {
      const out = gateway().run('connect as GATEWAY_ID', {}) as { action: string; broker: Record<string, { topic: string; payload: string }> };
      assert.equal(out.action, 'connect');
      assert.deepEqual(
        Object.entries(out.broker).map(([k, m]) => [k, m.topic, m.payload]),
        [
          ['birth', 'ota/fleet/gateways/gw-1/online', 'gw-1'],
          ['close', 'ota/fleet/gateways/gw-1/offline', 'gw-1'],
          ['will', 'ota/fleet/gateways/gw-1/offline', 'gw-1'],
        ],
      );
      const broker = example('fleet-gateway.json').find((n) => n.type === 'mqtt-broker')!;
      assert.equal(broker.autoConnect, false, 'the function connects it');
    });

    it('a device whose gateway is released is free, not handed to a gateway that said "updating" while it was held', () => {
      const g = gateway();
      job(g, 'j', { devices: ['d1'] });
      const say = (gw: string, state: unknown) => g.run('settle and decide', { topic: `ota/fleet/claims/${gw}/j/d1`, payload: state === '' ? '' : JSON.stringify({ state }) });
      say('gw-a', 'updating');
      say('gw-evil', 'updating');
      const scan = () =>
        ((g.run('claim what is free', { jobId: 'j', payload: [{ name: 'd1' }] }) as Array<Array<{ topic: string }>>)[0] ?? [])
          .map((m) => m.topic)
          .filter((t) => t.startsWith('ota/fleet/claims/'));
      assert.deepEqual(scan(), [], 'gw-a holds it');
      say('gw-a', 'released');
      assert.deepEqual(scan(), ['ota/fleet/claims/gw-1/j/d1']);
    });

    it('a device that a gateway of an earlier example holds (its claims name no run) is not claimed; one held in another run is', () => {
      const g = gateway();
      job(g, 'j', { devices: ['d1', 'd2'], run: 'r2' });
      g.run('settle and decide', { topic: 'ota/fleet/claims/gw-old/j/d1', payload: JSON.stringify({ state: 'updating' }) });
      g.run('settle and decide', { topic: 'ota/fleet/claims/gw-a/j/d2', payload: JSON.stringify({ state: 'done', run: 'r1' }) });
      const out = g.run('claim what is free', { jobId: 'j', payload: [{ name: 'd1' }, { name: 'd2' }] }) as Array<Array<{ topic: string }>>;
      assert.deepEqual(
        out[0].map((m) => m.topic).filter((t) => t.startsWith('ota/fleet/claims/')),
        ['ota/fleet/claims/gw-1/j/d2'],
      );
    });

    it('a second job waits while one is open, keeps its image, and starts when the first ends', () => {
      const g = gateway();
      assert.deepEqual((job(g, 'first', { devices: ['a'] }) as unknown[])[0], { topic: 'scan', jobId: 'first' });
      assert.equal(job(g, 'second', { devices: ['b'] }), null);
      assert.deepEqual(g.log, ['warn: job second waits: this gateway runs one job at a time, and job first is open; second starts when it ends']);
      assert.equal((g.flow.get('fleet') as { job: { id: string } }).job.id, 'first');
      // The controller ends the first job: the second starts, with the image that came with it.
      const next = g.run('job and image', { topic: 'ota/fleet/jobs/first', payload: '' }) as unknown[];
      assert.deepEqual(next[0], { topic: 'scan', jobId: 'second' });
      const fleet = g.flow.get('fleet') as { job: { id: string }; image: Buffer };
      assert.equal(fleet.job.id, 'second');
      assert.equal(fleet.image.toString(), 'image');
      assert.equal(g.log.at(-1), 'log: job second starts: job first ended');
    });

    it('a job published again with the same image (a new run) starts with that image, open or waiting, whichever message comes first', () => {
      type Fleet = { job: { id: string; run: string }; image?: Buffer; started: boolean };
      const body = (run: string) => JSON.stringify({ version: '1.0.0', sha256: SHA, size: 5, settleMs: 0, devices: ['d1'], run });
      for (const imageFirst of [true, false]) {
        // Open: the controller publishes the image, then the job, both again.
        const g = gateway();
        job(g, 'j', { devices: ['d1'], run: 'r1' });
        const again = [
          { topic: 'ota/fleet/jobs/j/image', payload: IMAGE },
          { topic: 'ota/fleet/jobs/j', payload: body('r2') },
        ];
        const outs = (imageFirst ? again : [...again].reverse()).map((m) => g.run('job and image', m) as unknown[] | null);
        const open = g.flow.get('fleet') as Fleet;
        assert.equal(open.job.run, 'r2');
        assert.equal(open.image?.toString(), 'image', `open, ${imageFirst ? 'image' : 'job'} first: the new run has its image`);
        assert.ok(
          outs.some((o) => JSON.stringify(o?.[0]) === JSON.stringify({ topic: 'scan', jobId: 'j' })),
          'and scans',
        );

        // Waiting behind another job: the new run starts with the image when that one ends.
        const w = gateway();
        job(w, 'first', { devices: ['a'] });
        job(w, 'j', { devices: ['d1'], run: 'r1' });
        (imageFirst ? again : [...again].reverse()).forEach((m) => w.run('job and image', m));
        const next = w.run('job and image', { topic: 'ota/fleet/jobs/first', payload: '' }) as unknown[];
        assert.deepEqual(next?.[0], { topic: 'scan', jobId: 'j' }, `waiting, ${imageFirst ? 'image' : 'job'} first: it starts`);
        assert.equal((w.flow.get('fleet') as Fleet).job.run, 'r2');
      }
    });

    it('claims made for a job while it waits are kept: when it starts, a device another gateway holds is not claimed', () => {
      const g = gateway();
      job(g, 'first', { devices: ['a'] });
      job(g, 'second', { devices: ['both', 'free'] });
      g.run('settle and decide', { topic: 'ota/fleet/claims/gw-a/second/both', payload: JSON.stringify({ state: 'updating' }) });
      g.run('job and image', { topic: 'ota/fleet/jobs/first', payload: '' }); // the first ends: the second starts
      const out = g.run('claim what is free', { jobId: 'second', payload: [{ name: 'both' }, { name: 'free' }] }) as Array<Array<{ topic: string }>>;
      assert.deepEqual(
        out[0].map((m) => m.topic).filter((t) => t.startsWith('ota/fleet/claims/')),
        ['ota/fleet/claims/gw-1/second/free'],
      );
    });

    it("an image message that is not the job's (another SHA-256 or size) is ignored and logged, whenever it comes", () => {
      const g = gateway();
      const junk = Buffer.from('junk!');
      type Upload = { payload: Buffer; sha256: string };
      const uploads = () => (g.sent as Array<Array<Upload | null> | undefined>).map((m) => m?.[0]).filter((m): m is Upload => !!m?.sha256);
      // Junk before the job (kept beside the job's image until the job says which), and after it.
      g.run('job and image', { topic: 'ota/fleet/jobs/j/image', payload: junk });
      job(g, 'j', { devices: ['d1'] });
      g.run('job and image', { topic: 'ota/fleet/jobs/j/image', payload: junk });
      // A job waiting behind it gets junk first, then its image.
      job(g, 'w', { devices: ['d2'] });
      g.run('job and image', { topic: 'ota/fleet/jobs/w/image', payload: Buffer.from('other') });
      assert.deepEqual(
        g.log.filter((l) => /not the job's image/.test(l)),
        [
          "warn: job j: an image message that came before the job is not the job's image (its SHA-256 or size differs from the job's): ignored",
          "warn: job j: an image message is not the job's image (its SHA-256 or size differs from the job's): ignored",
          "warn: job w: an image message is not the job's image (its SHA-256 or size differs from the job's): ignored",
        ],
      );
      g.run('claim what is free', { jobId: 'j', payload: [{ name: 'd1' }] });
      g.run('settle and decide', { topic: 'ota/fleet/claims/gw-1/j/d1', payload: JSON.stringify({ state: 'claiming' }) });
      g.timers.at(-1)!.fn(); // settleMs
      g.run('job and image', { topic: 'ota/fleet/jobs/j', payload: '' });
      g.run('claim what is free', { jobId: 'w', payload: [{ name: 'd2' }] });
      g.run('settle and decide', { topic: 'ota/fleet/claims/gw-1/w/d2', payload: JSON.stringify({ state: 'claiming' }) });
      g.timers.at(-1)!.fn();
      assert.deepEqual(
        uploads().map((u) => [u.payload.toString(), u.sha256]),
        [
          ['image', SHA],
          ['image', SHA],
        ],
      );
    });

    it('says once, at its first scan of a job, that it started it (ota/fleet/gateways/<gateway>/started)', () => {
      const g = gateway();
      job(g, 'j', { devices: ['d1'] });
      const scan = () => ((g.run('claim what is free', { jobId: 'j', payload: [] }) as Array<Array<{ topic: string; payload: string }>>)[0] ?? []).map((m) => [m.topic, m.payload]);
      assert.deepEqual(scan(), [['ota/fleet/gateways/gw-1/started', 'j']]);
      assert.deepEqual(scan(), []);
    });

    /** One try at `name`: a scan finds it, the claim comes back, settleMs passes; the upload message, if it is ours. */
    function attempt(g: FunctionRun, jobId: string, name: string): { device: string; jobId: string } | undefined {
      const out = g.run('claim what is free', { jobId, payload: [{ name }] }) as Array<Array<{ topic: string; payload: string }>>;
      const claims = (out?.[0] ?? []).filter((m) => m.topic.startsWith('ota/fleet/claims/'));
      if (!claims.length) return undefined;
      g.run('settle and decide', claims[0]);
      const before = g.sent.length;
      g.timers.at(-1)!.fn(); // settleMs
      const upload = (g.sent.slice(before) as Array<Array<{ device: string; jobId: string }>>).map((m) => m[0]).find(Boolean);
      if (upload) g.run('settle and decide', (g.sent.at(-1) as Array<{ topic: string; payload: string }>)[1]);
      return upload;
    }

    it('a device released because another answered to its name is tried again at later scans, 3 times at most', () => {
      const g = gateway();
      job(g, 'j', { devices: ['d1'] });
      let uploads = 0;
      for (let scan = 0; scan < 6; scan++) {
        const upload = attempt(g, 'j', 'd1');
        if (!upload) continue;
        uploads++;
        const out = g.run('result and claim done', { ...upload, error: { code: 'DEVICE_NOT_AUTHENTICATED', message: 'the device did not prove its id' } }) as Array<
          Array<{ topic: string; payload: string }>
        >;
        g.run('settle and decide', out[0][0]); // the release, back from the broker
      }
      assert.equal(uploads, 4, 'the first try and 3 more');
      assert.deepEqual(
        g.log.filter((l) => /released/.test(l)).map((l) => l.replace(/^.*its id; /, '')),
        [
          'tried again at the next scan (1 of 3 retries)',
          'tried again at the next scan (2 of 3 retries)',
          'tried again at the next scan (3 of 3 retries)',
          'not tried again in this job (3 retries done)',
        ],
      );
    });

    it('a job listing a device twice updates it once; a release reason that is not text is not read', () => {
      const g = gateway();
      job(g, 'j', { devices: ['d1', 'd1'] });
      assert.deepEqual(g.log, ['warn: job j lists 1 device name(s) more than once: each device is updated once']);
      assert.deepEqual((g.flow.get('fleet') as { job: { devices: string[] } }).job.devices, ['d1']);
      assert.ok(attempt(g, 'j', 'd1'));
      // Someone releases our claim with a reason String() cannot describe, while we update d1: we claim it again.
      const again = g.run('settle and decide', { topic: 'ota/fleet/claims/gw-1/j/d1', payload: JSON.stringify({ state: 'released', reason: { toString: 1 } }) }) as Array<{
        payload: string;
      } | null>;
      assert.equal((JSON.parse(again[1]!.payload) as { state: string }).state, 'updating');
      assert.equal(g.log.at(-1), 'warn: d1: our claim was released (cleared) while we update it; claimed again');
    });

    it("a gateway login's flood of claims for devices no job follows keeps nothing: the gateway's memory holds the job's devices, a match job's up to its cap and 64 more until the controller grants its cap, then only those granted", () => {
      type Tables = { claims: Record<string, unknown> };
      const flood = (g: FunctionRun, id: string, n: number) => {
        for (let i = 0; i < n; i++) {
          g.run('settle and decide', { topic: `ota/fleet/claims/gw-evil/${id}/x${i}`, payload: JSON.stringify({ state: i % 2 ? 'claiming' : 'done' }) });
          g.run('settle and decide', { topic: `ota/fleet/claims/gw-evil/${id}/y${i}`, payload: '' });
        }
      };
      const listed = gateway();
      job(listed, 'j', { devices: ['d1', 'd2'] });
      job(listed, 'w', { devices: ['d3'] }); // waits behind j, and keeps the claims made for it meanwhile
      flood(listed, 'j', 2000);
      flood(listed, 'w', 2000);
      assert.deepEqual(Object.keys((listed.flow.get('fleet') as Tables).claims), []);
      assert.deepEqual(Object.keys((listed.flow.get('waiting') as Tables[])[0].claims ?? {}), []);
      // The job's own devices are followed as before: a device another gateway holds is not claimed.
      listed.run('settle and decide', { topic: 'ota/fleet/claims/gw-0/j/d1', payload: JSON.stringify({ state: 'updating' }) });
      const scan = listed.run('claim what is free', { jobId: 'j', payload: [{ name: 'd1' }, { name: 'd2' }] }) as Array<Array<{ topic: string }>>;
      assert.deepEqual(
        scan[0].filter((m) => m.topic.startsWith('ota/fleet/claims/')).map((m) => m.topic),
        ['ota/fleet/claims/gw-1/j/d2'],
      );
      const matched = gateway();
      job(matched, 'm', { match: '*', maxDevices: 5 });
      flood(matched, 'm', 2000);
      const kept = () => Object.keys((matched.flow.get('fleet') as Tables).claims).length;
      assert.equal(kept(), 5 + 64, "claims that wait for the controller's grants: its cap's worth, and room for those gateways make at the same moment");
      // The controller grants 5 devices: a claim of any other is not kept, one of these is.
      matched.run('settle and decide', { topic: 'ota/fleet/jobs/m/grants', payload: JSON.stringify({ job: 'm', devices: ['g0', 'g1', 'g2', 'g3', 'g4'] }) });
      for (let i = 0; i < 100; i++) matched.run('settle and decide', { topic: `ota/fleet/claims/gw-evil/m/z${i}`, payload: JSON.stringify({ state: 'claiming' }) });
      matched.run('settle and decide', { topic: 'ota/fleet/claims/gw-0/m/g0', payload: JSON.stringify({ state: 'updating' }) });
      assert.equal(kept(), 5 + 64 + 1);
    });

    it('settleMs, rescanS or timeoutS longer than a timer can wait are refused with the limit', () => {
      const g = gateway();
      assert.equal(job(g, 'a', { devices: ['x'], settleMs: 2 ** 31 }), null);
      assert.equal(job(g, 'b', { devices: ['x'], rescanS: 30 * 86400 }), null);
      assert.equal(job(g, 'c', { devices: ['x'], timeoutS: '60' }), null);
      assert.deepEqual(g.log, [
        'error: job a is ignored: its "settleMs" (2147483648) is longer than a timer can wait: at most 2147483647 milliseconds (24.8 days)',
        'error: job b is ignored: its "rescanS" (2592000) is longer than a timer can wait: at most 2147483 seconds (24.8 days)',
        'error: job c is ignored: its "timeoutS" is not a number of seconds (more than 0)',
      ]);
      assert.equal(g.flow.get('fleet'), undefined);
    });

    it('match claims what the pattern names (* and ?, any case), and nothing else', () => {
      assert.deepEqual(claim('esp32-hall-*', ['esp32-hall-1', 'esp32-yard-1', 'ESP32-HALL-2']), ['esp32-hall-1', 'ESP32-HALL-2']);
      assert.deepEqual(claim('esp32-?', ['esp32-a', 'esp32-ab', 'esp32-']), ['esp32-a']);
      assert.deepEqual(claim('*', ['a', 'b']), ['a', 'b']);
      assert.deepEqual(claim('a.b', ['a.b', 'axb']), ['a.b']);
    });

    it('a pattern made to backtrack, against a long name anyone can advertise, is decided at once', () => {
      // As a regular expression (.*e.*e...!), this takes longer than the test's timeout.
      const evil = '*e'.repeat(24) + '!';
      assert.deepEqual(claim(evil, ['e'.repeat(29), 'esp32-fleet-x']), []);
    });
  });
});

interface FleetResult {
  status: string;
  reason?: string;
  previousVersion?: string;
  deviceId?: string;
  authenticated?: boolean;
  error?: { code: string; message: string };
}
