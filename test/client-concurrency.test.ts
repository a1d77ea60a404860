/**
 * Updates asked for at the same time on one noble instance (one radio):
 * the client runs them one after the other, in the order they were asked
 * for, so each succeeds, whether they go to two devices or to the same one,
 * through one client or two; a call cancelled while it waits ends with
 * CANCELLED and holds up nothing after it.
 */
import { strict as assert } from 'node:assert';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BleOtaClient, Progress, UpdateResult } from '../lib/client/ota-client';
import { BleOtaError } from '../lib/errors';
import { buildAppImage } from '../lib/image/app-image-builder';
import { VirtualEsp32 } from '../lib/virtual/virtual-device';
import { VirtualRadio } from '../lib/virtual/virtual-radio';

const KB = 1024;

describe('updates at the same time on one radio', function () {
  this.timeout(120_000);
  let radio: VirtualRadio;
  let dir: string;
  let seq = 0;
  const old = buildAppImage({ projectName: 'lamp', version: '3.0.0', size: 128 * KB, seed: 51 });
  const next = buildAppImage({ projectName: 'lamp', version: '3.1.0', size: 128 * KB, seed: 51 });

  before(() => {
    radio = new VirtualRadio();
    dir = mkdtempSync(join(tmpdir(), 'ble-ota-concurrency-'));
  });
  after(async () => {
    await radio.stopAll();
    rmSync(dir, { recursive: true, force: true });
  });

  const newClient = () => new BleOtaClient({ noble: radio.noble, timeouts: { scanMs: 3000, gattMs: 2000, restartMs: 3000 } });

  async function deviceRunning(image: Buffer): Promise<VirtualEsp32> {
    const name = `conc-${++seq}`;
    const file = join(dir, `${name}.bin`);
    writeFileSync(file, image);
    return radio.addDevice({ name, image: file, restartDelayMs: 20 });
  }

  /** What happened, in order: each call's progress phases as they change, and its end. */
  function journal() {
    const events: string[] = [];
    const hooks = new Map<string, () => void>();
    const push = (event: string) => {
      events.push(event);
      hooks.get(event)?.();
    };
    /** Runs fn as the event happens. */
    const when = (event: string, fn: () => void) => hooks.set(event, fn);
    const update = (client: BleOtaClient, label: string, options: { name: string; baseImage?: Buffer; signal?: AbortSignal }): Promise<UpdateResult> => {
      let phase = '';
      const onProgress = (p: Progress) => {
        if (p.phase !== phase) push(`${label} ${(phase = p.phase)}`);
      };
      return client.update({ target: { name: options.name }, image: next, baseImage: options.baseImage, signal: options.signal, onProgress }).then(
        (r) => {
          push(`${label} done`);
          return r;
        },
        (err: unknown) => {
          push(`${label} failed ${(err as BleOtaError).code}`);
          throw err;
        },
      );
    };
    return { events, update, when };
  }

  /** The second call starts (scans) only once the first has ended. */
  function assertOneAfterTheOther(events: string[]): void {
    assert.deepEqual(
      events.map((e) => e.split(' ')[0]),
      [...events.filter((e) => e.startsWith('A ')), ...events.filter((e) => e.startsWith('B '))].map((e) => e.split(' ')[0]),
      events.join(', '),
    );
    assert.equal(events[0], 'A scanning');
  }

  it('two devices at once through one client: both are updated, one after the other', async () => {
    const p = await deviceRunning(old);
    const q = await deviceRunning(old);
    const client = newClient();
    const { events, update } = journal();
    const [a, b] = await Promise.all([update(client, 'A', { name: p.name, baseImage: old }), update(client, 'B', { name: q.name, baseImage: old })]);
    assert.deepEqual([a.confirmed, a.runningVersion, b.confirmed, b.runningVersion], [true, '3.1.0', true, '3.1.0']);
    assertOneAfterTheOther(events);
  });

  it('the same device twice at once: both succeed, and the device is found by a scan afterwards', async () => {
    const d = await deviceRunning(old);
    const client = newClient();
    const { events, update } = journal();
    const [a, b] = await Promise.all([update(client, 'A', { name: d.name, baseImage: old }), update(client, 'B', { name: d.name, baseImage: old })]);
    assert.deepEqual([a.confirmed, a.previousVersion, b.confirmed, b.previousVersion], [true, '3.0.0', true, '3.1.0']);
    assertOneAfterTheOther(events);
    // No connection left behind: the device advertises again.
    const seen = await client.scan(1000);
    assert.ok(
      seen.some((s) => s.name === d.name),
      JSON.stringify(seen),
    );
  });

  it('two clients of one noble instance wait for each other too', async () => {
    const p = await deviceRunning(old);
    const q = await deviceRunning(old);
    const { events, update } = journal();
    const [a, b] = await Promise.all([update(newClient(), 'A', { name: p.name }), update(newClient(), 'B', { name: q.name })]);
    assert.deepEqual([a.confirmed, b.confirmed], [true, true]);
    assertOneAfterTheOther(events);
  });

  it('a call cancelled while it waits ends with CANCELLED at once, having used no radio, and the calls after it go on', async () => {
    const p = await deviceRunning(old);
    const q = await deviceRunning(old);
    const client = newClient();
    const { events, update, when } = journal();
    const controller = new AbortController();
    // Cancelled as the first call starts uploading: the second is still waiting for the radio.
    when('A uploading', () => controller.abort());
    const a = update(client, 'A', { name: p.name });
    const b = update(client, 'B', { name: q.name, signal: controller.signal });
    const c = update(client, 'C', { name: q.name });
    await assert.rejects(b, (err: BleOtaError) => err.code === 'CANCELLED' && /cancelled/.test(err.message));
    assert.ok(!events.includes('A done'), 'B ended while A still ran');
    const [ra, rc] = await Promise.all([a, c]);
    assert.deepEqual([ra.confirmed, rc.confirmed], [true, true]);
    assert.deepEqual(
      events.filter((e) => e.startsWith('B ')),
      ['B failed CANCELLED'],
      'B reported no progress: it never scanned',
    );
    assert.ok(events.indexOf('C scanning') > events.indexOf('A done'), events.join(', '));
  });
});
