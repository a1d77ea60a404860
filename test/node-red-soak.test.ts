/**
 * Node-RED soak: a real Node-RED with four virtual ESP32s and
 * five upload nodes (one per device, and one that names its device in
 * msg.device, so two nodes update one device). Dozens of update messages
 * arrive in bursts through an HTTP In endpoint, interleaved with full
 * redeploys of the same flow (which close and restart every node,
 * cancelling what runs and waits) and msg.cancel, at moments a seeded PRNG
 * chooses (SOAK_SEED replays a seed's choices; SOAK_MESSAGES sets how many
 * updates; SOAK_CONFIRM=device lets the devices confirm their new images;
 * SOAK_LOG=file keeps Node-RED's output).
 *
 * Every message carries msg._soakId. A ledger of runtime hooks, registered
 * in settings.js (postReceive, onSend, onComplete), writes one line per
 * event to Node-RED's output: the upload node got the message, sent a
 * result on output 1, a Catch node took its error, the node called done().
 * Function nodes behind output 1 and the Catch node also log what reaches
 * the flow. What must hold:
 * - every message reaches an upload node, and its done() is called exactly
 *   once;
 * - no message gets two outcomes (two results, two Catch messages, or both);
 * - a message completed while its flow runs has exactly one outcome: a
 *   result on output 1 when done() had no error, else exactly one Catch
 *   message with msg.error.code (the code done(err) gave);
 * - a message completed by a node closed by a redeploy ends with CANCELLED
 *   through done(err) (or succeeded, when it finished before the abort): its
 *   Catch node is already stopped by then, as Node-RED stops a flow;
 * - a msg.cancel itself completes with done() and no outcome;
 * - afterwards, with nothing interfering, the next update of every device
 *   succeeds: each ends confirmed on the last image's version;
 * - Node-RED did not crash and logged no unhandled error.
 * No durations are asserted: every wait is on an event, with a generous
 * deadline.
 */
import { strict as assert } from 'node:assert';
import { writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { NodeRedProcess, ROOT } from './support/node-red-process';
import { mulberry32 } from './support/prng';

type FlowNode = Record<string, unknown> & { id: string; type: string };

const TAB = 'f1f1f1f1f1f1f1f1';
const DEVICES = ['soak-a', 'soak-b', 'soak-c', 'soak-d'];
/** One upload node per device, and up-x, which names the device in msg.device. */
const UPLOADS = ['soak-up-a', 'soak-up-b', 'soak-up-c', 'soak-up-d', 'soak-up-x'];
const PROJECT = 'soak-app';

function soakFlow(): FlowNode[] {
  const devices = DEVICES.map((name, i) => ({
    id: `soak-dev-${'abcd'[i]}`,
    type: 'ble-ota-device',
    device: name,
    backend: 'virtual',
    scanTimeout: 2,
    operationTimeout: 2,
  }));
  const router = `
const build = global.get('soakBuild');
const ups = ${JSON.stringify(UPLOADS)};
const per = ups.map(() => []);
for (const j of msg.payload.jobs) {
  const m = { _soakId: j.id, topic: 'soak-' + j.id };
  if (j.cancel) m.cancel = true;
  else if (j.bad) m.payload = Buffer.from('not an ESP32 image, soak message ' + j.id);
  else m.payload = build({ projectName: ${JSON.stringify(PROJECT)}, version: j.version, size: j.size, seed: j.seed });
  if (j.device) m.device = j.device;
  per[ups.indexOf(j.node)].push(m);
}
msg.payload = { accepted: msg.payload.jobs.length };
// The upload nodes' messages go out before the HTTP answer: when the test
// gets the answer, every upload node has received its messages.
node.send([...per, msg]);
return null;`;
  const nodes: FlowNode[] = [
    { id: 'soak-http', z: TAB, type: 'http in', url: '/soak', method: 'post', upload: false, wires: [['soak-router']] },
    {
      id: 'soak-router',
      z: TAB,
      type: 'function',
      name: 'router',
      func: router,
      outputs: UPLOADS.length + 1,
      wires: [...UPLOADS.map((u) => [u]), ['soak-http-out']],
    },
    { id: 'soak-http-out', z: TAB, type: 'http response', statusCode: '', headers: {}, wires: [] },
    ...UPLOADS.map((id) => ({
      id,
      z: TAB,
      type: 'ble-ota-upload',
      name: id.slice(5),
      device: id === 'soak-up-x' ? 'soak-dev-a' : `soak-dev-${id.slice(-1)}`,
      // Who confirms the new image: the client (the default), or SOAK_CONFIRM=device.
      confirm: process.env.SOAK_CONFIRM === 'device' ? 'device' : 'client',
      wires: [['soak-result-log'], ['soak-progress-sink']],
    })),
    {
      id: 'soak-result-log',
      z: TAB,
      type: 'function',
      name: 'result-log',
      func: `node.log('SOAKFLOW|' + JSON.stringify({ k: 'result', id: msg._soakId, version: msg.payload && msg.payload.image && msg.payload.image.version })); return null;`,
      outputs: 1,
      wires: [[]],
    },
    { id: 'soak-progress-sink', z: TAB, type: 'function', name: 'progress-sink', func: 'return null;', outputs: 1, wires: [[]] },
    { id: 'soak-catch', z: TAB, type: 'catch', name: 'soak-catch', scope: UPLOADS, uncaught: false, wires: [['soak-catch-log']] },
    {
      id: 'soak-catch-log',
      z: TAB,
      type: 'function',
      name: 'catch-log',
      func: `node.log('SOAKFLOW|' + JSON.stringify({ k: 'catch', id: msg._soakId, code: msg.error && msg.error.code })); return null;`,
      outputs: 1,
      wires: [[]],
    },
  ];
  // Flow nodes have a position: Node-RED takes a node without one for a config node.
  return [...devices, ...nodes.map((n, i) => ({ ...n, x: 200, y: 40 + 40 * i }))];
}

/**
 * settings.js entries: the image builder for the router, and the ledger:
 * runtime hooks on the @node-red/util instance Node-RED itself uses.
 */
function soakSettings(): string {
  const runtimeDir = dirname(require.resolve('@node-red/runtime/package.json', { paths: [dirname(require.resolve('node-red/package.json', { paths: [ROOT] }))] }));
  const util = require.resolve('@node-red/util', { paths: [runtimeDir] });
  const builder = require.resolve('../lib/image/app-image-builder');
  return `
  functionGlobalContext: { soakBuild: require(${JSON.stringify(builder)}).buildAppImage },
  soakLedger: (function () {
    const hooks = require(${JSON.stringify(util)}).hooks;
    const log = (o) => console.log('SOAK|' + JSON.stringify(o));
    const live = (n) => !!(n && n._flow && n._flow.activeNodes && n._flow.activeNodes[n.id] === n);
    const listening = (n) => !!(n._inputCallback || n._inputCallbacks);
    hooks.add('postReceive.soak', (ev) => {
      const m = ev.msg, n = ev.destination.node;
      if (!m || m._soakId === undefined || !n) return;
      if (n.type === 'ble-ota-upload') log({ h: 'recv', id: m._soakId, node: n.id, live: live(n) });
      else if (n.type === 'catch' && listening(n)) log({ h: 'catch', id: m._soakId, node: m.error && m.error.source && m.error.source.id, code: m.error && m.error.code, live: live(n) });
    });
    hooks.add('onSend.soak', (events) => {
      for (const e of events) {
        const n = e.source && e.source.node, m = e.msg;
        if (!n || n.type !== 'ble-ota-upload' || !m) continue;
        if (e.source.port === 0) {
          const p = m.payload || {};
          log({ h: 'result', id: m._soakId, node: n.id, version: p.image && p.image.version, running: p.runningVersion, confirmed: p.confirmed, skipped: p.skipped, device: p.device && p.device.name, live: live(n) });
        } else if (e.source.port === 1 && typeof m.topic === 'string' && m.topic.startsWith('soak-')) {
          log({ h: 'progress', id: Number(m.topic.slice(5)), node: n.id, phase: m.payload && m.payload.phase, percent: m.payload && m.payload.percent });
        }
      }
    });
    hooks.add('onComplete.soak', (ev) => {
      const m = ev.msg, n = ev.node && ev.node.node;
      if (!m || m._soakId === undefined || !n || n.type !== 'ble-ota-upload') return;
      const e = ev.error;
      log({ h: 'done', id: m._soakId, node: n.id, err: e ? (e.code || 'NO_CODE') : null, message: e ? String(e.message).slice(0, 160) : undefined, live: live(n), deviceState: m.deviceState });
    });
    return true;
  })(),`;
}

interface LedgerLine {
  h: 'recv' | 'catch' | 'result' | 'progress' | 'done' | 'stopping' | 'started';
  id: number;
  node?: string;
  code?: string;
  err?: string | null;
  message?: string;
  live?: boolean;
  phase?: string;
  version?: string;
  running?: string;
  confirmed?: boolean;
  skipped?: boolean;
  device?: string;
  deviceState?: unknown;
  /** Position in the ledger. */
  at: number;
}

interface FlowLine {
  k: 'result' | 'catch';
  id: number;
  code?: string;
}

/** Parses the ledger and the flow's log lines out of Node-RED's output, as it grows. */
class Ledger {
  lines: LedgerLine[] = [];
  flow: FlowLine[] = [];
  private parsed = 0;
  constructor(private readonly nr: NodeRedProcess) {}

  update(): this {
    const text = this.nr.output;
    const end = text.lastIndexOf('\n') + 1;
    if (end <= this.parsed) return this;
    for (const line of text.slice(this.parsed, end).split('\n')) {
      const ledger = /SOAK\|(\{.*\})\s*$/.exec(line);
      const flow = /SOAKFLOW\|(\{.*\})\s*$/.exec(line);
      if (flow) this.flow.push(JSON.parse(flow[1]) as FlowLine);
      else if (ledger) this.lines.push({ ...(JSON.parse(ledger[1]) as LedgerLine), at: this.lines.length });
      else if (/\] Stopping flows/.test(line)) this.lines.push({ h: 'stopping', id: -1, at: this.lines.length });
      else if (/\] Started flows/.test(line)) this.lines.push({ h: 'started', id: -1, at: this.lines.length });
    }
    this.parsed = end;
    return this;
  }

  of(id: number, h: LedgerLine['h']): LedgerLine[] {
    return this.lines.filter((l) => l.id === id && l.h === h);
  }

  /** Received by an upload node, not yet done. */
  pending(node?: string): number[] {
    const done = new Set(this.lines.filter((l) => l.h === 'done').map((l) => l.id));
    return this.lines.filter((l) => l.h === 'recv' && !done.has(l.id) && (node === undefined || l.node === node)).map((l) => l.id);
  }
}

interface Sent {
  id: number;
  node: string;
  kind: 'update' | 'bad' | 'cancel' | 'final';
  version?: string;
  device?: string;
  step: number;
}

describe('Node-RED soak: bursts, redeploys and msg.cancel against four virtual ESP32s', function () {
  this.timeout(300_000);
  let nr: NodeRedProcess | undefined;
  after(async () => {
    // SOAK_LOG=file keeps Node-RED's whole output (the ledger included).
    if (nr && process.env.SOAK_LOG) writeFileSync(process.env.SOAK_LOG, nr.output);
    await nr?.stop();
  });

  it('every message gets exactly one outcome, none is lost, and every device updates afterwards', async () => {
    const seed = process.env.SOAK_SEED ? Number(process.env.SOAK_SEED) >>> 0 : (Math.random() * 2 ** 32) >>> 0;
    const target = Number(process.env.SOAK_MESSAGES ?? 48);
    console.log(`      soak seed ${seed} (SOAK_SEED=${seed} replays its choices), ${target} update messages`);
    const rand = mulberry32(seed);
    const int = (lo: number, hi: number) => lo + Math.floor(rand() * (hi - lo + 1));
    const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)];

    const flow = soakFlow();
    nr = await NodeRedProcess.start(flow, soakSettings(), { BLE_OTA_VIRTUAL_DEVICES: DEVICES.join(',') });
    const red = nr;
    const ledger = new Ledger(red);
    const sent: Sent[] = [];
    const trace: string[] = [];
    let nextId = 1;
    let step = 0;

    /** Polls the ledger until `ok`; fails with what it saw after timeoutMs. */
    async function until(what: string, ok: () => boolean, timeoutMs = 60_000): Promise<void> {
      const deadline = Date.now() + timeoutMs;
      while (!ok()) {
        if (red.child.exitCode !== null || red.child.signalCode !== null) throw new Error(`Node-RED exited while waiting for ${what}:\n${red.output.slice(-3000)}`);
        if (Date.now() > deadline)
          throw new Error(
            `${what}: not within ${timeoutMs} ms (seed ${seed}, step ${step}); pending ${JSON.stringify(ledger.pending())}\n${trace.join('\n')}\n${red.output.slice(-3000)}`,
          );
        await new Promise((r) => setTimeout(r, 25));
        ledger.update();
      }
    }

    async function post(jobs: Array<Record<string, unknown>>): Promise<void> {
      const res = await fetch(`${red.url}/soak`, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ jobs }) });
      const body = await res.text();
      assert.equal(res.status, 200, `POST /soak: HTTP ${res.status} ${body}`);
    }

    function updateJob(node: string, kind: 'update' | 'bad' | 'final' = 'update', version?: string): Record<string, unknown> {
      const id = nextId++;
      const device = node === 'soak-up-x' ? pick(DEVICES) : undefined;
      const v = version ?? `2.0.${id}`;
      sent.push({ id, node, kind, version: kind === 'bad' ? undefined : v, device, step });
      return { id, node, device, bad: kind === 'bad', version: v, size: int(16, 32) * 1024, seed: id };
    }

    async function burst(n: number, only?: string): Promise<void> {
      const jobs = Array.from({ length: n }, () => updateJob(only ?? pick(UPLOADS), rand() < 0.08 ? 'bad' : 'update'));
      trace.push(`${step}: burst ${jobs.map((j) => `#${j.id}${j.bad ? '(bad)' : ''}->${String(j.node).slice(8)}${j.device ? `@${String(j.device).slice(5)}` : ''}`).join(' ')}`);
      await post(jobs);
    }

    /** Waits until a message of `node` (any node if undefined) reports `phase`, or none of them is pending. */
    async function reach(phase: string, node?: string): Promise<void> {
      const from = ledger.update().lines.length;
      await until(`phase ${phase} on ${node ?? 'any node'}`, () => {
        const pending = new Set(ledger.pending(node));
        return pending.size === 0 || ledger.lines.slice(from).some((l) => l.h === 'progress' && l.phase === phase && pending.has(l.id));
      });
    }

    const PHASES = ['connecting', 'uploading', 'uploading', 'verifying', 'restarting', 'confirming'];
    let redeploys = 0;
    let cancels = 0;

    async function cancel(): Promise<void> {
      const node = pick(UPLOADS);
      const phase = rand() < 0.6 ? pick(PHASES) : undefined;
      if (phase) await reach(phase, node);
      const id = nextId++;
      sent.push({ id, node, kind: 'cancel', step });
      ledger.update();
      trace.push(`${step}: cancel #${id}->${node.slice(8)}${phase ? ` after ${phase}` : ''} (pending there: ${ledger.pending(node).join(',') || 'none'})`);
      await post([{ id, node, cancel: true }]);
      cancels++;
    }

    async function redeploy(): Promise<void> {
      const phase = rand() < 0.7 ? pick(PHASES) : undefined;
      if (phase) await reach(phase);
      ledger.update();
      trace.push(`${step}: redeploy${phase ? ` after ${phase}` : ''} (pending: ${ledger.pending().join(',') || 'none'})`);
      const from = red.output.length;
      const res = await fetch(`${red.url}/flows`, {
        method: 'POST',
        headers: { 'Content-Type': 'application/json', 'Node-RED-Deployment-Type': 'full' },
        body: JSON.stringify([{ id: TAB, type: 'tab', label: 'test' }, ...flow]),
      });
      assert.ok(res.status === 200 || res.status === 204, `deploy: HTTP ${res.status}`);
      await red.waitForOutput(/Started flows/, 60_000, from);
      redeploys++;
    }

    async function settle(): Promise<void> {
      const k = int(1, 4);
      const from = ledger.update().lines.length;
      trace.push(`${step}: settle ${k}`);
      await until(`${k} more completions`, () => ledger.pending().length === 0 || ledger.lines.slice(from).filter((l) => l.h === 'done').length >= k);
    }

    // The chaos: bursts, floods past a node's queue, msg.cancel, redeploys, pauses.
    const updates = () => sent.filter((s) => s.kind === 'update' || s.kind === 'bad').length;
    while (updates() < target) {
      step++;
      const r = rand();
      if (r < 0.42) await burst(int(2, 6));
      else if (r < 0.46)
        await burst(12, pick(UPLOADS)); // more than one node's queue holds
      else if (r < 0.58) await cancel();
      else if (r < 0.68) await redeploy();
      else await settle();
    }
    // At least two of each interference, whatever the seed drew.
    while (cancels < 2 || redeploys < 2) {
      step++;
      await burst(int(3, 6));
      if (cancels < 2) await cancel();
      else await redeploy();
    }

    // Every message reached an upload node and was completed.
    step++;
    trace.push(`${step}: wait for every message to complete`);
    await until('every message received and completed', () => sent.every((s) => ledger.of(s.id, 'recv').length > 0 && ledger.of(s.id, 'done').length > 0), 120_000);

    // The final round, nothing interfering: each device's own node, a newer image.
    step++;
    const finals = UPLOADS.slice(0, DEVICES.length).map((node, i) => updateJob(node, 'final', `9.${i}.0`));
    trace.push(`${step}: final round ${finals.map((j) => `#${j.id}->${String(j.node).slice(8)} ${j.version}`).join(' ')}`);
    await post(finals);
    await until('the final round completes', () => finals.every((j) => ledger.of(j.id as number, 'done').length > 0), 120_000);
    // A moment for any late second outcome to show: one more message through the whole path.
    const probe = updateJob('soak-up-a', 'bad');
    await post([probe]);
    await until('the probe completes', () => ledger.of(probe.id as number, 'done').length > 0 && ledger.flow.some((f) => f.id === probe.id));
    ledger.update();

    const deviceOf = (s: Sent) => s.device ?? DEVICES[UPLOADS.indexOf(s.node)] ?? DEVICES[0];
    /** The updates of a device before message `before` that got as far as its restart, and how they ended. */
    const history = (device: string, before: number) =>
      sent
        .filter((s) => s.id < before && s.kind !== 'cancel' && deviceOf(s) === device)
        .map((s) => ({ s, phases: ledger.of(s.id, 'progress').map((l) => l.phase), d: ledger.of(s.id, 'done')[0] }))
        .filter(({ phases }) => phases.includes('restarting'))
        .map(
          ({ s, phases, d }) =>
            `#${s.id} (${s.version}, step ${s.step}) reached ${phases[phases.length - 1]}, ended ${d ? `${d.err ?? 'ok'}${d.live ? '' : ' (node closed)'}${d.message ? `: ${d.message}` : ''}` : '?'}`,
        )
        .slice(-3)
        .join(' | ');

    // The verdict, message by message.
    const problems: string[] = [];
    const tally: Record<string, number> = {};
    const count = (key: string) => (tally[key] = (tally[key] ?? 0) + 1);
    let lostInHop = 0;
    for (const s of sent) {
      const recv = ledger.of(s.id, 'recv');
      const done = ledger.of(s.id, 'done');
      const results = ledger.of(s.id, 'result');
      const catches = ledger.of(s.id, 'catch');
      const flowLines = ledger.flow.filter((f) => f.id === s.id);
      const say = (what: string) =>
        problems.push(
          `#${s.id} (${s.kind} -> ${s.node}${s.device ? ` @${s.device}` : ''}, step ${s.step}): ${what}; ledger ${JSON.stringify([...recv, ...results, ...catches, ...done].map(({ at: _at, deviceState: _d, ...l }) => l))}`,
        );
      if (recv.length !== 1) say(`received ${recv.length} times`);
      if (done.length !== 1) {
        say(`done() called ${done.length} times`);
        continue;
      }
      if (results.length + catches.length > 1) say(`${results.length} results and ${catches.length} Catch messages`);
      if (flowLines.filter((f) => f.k === 'result').length > results.length || flowLines.filter((f) => f.k === 'catch').length > catches.length) {
        say(`the flow saw more outcomes than the runtime sent: ${JSON.stringify(flowLines)}`);
      }
      const d = done[0];
      count(`${s.kind}: ${d.err ?? 'ok'}${d.live ? '' : ' (node closed)'}`);
      if (s.kind === 'cancel') {
        if (d.err !== null) say(`msg.cancel ended with ${d.err}`);
        if (results.length + catches.length) say('msg.cancel got an outcome');
        continue;
      }
      if (d.live) {
        if (d.err === null) {
          if (results.length !== 1 || catches.length) say('done() without error, but no result on output 1');
        } else if (catches.length !== 1 || results.length) {
          say(`done(${d.err}), but ${catches.length} Catch messages`);
        } else if (catches[0].code !== d.err) {
          say(`the Catch message has msg.error.code ${catches[0].code}, done() gave ${d.err}`);
        }
        if (flowLines.length === 0) lostInHop++; // a redeploy stopped the logger before the message reached it
      } else {
        // Its node was closing (a redeploy): the Catch node may still take it, or may be stopped already.
        if (d.err !== null && d.err !== 'CANCELLED') say(`closed by a redeploy, but ended with ${d.err}: ${d.message}`);
        if (catches.length === 1 && catches[0].code !== d.err) say(`the Catch message has msg.error.code ${catches[0].code}, done() gave ${d.err}`);
        if (d.err !== null && catches.length === 0) count('closed: done(CANCELLED) after the Catch node stopped');
        if (catches.length === 1 && !flowLines.some((f) => f.k === 'catch')) count('closed: Catch message, flow behind it already stopped');
      }
      if (s.kind === 'final') {
        const r = results[0];
        if (d.err !== null || !r)
          say(
            `the final update failed: ${d.err} ${d.message} ${JSON.stringify(d.deviceState)}; the updates of ${deviceOf(s)} that reached their restart: ${history(deviceOf(s), s.id)}`,
          );
        else if (!r.confirmed || r.running !== s.version || r.version !== s.version)
          say(`the final update: confirmed ${r.confirmed}, runs ${r.running}, image ${r.version}; expected ${s.version}`);
      }
    }
    // Nothing the test did not send, and no stray outcome for an unknown id.
    const known = new Set(sent.map((s) => s.id));
    for (const l of ledger.lines) if (l.id >= 0 && !known.has(l.id)) problems.push(`a ledger line for an unknown message: ${JSON.stringify(l)}`);
    const crash = /Uncaught Exception|Unhandled promise rejection|UnhandledPromiseRejection|Close timed out|\[error\] \[(?!function|catch|ble-ota-upload)/i.exec(red.output);
    if (crash) problems.push(`Node-RED logged: ${red.output.slice(Math.max(0, crash.index - 200), crash.index + 800)}`);
    if (red.child.exitCode !== null || red.child.signalCode !== null) problems.push('Node-RED exited');

    console.log(
      `      ${sent.length} messages, ${redeploys} redeploys, ${cancels} cancels; outcomes ${JSON.stringify(tally)}; ${lostInHop} outcome(s) stopped by a redeploy between the Catch/output and the logging function`,
    );
    if (problems.length) {
      console.log(`      seed ${seed}, sequence:\n${trace.map((t) => `        ${t}`).join('\n')}`);
    }
    assert.deepEqual(problems, [], `seed ${seed}`);
  });
});
