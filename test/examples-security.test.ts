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
 * - a fleet job without the image's SHA-256 is ignored, an image that is
 *   not the one the job names is refused (IMAGE_MISMATCH) without echoing
 *   its bytes, and a job whose url points at the gateway's loopback makes
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
import { buildAppImage } from '../lib/image/app-image-builder';
import { generateSigningKey } from '../lib/image/signature';
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
  const tab = { id: 'f1f1f1f1f1f1f1f1', type: 'tab', label: 'example' };
  const nodes = flow.map((n) => {
    const placed = 'z' in n ? { ...n, z: tab.id } : n;
    return n.type === 'ble-ota-device' ? { ...placed, credentials: { secret: OWNER.secret } } : placed;
  });
  const from = nr.output.length;
  const res = await fetch(`${nr.url}/flows`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', 'Node-RED-Deployment-Type': 'full' },
    body: JSON.stringify([tab, ...nodes]),
  });
  assert.ok(res.status === 200 || res.status === 204, `deploy: HTTP ${res.status}`);
  await nr.waitForOutput(/Started flows/, 30_000, from);
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
      await publish(signedImage({ size: 60_000, projectName: 'mqtt-app', version: '3.0.0', secureVersion: 3, seed: 70 }), /^esp32-mqtt: confirmed 100 % 3\.0\.0/);
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
      assert.match(line, /^esp32-mqtt: confirmed 100 % 3\.1\.0/);
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

    it('an image that is not the one the job names is refused, and the result does not repeat its bytes', async () => {
      const named = signedImage({ size: 20_000, projectName: 'fleet-app', version: '5.0.0', seed: 91 });
      const swapped = buildAppImage({ size: 20_000, projectName: 'fleet-app', version: '5.0.0', seed: 92 });
      const job = { version: '5.0.0', devices: ['esp32-fleet-x'], sha256: createHash('sha256').update(named).digest('hex'), size: named.length, settleMs: 200, timeoutS: 60 };
      await client!.publish('ota/fleet/jobs/swap/image', swapped, { qos: 1, retain: true });
      await client!.publish('ota/fleet/jobs/swap', JSON.stringify(job), { qos: 1, retain: true });
      const deadline = Date.now() + 60_000;
      let result: { status: string; error?: { code: string; message: string } } | undefined;
      while (!result && Date.now() < deadline) {
        const r = results.find((x) => x.topic === 'ota/fleet/results/swap/esp32-fleet-x');
        if (r) result = JSON.parse(r.text) as typeof result;
        else await new Promise((res) => setTimeout(res, 50));
      }
      assert.ok(result, 'a result for the device');
      assert.equal(result.status, 'failed');
      assert.equal(result.error?.code, 'IMAGE_MISMATCH');
      assert.equal(result.error?.message, 'the image was refused before any radio work');
      assert.doesNotMatch(gw!.output, /updated esp32-fleet-x/);
    });

    /**
     * Publishes a job with its image and waits for the device's result, or
     * for the gateway to release the device (a claim with a reason).
     */
    async function runJob(id: string, image: Buffer, job: Record<string, unknown>): Promise<FleetResult> {
      const named = { devices: ['esp32-fleet-x'], sha256: createHash('sha256').update(image).digest('hex'), size: image.length, settleMs: 200, timeoutS: 60, ...job };
      await client!.publish(`ota/fleet/jobs/${id}/image`, image, { qos: 1, retain: true });
      await client!.publish(`ota/fleet/jobs/${id}`, JSON.stringify(named), { qos: 1, retain: true });
      const deadline = Date.now() + 60_000;
      for (;;) {
        const r = results.find((x) => x.topic === `ota/fleet/results/${id}/esp32-fleet-x`);
        if (r) return JSON.parse(r.text) as FleetResult;
        const released = results.find((x) => x.topic === `ota/fleet/claims/${id}/esp32-fleet-x` && x.text.includes('"released"'));
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

  describe("fleet-gateway.json's name patterns", () => {
    /** The gateway's "claim what is free" function, run on a scan result as Node-RED runs it. */
    function claim(match: string, names: string[]): string[] {
      const node = example('fleet-gateway.json').find((n) => n.type === 'function' && n.name === 'claim what is free')!;
      const job = { id: 'j', version: '1.0.0', match, settleMs: 0, rescanS: 30 };
      const fleet = { job, claims: {}, pending: {}, active: {}, tried: {}, scanning: 1, lastScan: 0 };
      const run = new Function('msg', 'node', 'flow', 'env', String(node.func)) as (...args: unknown[]) => Array<Array<{ topic: string }>> | null;
      const out = run(
        { jobId: 'j', payload: names.map((name) => ({ name, address: '24:0a:c4:00:00:02', version: '0.9.0' })) },
        { status: () => undefined, warn: () => undefined },
        { get: () => fleet },
        { get: () => 'gw-1' },
      );
      return (out?.[0] ?? []).map((m) => decodeURIComponent(m.topic.split('/').pop()!));
    }

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
