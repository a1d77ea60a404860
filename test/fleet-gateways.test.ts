/**
 * Fleet updates across gateways (examples/fleet-gateway.json and
 * examples/fleet-controller.json, docs/FLEET.md): one real Mosquitto, two
 * Node-RED gateways, each with its own virtual ESP32s and one device in
 * range of both, and a Node-RED controller. The broker runs the ACL that
 * docs/SECURITY.md gives (read from it), every Node-RED logged in as the
 * login it documents. The test publishes jobs with the controller's login,
 * as any system would, and reads the controller's reports; a gateway login
 * of its own forges results.
 */
import { strict as assert } from 'node:assert';
import { createHash, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { buildAppImage } from '../lib/image/app-image-builder';
import { Mosquitto, MqttClient } from './support/mosquitto';
import { NodeRedProcess, ROOT } from './support/node-red-process';

type FlowNode = Record<string, unknown> & { id: string; type: string };

interface DeviceRow {
  name: string;
  status: string;
  version?: string;
  gateway?: string;
}
interface Report {
  job: string;
  outcome: string;
  devices: DeviceRow[];
  notReached: string[];
  unproven: string[];
  run?: string;
  leftOut?: { devices: number; reason: string };
}

/** The Mosquitto ACL in docs/SECURITY.md, as a user copies it. */
function documentedAcl(): string {
  const doc = readFileSync(join(ROOT, 'docs', 'SECURITY.md'), 'utf8');
  const block = /\n( *)```\n\1# acl_file\n([\s\S]*?)\n\1```/.exec(doc);
  assert.ok(block, 'docs/SECURITY.md has an acl_file block');
  return block[2].replace(new RegExp(`^${block[1]}`, 'gm'), '') + '\n';
}

/** The logins the ACL names (mqtt-updater: the MQTT example's Node-RED), and gw-evil: a gateway login of its own, in no Node-RED. */
const LOGINS: Record<string, string> = Object.fromEntries(
  ['controller', 'firmware-publisher', 'mqtt-updater', 'gw-a', 'gw-b', 'gw-evil'].map((u) => [u, randomBytes(12).toString('hex')]),
);

/** Starts Node-RED, then deploys `flow` with the broker node logged in as `user` (credentials, as the editor sets them). */
async function startAs(user: string, flow: FlowNode[], env: Record<string, string> = {}): Promise<NodeRedProcess> {
  const nr = await NodeRedProcess.start([], '', env);
  await nr.deploy(flow, (n) => (n.type === 'mqtt-broker' ? { user, password: LOGINS[user] } : undefined));
  return nr;
}

function example(file: string, port: number): FlowNode[] {
  const flow = JSON.parse(readFileSync(join(ROOT, 'examples', file), 'utf8')) as FlowNode[];
  return flow.map((n) => (n.type === 'mqtt-broker' ? { ...n, port: String(port) } : n));
}

/** The controller example, its "start job" Inject set to the test's devices as a user would set it. */
function controllerFlow(port: number): FlowNode[] {
  const job = { version: '4.0.0', devices: ['esp32-fleet-a2', 'esp32-fleet-b1'], timeoutS: 60 };
  return example('fleet-controller.json', port).map((n) => (n.type === 'inject' ? { ...n, props: [{ p: 'job', v: JSON.stringify(job), vt: 'json' }] } : n));
}

/** The updates a gateway's upload node logged: the names of the devices it wrote an image to. */
function uploads(nr: NodeRedProcess, version: string): string[] {
  const line = new RegExp(`updated (esp32-fleet-\\S+) to fleet-app ${version.replace(/\./g, '\\.')} `, 'g');
  return [...nr.output.matchAll(line)].map((m) => m[1]);
}

describe('fleet updates across gateways (real Mosquitto, two Node-RED gateways, a controller)', function () {
  this.timeout(120_000);
  let broker: Mosquitto | undefined;
  let gwA: NodeRedProcess | undefined;
  let gwB: NodeRedProcess | undefined;
  let controller: NodeRedProcess | undefined;
  let client: MqttClient | undefined;
  const seen: Array<{ topic: string; text: string }> = [];

  /** The first message on `topic` (or under it, with `prefix`; or matching it, a RegExp) that `accept`s, from the `from`th seen on. */
  async function message(topic: string | RegExp, timeoutMs: number, accept: (text: string) => boolean = () => true, prefix = false, from = 0): Promise<string> {
    const deadline = Date.now() + timeoutMs;
    const on = (t: string) => (typeof topic !== 'string' ? topic.test(t) : prefix ? t.startsWith(topic) : t === topic);
    for (;;) {
      const m = seen.slice(from).find((s) => on(s.topic) && accept(s.text));
      if (m) return m.text;
      if (Date.now() > deadline) {
        const tail = seen.slice(-15).map((s) => `${s.topic} ${s.text.slice(0, 160)}`);
        throw new Error(`nothing on ${String(topic)} within ${timeoutMs} ms; the last messages:\n${tail.join('\n')}`);
      }
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  /** A job as a controller publishes it: with the image's SHA-256 and size, and a run id of its own; returns the run. */
  async function publishJob(id: string, job: Record<string, unknown>, image?: Buffer): Promise<string> {
    const run = randomBytes(8).toString('hex');
    const named = { run, ...(image ? { sha256: createHash('sha256').update(image).digest('hex'), size: image.length } : {}), ...job };
    if (image) await client!.publish(`ota/fleet/jobs/${id}/image`, image, { qos: 1, retain: true });
    await client!.publish(`ota/fleet/jobs/${id}`, JSON.stringify(named), { qos: 1, retain: true });
    return run;
  }

  /** Claims on the device, each on its gateway's topic ota/fleet/claims/<gateway>/<job>/<device>. */
  const claims = (job: string, device: string) =>
    seen
      .filter((s) => s.topic.endsWith(`/${job}/${device}`) && s.topic.startsWith('ota/fleet/claims/') && s.text)
      .map((s) => ({ ...(JSON.parse(s.text) as { state: string }), gateway: s.topic.split('/')[3] }));
  /** The results of a job, the gateway that sent each from its topic. */
  const results = (job: string) =>
    seen
      .filter((s) => s.topic.startsWith('ota/fleet/results/') && s.topic.split('/')[4] === job)
      .map((s) => ({ ...(JSON.parse(s.text) as { device: string; status: string }), from: s.topic.split('/')[3] }));

  before(async function () {
    broker = await Mosquitto.start({ users: LOGINS, acl: documentedAcl() });
    if (!broker) return this.skip(); // mosquitto not installed: .ci/run installs it
    const gateway = example('fleet-gateway.json', broker.port);
    [gwA, gwB, controller] = await Promise.all([
      startAs('gw-a', gateway, { GATEWAY_ID: 'gw-a', BLE_OTA_VIRTUAL_DEVICES: 'esp32-fleet-a1,esp32-fleet-a2,esp32-fleet-both' }),
      startAs('gw-b', gateway, { GATEWAY_ID: 'gw-b', BLE_OTA_VIRTUAL_DEVICES: 'esp32-fleet-b1,esp32-fleet-both' }),
      startAs('controller', controllerFlow(broker.port)),
    ]);
    await Promise.all([gwA, gwB, controller].map((nr) => nr.waitForOutput(/Connected to broker/, 20_000)));
    client = await broker.client('controller');
    client.on('message', (topic, payload) => {
      if (!topic.endsWith('/image')) seen.push({ topic, text: payload.toString() });
    });
    await client.subscribe('ota/fleet/#');
  });

  after(async () => {
    await client?.endAsync();
    await Promise.all([gwA?.stop(), gwB?.stop(), controller?.stop()]);
    await broker?.stop();
  });

  it('updates every device exactly once, the one both gateways see included, and reports each with its new version', async () => {
    const devices = ['esp32-fleet-a1', 'esp32-fleet-a2', 'esp32-fleet-b1', 'esp32-fleet-both'];
    const image = buildAppImage({ projectName: 'fleet-app', version: '2.0.0', size: 40_000 });
    await publishJob('job-1', { version: '2.0.0', devices, timeoutS: 60, settleMs: 500 }, image);

    const report = JSON.parse(await message('ota/fleet/reports/job-1', 60_000)) as Report;
    assert.equal(report.outcome, 'complete');
    assert.deepEqual(
      report.devices.map((d) => [d.name, d.status, d.version]),
      devices.map((name) => [name, 'updated', '2.0.0']),
    );
    assert.deepEqual(report.notReached, []);
    // The gateways have no fleet secret (the example as imported): no device proved it is ours, and the report says so.
    assert.deepEqual(report.unproven, devices);

    // What the upload nodes themselves logged: one update per device across both gateways.
    const byA = uploads(gwA!, '2.0.0');
    const byB = uploads(gwB!, '2.0.0');
    assert.deepEqual([...byA, ...byB].sort(), devices, `gw-a updated ${byA}, gw-b updated ${byB}`);
    assert.ok(byA.includes('esp32-fleet-a1') && byA.includes('esp32-fleet-a2') && byB.includes('esp32-fleet-b1'));
    const both = report.devices.find((d) => d.name === 'esp32-fleet-both')!;
    assert.equal(both.gateway, byA.includes('esp32-fleet-both') ? 'gw-a' : 'gw-b', 'the report names the gateway that did it');

    // The claim went to the lowest id among the gateways that claimed it.
    const claimants = [
      ...new Set(
        claims('job-1', 'esp32-fleet-both')
          .filter((c) => c.state === 'claiming')
          .map((c) => c.gateway),
      ),
    ].sort();
    assert.ok(claimants.length > 0);
    assert.equal(both.gateway, claimants[0], `claimed by ${claimants}`);

    // One result per device on MQTT, each on the topic of the gateway that updated it; the job's
    // retained messages cleared for the gateways (the controller may write them under the ACL).
    const updated = results('job-1').filter((r) => r.status === 'updated');
    assert.deepEqual(updated.map((r) => r.device).sort(), devices);
    for (const r of updated) assert.equal(r.from, report.devices.find((d) => d.name === r.device)!.gateway);
    await message('ota/fleet/jobs/job-1', 5000, (text) => text === '');
    const claimed = new Set(seen.filter((m) => m.topic.startsWith('ota/fleet/claims/') && m.topic.split('/')[4] === 'job-1' && m.text).map((m) => m.topic));
    assert.ok(claimed.size >= devices.length);
    for (const topic of claimed) await message(topic, 5000, (text) => text === '');
  });

  it('reports at the timeout the device that never appeared; devices already at the version are current, not updated again', async () => {
    const before = uploads(gwA!, '2.0.0').length + uploads(gwB!, '2.0.0').length;
    const image = buildAppImage({ projectName: 'fleet-app', version: '2.0.0', size: 40_000 });
    await publishJob('job-2', { version: '2.0.0', devices: ['esp32-fleet-a1', 'esp32-fleet-b1', 'esp32-fleet-gone'], timeoutS: 10, rescanS: 2 }, image);

    const report = JSON.parse(await message('ota/fleet/reports/job-2', 30_000)) as Report;
    assert.equal(report.outcome, 'timed out');
    assert.deepEqual(
      report.devices.map((d) => [d.name, d.status, d.version]),
      [
        ['esp32-fleet-a1', 'current', '2.0.0'],
        ['esp32-fleet-b1', 'current', '2.0.0'],
        ['esp32-fleet-gone', 'not reached', undefined],
      ],
    );
    assert.deepEqual(report.notReached, ['esp32-fleet-gone']);
    assert.equal(uploads(gwA!, '2.0.0').length + uploads(gwB!, '2.0.0').length, before, 'no device was written again');
  });

  it("a gateway login speaks only for itself: results it forges, on another gateway's topics or for devices it does not hold, count for nothing; it cannot say another gateway went offline", async () => {
    const evil = await broker!.client('gw-evil');
    try {
      // Large enough that gw-a is still updating esp32-fleet-a1 when gw-evil tries to take it.
      const image = buildAppImage({ projectName: 'fleet-app', version: '2.5.0', size: 300_000 });
      // A gateway login reads the job, and names its run as an honest gateway does.
      const run = await publishJob('job-f', { version: '2.5.0', devices: ['esp32-fleet-a1', 'esp32-fleet-gone'], timeoutS: 30, rescanS: 2, settleMs: 500 }, image);
      await message('ota/fleet/claims/gw-a/job-f/esp32-fleet-a1', 30_000, (text) => text.includes('"updating"'));
      const forged = (device: string) => JSON.stringify({ job: 'job-f', run, device, gateway: 'gw-a', status: 'updated', version: '2.5.0', confirmed: true, authenticated: true });
      const from = controller!.output.length;
      // Takes over the device gw-a holds: says "updating" on its own topic, then that gw-a went
      // offline, on gw-a's topic (dropped), on the shared topic of old (dropped) and on its own
      // (the controller reads the gateway from the topic: gw-evil's own claim is released).
      await evil.publish('ota/fleet/claims/gw-evil/job-f/esp32-fleet-a1', JSON.stringify({ state: 'updating', run }), { qos: 1, retain: true });
      for (const topic of ['ota/fleet/gateways/gw-a/offline', 'ota/fleet/gateways/offline', 'ota/fleet/gateways/gw-evil/offline']) await evil.publish(topic, 'gw-a', { qos: 1 });
      await message('ota/fleet/claims/gw-evil/job-f/esp32-fleet-a1', 10_000, (text) => text.includes('"released"'));
      assert.ok(!seen.some((m) => m.topic === 'ota/fleet/gateways/gw-a/offline' || m.topic === 'ota/fleet/gateways/offline'), 'no offline message for gw-a');
      // As gw-a: the broker drops them (the ACL lets gw-evil write only under its own name).
      await evil.publish('ota/fleet/claims/gw-a/job-f/esp32-fleet-gone', JSON.stringify({ state: 'updating', run }), { qos: 1, retain: true });
      await evil.publish('ota/fleet/results/gw-a/job-f/esp32-fleet-gone', forged('esp32-fleet-gone'), { qos: 1 });
      // As itself: they arrive, and the controller takes no result from a gateway that does not hold the device.
      await evil.publish('ota/fleet/results/gw-evil/job-f/esp32-fleet-gone', forged('esp32-fleet-gone'), { qos: 1 });
      await evil.publish('ota/fleet/results/gw-evil/job-f/esp32-fleet-a1', forged('esp32-fleet-a1'), { qos: 1 });
      // One publisher's messages arrive in order: when its last one is here, the dropped ones would have been.
      await message('ota/fleet/results/gw-evil/job-f/esp32-fleet-a1', 10_000);
      assert.ok(!seen.some((m) => m.topic.startsWith('ota/fleet/') && m.topic.split('/')[3] === 'gw-a' && m.topic.endsWith('/job-f/esp32-fleet-gone')), 'nothing as gw-a');
      await controller!.waitForOutput(/job job-f: a result for esp32-fleet-a1 from gw-evil, which does not hold it \(gw-a does\): ignored/, 20_000, from);
      assert.match(controller!.output.slice(from), /job job-f: a result for esp32-fleet-gone from gw-evil, which does not hold it \(no gateway does\): ignored/);

      const report = JSON.parse(await message('ota/fleet/reports/job-f', 60_000)) as Report;
      assert.equal(report.outcome, 'timed out');
      assert.deepEqual(
        report.devices.map((d) => [d.name, d.status, d.version, d.gateway]),
        [
          ['esp32-fleet-a1', 'updated', '2.5.0', 'gw-a'],
          ['esp32-fleet-gone', 'not reached', undefined, undefined],
        ],
      );
      assert.deepEqual(report.notReached, ['esp32-fleet-gone']);
      assert.ok(!seen.some((m) => m.topic === 'ota/fleet/claims/gw-a/job-f/esp32-fleet-a1' && m.text.includes('"released"')), 'gw-a was never released');
      assert.deepEqual(uploads(gwA!, '2.5.0'), ['esp32-fleet-a1']);
    } finally {
      await evil.endAsync();
    }
  });

  it("the MQTT example's login reads the firmware topic and writes the status topic, and neither reads nor writes a fleet topic", async () => {
    const updater = await broker!.client('mqtt-updater');
    const publisher = await broker!.client('firmware-publisher');
    try {
      const got: string[] = [];
      updater.on('message', (topic) => got.push(topic));
      await updater.subscribe('#');
      // What the controller publishes on the fleet topics (acknowledged: queued for every reader) comes before the firmware.
      await client!.publish('ota/fleet/reports/acl-probe', '{}', { qos: 1 });
      await publisher.publish('ota/esp32-acl/firmware', 'image', { qos: 1 });
      // Its own writes: on the fleet topics (dropped), then its status, which it reads back.
      await updater.publish('ota/fleet/claims/mqtt-updater/acl-probe/esp32-acl', JSON.stringify({ state: 'updating' }), { qos: 1 });
      await updater.publish('ota/esp32-acl/status', 'confirmed', { qos: 1 });
      while (!got.includes('ota/esp32-acl/status')) await new Promise((r) => setTimeout(r, 20));
      assert.deepEqual(got, ['ota/esp32-acl/firmware', 'ota/esp32-acl/status']);
      // The controller's own last message: what the updater wrote before it would have come first.
      await client!.publish('ota/fleet/reports/acl-probe-end', '{}', { qos: 1 });
      await message('ota/fleet/reports/acl-probe-end', 10_000);
      assert.ok(!seen.some((m) => m.topic.includes('/mqtt-updater/')), 'nothing on the fleet topics from mqtt-updater');
    } finally {
      await Promise.all([updater.endAsync(), publisher.endAsync()]);
    }
  });

  it("the controller's start job button publishes its firmware (the sample node's, at the job's version) as a job and reports it", async () => {
    await controller!.inject('f1ee7c0000000002');

    const job = JSON.parse(await message('ota/fleet/jobs/', 5000, (text) => text.includes('"4.0.0"'), true)) as { id: string };
    assert.match(job.id, /^fleet-\d{14}$/);
    const report = JSON.parse(await message(`ota/fleet/reports/${job.id}`, 60_000)) as Report;
    assert.equal(report.outcome, 'complete');
    assert.deepEqual(
      report.devices.map((d) => [d.name, d.status, d.version, d.gateway]),
      [
        ['esp32-fleet-a2', 'updated', '4.0.0', 'gw-a'],
        ['esp32-fleet-b1', 'updated', '4.0.0', 'gw-b'],
      ],
    );
    assert.deepEqual(uploads(gwA!, '4.0.0'), ['esp32-fleet-a2']);
    assert.deepEqual(uploads(gwB!, '4.0.0'), ['esp32-fleet-b1']);
  });

  it('a job id run again: what a gateway sent in the earlier run, retained on the broker or arriving late, counts for nothing in the new one', async () => {
    const device = 'esp32-fleet-a1';
    const resultTopic = `ota/fleet/results/gw-a/job-r/${device}`;
    const claimTopic = `ota/fleet/claims/gw-a/job-r/${device}`;
    const first = await publishJob(
      'job-r',
      { version: '3.4.0', devices: [device], timeoutS: 60, settleMs: 500 },
      buildAppImage({ projectName: 'fleet-app', version: '3.4.0', size: 40_000 }),
    );
    const one = JSON.parse(await message('ota/fleet/reports/job-r', 60_000)) as Report;
    assert.deepEqual([one.outcome, one.devices.map((d) => [d.name, d.status, d.version])], ['complete', [[device, 'updated', '3.4.0']]]);
    // What gw-a sent in that run: its result, and its claim marked done.
    const oldResult = await message(resultTopic, 5000);
    const oldClaim = await message(claimTopic, 5000, (text) => text.includes('"done"'));
    await message(
      claimTopic,
      5000,
      (text) => text === '',
      false,
      seen.findIndex((m) => m.topic === claimTopic && m.text === oldClaim),
    );

    const asGwA = await broker!.client('gw-a'); // what the broker passes on from gw-a, as gw-a's flow sent it
    try {
      // Its claim reaches the broker after the report, as from a gateway that finished late: retained, until the controller clears it.
      let from = seen.length;
      await asGwA.publish(claimTopic, oldClaim, { qos: 1, retain: true });
      await message(claimTopic, 10_000, (text) => text === '', false, from);

      // The same job id again, with another image; gw-a's result and claim of the first run arrive late (after the job: the broker passes
      // on each publisher's messages in order, and the job was acknowledged), while gw-a scans for the new run.
      from = seen.length;
      const second = await publishJob(
        'job-r',
        { version: '3.5.0', devices: [device], timeoutS: 20, settleMs: 500 },
        buildAppImage({ projectName: 'fleet-app', version: '3.5.0', size: 40_000 }),
      );
      assert.notEqual(second, first);
      const log = controller!.output.length;
      await asGwA.publish(resultTopic, oldResult, { qos: 1 });
      await asGwA.publish(claimTopic, oldClaim, { qos: 1, retain: true });
      await controller!.waitForOutput(new RegExp(`job job-r: a result for ${device} from gw-a of another run \\(${first}, not ${second}\\): ignored`), 20_000, log);

      const two = JSON.parse(await message('ota/fleet/reports/job-r', 60_000, () => true, false, from)) as Report;
      assert.equal(two.run, second);
      assert.deepEqual([two.outcome, two.devices.map((d) => [d.name, d.status, d.version, d.gateway])], ['complete', [[device, 'updated', '3.5.0', 'gw-a']]]);
      assert.deepEqual(uploads(gwA!, '3.5.0'), [device]);
      // Every result gw-a sent in the second run names it.
      const sent = seen.slice(from).filter((m) => m.topic === resultTopic && m.text !== oldResult);
      assert.deepEqual(
        sent.map((m) => (JSON.parse(m.text) as { run?: string }).run),
        [second],
      );
      // Its claim of the second run, and the late one of the first, are cleared with the job.
      await message(
        claimTopic,
        10_000,
        (text) => text === '',
        false,
        seen.findIndex((m, i) => i >= from && m.topic === 'ota/fleet/reports/job-r'),
      );
    } finally {
      await asGwA.endAsync();
    }
  });

  it('a match job stops at the most devices the controller follows (maxDevices, announced with the job): the gateways claim no more, and the report says how many were left out and why', async () => {
    const from = seen.length;
    const image = buildAppImage({ projectName: 'fleet-app', version: '3.6.0', size: 40_000 });
    // gw-a has two devices that match; the job follows one.
    await publishJob('job-m', { version: '3.6.0', match: 'esp32-fleet-a?', maxDevices: 1, timeoutS: 20, rescanS: 2, settleMs: 500 }, image);
    const report = JSON.parse(await message('ota/fleet/reports/job-m', 60_000, () => true, false, from)) as Report;
    assert.equal(report.outcome, 'timed out');
    assert.equal(report.devices.length, 1);
    const [kept] = report.devices;
    assert.match(kept.name, /^esp32-fleet-a[12]$/);
    assert.deepEqual([kept.status, kept.version, kept.gateway], ['updated', '3.6.0', 'gw-a']);
    assert.deepEqual(uploads(gwA!, '3.6.0'), [kept.name], 'the device left out was not updated');
    assert.equal(report.leftOut?.devices, 1);
    assert.match(report.leftOut?.reason ?? '', /beyond the 1 this "match" job follows \(its maxDevices\)/);
  });

  it('a controller that starts while a match job runs (it was away when the job came): it asks the broker for what was granted before, then grants the cap, and the gateways update only that', async () => {
    await controller!.stop();
    const from = seen.length;
    const image = buildAppImage({ projectName: 'fleet-app', version: '3.7.0', size: 40_000 });
    // gw-a has two devices that match; the job follows one. No controller reads the claims yet.
    await publishJob('job-g', { version: '3.7.0', match: 'esp32-fleet-a?', maxDevices: 1, timeoutS: 20, rescanS: 2, settleMs: 500 }, image);
    for (const device of ['esp32-fleet-a1', 'esp32-fleet-a2']) await message(`ota/fleet/claims/gw-a/job-g/${device}`, 20_000, (text) => text.includes('"claiming"'), false, from);
    controller = await startAs('controller', controllerFlow(broker!.port));
    await controller.waitForOutput(/Connected to broker/, 20_000);
    const report = JSON.parse(await message('ota/fleet/reports/job-g', 60_000, () => true, false, from)) as Report;
    assert.equal(report.devices.length, 1);
    const [kept] = report.devices;
    assert.deepEqual([kept.status, kept.version, kept.gateway], ['updated', '3.7.0', 'gw-a']);
    assert.deepEqual(uploads(gwA!, '3.7.0'), [kept.name], 'the device left out was not updated');
    assert.equal(report.leftOut?.devices, 1);
    // It asked the broker for the grants kept from before it started (there were none), then granted one device.
    const grants = seen.slice(from).filter((m) => m.topic === 'ota/fleet/jobs/job-g/grants' && m.text);
    assert.deepEqual(
      grants.map((m) => Object.keys(JSON.parse(m.text) as object).join(',')),
      ['job,run,probe', 'job,run,devices'],
    );
    assert.deepEqual((JSON.parse(grants[1].text) as { devices: string[] }).devices, [kept.name]);
  });

  it('a gateway that dies mid-update: the controller releases its device and the other gateway updates it', async () => {
    const image = buildAppImage({ projectName: 'fleet-app', version: '3.0.0', size: 300_000 });
    await publishJob('job-3', { version: '3.0.0', devices: ['esp32-fleet-both'], timeoutS: 60, rescanS: 2, settleMs: 500 }, image);

    const updating = JSON.parse(await message(/^ota\/fleet\/claims\/gw-[ab]\/job-3\/esp32-fleet-both$/, 30_000, (text) => text.includes('"updating"'))) as { gateway: string };
    const [dying, survivor] = updating.gateway === 'gw-a' ? [gwA!, gwB!] : [gwB!, gwA!];
    const survivorId = updating.gateway === 'gw-a' ? 'gw-b' : 'gw-a';
    dying.child.kill('SIGKILL'); // no goodbye: the broker sends its last will

    await message(`ota/fleet/claims/${updating.gateway}/job-3/esp32-fleet-both`, 10_000, (text) => text.includes('"released"'));
    const report = JSON.parse(await message('ota/fleet/reports/job-3', 60_000)) as Report;
    assert.equal(report.outcome, 'complete');
    assert.deepEqual(
      report.devices.map((d) => [d.name, d.status, d.version, d.gateway]),
      [['esp32-fleet-both', 'updated', '3.0.0', survivorId]],
    );
    assert.deepEqual(uploads(survivor, '3.0.0'), ['esp32-fleet-both']);
  });
});
