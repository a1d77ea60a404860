/**
 * The plumbing the nodes share, without Node-RED or a radio: which device
 * a device field names, the upload node's queue, the status an error
 * shows, close's one timeout, and what a node says at deploy.
 */
import { strict as assert } from 'node:assert';
import { randomBytes } from 'node:crypto';
import { mock } from 'node:test';
import type { NobleLike, NoblePeripheral } from '../lib/client/noble-types';
import { BleOtaClient } from '../lib/client/ota-client';
import { matchesTarget } from '../lib/client/scanner';
import { checkTarget, hasSecretForm, hideSecretForms, isAddress, isPeripheralId, sameTarget, targetOf } from '../lib/client/target';
import { BleOtaError, BluetoothUnavailableError, ImageError } from '../lib/errors';
import { generateSigningKey } from '../lib/image/signature';
import { parseVirtualDevices } from '../lib/virtual/virtual-radio';
import type { DeviceNode } from '../nodes/ble-ota-device/device-node';
import { UploadQueue } from '../nodes/ble-ota-upload/upload-queue';
import { CLOSE_TIMEOUT_MS, closeWhenSettled } from '../nodes/shared/close';
import { checkConfigAtDeploy } from '../nodes/shared/deploy';
import { describeValue } from '../nodes/shared/message';
import type { Node, NodeStatus } from '../nodes/shared/red';
import { statusForError } from '../nodes/shared/status';

describe('targetOf: a device field, --device or msg.device', () => {
  it('an address, written with colons or dashes in either case, is one address in noble’s form', () => {
    for (const text of ['AA:BB:CC:DD:EE:0F', 'aa-bb-cc-dd-ee-0f', '  Aa:bB-cC:Dd-eE:0f ']) {
      assert.deepEqual(targetOf(text), { address: 'aa:bb:cc:dd:ee:0f' }, text);
      assert.ok(isAddress(text), text);
    }
  });

  it('anything else is an advertised name, trimmed, its case kept; nothing is the first OTA device', () => {
    assert.deepEqual(targetOf(' My-ESP32 '), { name: 'My-ESP32' });
    // Near misses are names: five pairs, seven pairs, a non-hex digit, dots.
    for (const text of ['aa:bb:cc:dd:ee', 'aa:bb:cc:dd:ee:ff:00', 'aa:bb:cc:dd:ee:fg', 'aa.bb.cc.dd.ee.ff']) {
      assert.deepEqual(targetOf(text), { name: text }, text);
      assert.equal(isAddress(text), false, text);
    }
    assert.deepEqual(targetOf(''), {});
    assert.deepEqual(targetOf('   '), {});
  });

  it("noble's id: 12 or 32 hex digits (32 also as a UUID), in noble's form, that also finds a device of that name", () => {
    assert.deepEqual(targetOf(' 240AC412345F '), { id: '240ac412345f', name: '240AC412345F', alsoByName: true });
    const mac = '5D2C0F6E8A314B7C9E01F2A3B4C5D6E7';
    assert.deepEqual(targetOf(mac), { id: mac.toLowerCase(), name: mac, alsoByName: true });
    assert.deepEqual(targetOf('5D2C0F6E-8A31-4B7C-9E01-F2A3B4C5D6E7'), { id: mac.toLowerCase(), name: '5D2C0F6E-8A31-4B7C-9E01-F2A3B4C5D6E7', alsoByName: true });
    for (const text of ['240ac412345f', mac, '5d2c0f6e-8a31-4b7c-9e01-f2a3b4c5d6e7']) assert.ok(isPeripheralId(text), text);
    // Near misses are names: 11, 13, 31 and 33 digits, a non-hex digit, a UUID grouped otherwise.
    for (const text of ['240ac412345', '240ac412345f0', mac.slice(1), `${mac}0`, '240ac412345g', '5d2c0f6e8-a31-4b7c-9e01-f2a3b4c5d6e7']) {
      assert.deepEqual(targetOf(text), { name: text }, text);
      assert.equal(isPeripheralId(text), false, text);
    }
  });

  it('a target of id form matches the device of that id, or one advertising it as its name; an address matches its id too', () => {
    const peripheral = (id: string, address: string, localName?: string) => ({ id, address, advertisement: { localName } }) as unknown as NoblePeripheral;
    const target = targetOf('240AC412345F');
    assert.ok(matchesTarget(peripheral('240ac412345f', '', 'lamp'), target), 'by id, the address hidden');
    assert.ok(matchesTarget(peripheral('9f9f9f9f9f9f', '', '240AC412345F'), target), 'by name, as before ids');
    assert.ok(!matchesTarget(peripheral('9f9f9f9f9f9f', '', '240ac412345f'), target), 'a name matches exactly');
    assert.ok(!matchesTarget(peripheral('9f9f9f9f9f9f', '24:0a:c4:12:34:5f', 'lamp'), target), 'an id is not an address');
    assert.ok(matchesTarget(peripheral('240ac412345f', '', 'lamp'), targetOf('24:0A:C4:12:34:5F')), "an address, on a Linux noble's id");
    // The client's own reconnection target (noble's id and the name seen) is the id alone.
    assert.ok(!matchesTarget(peripheral('9f9f9f9f9f9f', '', 'lamp'), { id: '240ac412345f', name: 'lamp' }));
  });

  it("a fleet secret's form (64 hex digits, after 0x too, spaces around) names no device: refused without repeating it", async () => {
    const secret = randomBytes(32).toString('hex');
    const refusal = (err: unknown) => {
      assert.ok(err instanceof BleOtaError, String(err));
      assert.equal(err.code, 'INVALID_ARGUMENT');
      assert.match(
        err.message,
        /^The device named looks like a key or a secret, not a device name \(64 hex digits, a fleet secret's form, or a key's PEM text\), so it is not repeated here: a device is named by its advertised name/,
      );
      assert.ok(!err.message.toLowerCase().includes(secret.slice(0, 16)), 'the secret is not in the message');
      return true;
    };
    for (const text of [secret, secret.toUpperCase(), `0x${secret}`, ` ${secret}\n`, `\t0X${secret.toUpperCase()} `]) {
      assert.ok(hasSecretForm(text), text);
      assert.throws(() => targetOf(text), refusal);
      assert.throws(() => sameTarget(text, 'esp32'), refusal);
    }
    // Near misses are names (no device has one this long, and none is a secret the secret file would take).
    for (const text of [secret.slice(1), `${secret}0`, `${secret.slice(1)}g`, `0x ${secret}`, `${secret.slice(0, 32)} ${secret.slice(32)}`]) {
      assert.equal(hasSecretForm(text), false, text);
      assert.deepEqual(targetOf(text), { name: text.trim() }, text);
    }
    // The client refuses such a target of a program's before it uses the radio; a name that only describes a device found by id is the device's own.
    const untouchable = new Proxy({} as NobleLike, {
      get(_target, key) {
        throw new Error(`the client used noble (${String(key)}) before refusing the target`);
      },
    });
    const client = new BleOtaClient({ noble: untouchable });
    // A name is refused even where only the id is matched: errors show it either way.
    const described = { id: '240ac412345f', name: secret };
    for (const target of [{ name: secret }, { address: secret }, { id: secret }, { id: '240ac412345f', name: ` ${secret}`, alsoByName: true }, described]) {
      assert.throws(() => checkTarget(target), refusal, JSON.stringify(target));
      await assert.rejects(client.connect(target), refusal);
      await assert.rejects(client.update({ target, image: Buffer.alloc(0) }), refusal);
    }
  });

  it("a key's PEM text names no device either (whole, cut short, or with its line breaks dropped): refused without repeating it", async () => {
    const pem = generateSigningKey('ecdsa256');
    const body = pem.split('\n')[1];
    for (const text of [pem, pem.slice(0, 60), pem.replace(/\n/g, ''), `lamp ${pem.trim()}`]) {
      assert.ok(hasSecretForm(text), text);
      for (const refuse of [() => targetOf(text), () => checkTarget({ name: text }), () => sameTarget('esp32', text)]) {
        assert.throws(refuse, (err: unknown) => {
          assert.ok(err instanceof BleOtaError && err.code === 'INVALID_ARGUMENT', String(err));
          assert.match(err.message, /^The device named looks like a key or a secret, not a device name/);
          assert.ok(!err.message.includes('-----BEGIN') && !err.message.includes(body.slice(0, 20)), err.message);
          return true;
        });
      }
    }
    // The words of an error's advice are no key: a label in capitals follows BEGIN in a key's PEM text.
    for (const name of ['-----BEGIN ... KEY-----', '-----begin lamp', 'BEGIN PRIVATE KEY']) assert.deepEqual(targetOf(name), { name }, name);
  });

  it('a fleet secret in a value an error shows is not repeated (messages cut such values short, which would show most of it)', async () => {
    const secret = randomBytes(32).toString('hex');
    assert.equal(hideSecretForms(`got ${secret}, and 0x${secret.toUpperCase()}.`), 'got [64 hex digits, not repeated], and [64 hex digits, not repeated].');
    for (const near of [secret.slice(1), `${secret}0`]) assert.equal(hideSecretForms(near), near);
    assert.equal(hideSecretForms(`key=${secret}`), 'key=[64 hex digits, not repeated]');
    assert.equal(hideSecretForms(`/tmp/x${secret}.txt`), '/tmp/x[64 hex digits, not repeated].txt');
    // A key's PEM text (given where a path or a value goes): none of it, whole, cut short or in other words.
    const pem = generateSigningKey('ecdsa256');
    const body = pem.split('\n')[1];
    for (const text of [pem, pem.slice(0, 60), `cannot read ${pem.trim()}: no such file`]) {
      const hidden = hideSecretForms(text);
      assert.ok(hidden.includes('[PEM text, not repeated]') && !hidden.includes('-----BEGIN') && !hidden.includes(body.slice(0, 20)), hidden);
    }
    assert.equal(hideSecretForms(`cannot read ${pem.trim()}: no such file`), 'cannot read [PEM text, not repeated]: no such file');
    const advice = 'This is not a PEM key: it has no "-----BEGIN ... KEY-----" line. Give a key\'s .pem file.';
    assert.equal(hideSecretForms(advice), advice);
    assert.ok(!describeValue(pem).includes(body.slice(0, 20)));
    // The device node's In range list: no option takes a secret, and one typed there is not repeated.
    for (const list of [`lamp secret=${secret}`, `lamp ${secret}`]) {
      assert.throws(
        () => parseVirtualDevices(list),
        (err: Error) => /^Virtual device "lamp" has an unknown option ".*\[64 hex digits, not repeated\]"/.test(err.message) && !err.message.includes(secret.slice(0, 20)),
      );
    }
    assert.ok(!describeValue(secret).includes(secret.slice(0, 20)));
    const client = new BleOtaClient({ noble: {} as NobleLike });
    const refusals = [
      () => client.update({ target: { name: 'x' }, image: Buffer.alloc(0), timeouts: { gattMs: secret as unknown as number } }),
      () => client.update({ target: { name: 'x' }, image: Buffer.alloc(0), timeouts: { [secret]: 5 } as never }),
    ];
    for (const refusal of refusals) {
      await assert.rejects(refusal(), (err: Error) => {
        assert.ok(!err.message.includes(secret.slice(0, 20)), err.message);
        return true;
      });
    }
  });

  it('sameTarget: one address or id however written; names exactly', () => {
    assert.ok(sameTarget('AA-BB-CC-DD-EE-FF', 'aa:bb:cc:dd:ee:ff '));
    assert.ok(sameTarget('esp32', ' esp32'));
    assert.ok(!sameTarget('ESP32', 'esp32'));
    assert.ok(!sameTarget('aa:bb:cc:dd:ee:ff', 'aa:bb:cc:dd:ee:fe'));
    assert.ok(sameTarget('5D2C0F6E-8A31-4B7C-9E01-F2A3B4C5D6E7', '5d2c0f6e8a314b7c9e01f2a3b4c5d6e7'));
    assert.ok(!sameTarget('240ac412345f', '240ac412345e'));
    // noble's id on Linux is the address's digits: the device field's address and msg.device's id are one device.
    assert.ok(sameTarget('24:0a:c4:12:34:5f', '240AC412345F'));
    assert.ok(!sameTarget('24:0a:c4:12:34:5f', '240ac412345e'));
    assert.ok(!sameTarget('240ac412345f', 'esp32'));
  });
});

/** A fake job: it ends when the test says, or when aborted. */
class FakeJob {
  readonly abort = new AbortController();
  private end!: () => void;
  readonly ended = new Promise<void>((resolve) => (this.end = resolve));
  constructor(readonly id: number) {
    this.abort.signal.addEventListener('abort', () => this.end());
  }
  finish(): void {
    this.end();
  }
}

/** Lets every promise reaction that is due run (no timers, no I/O are involved). */
const settle = () => new Promise((resolve) => setImmediate(resolve));

describe('UploadQueue', () => {
  function queue(limit: number, log: string[]) {
    return new UploadQueue<FakeJob>(async (job) => {
      log.push(`start ${job.id}`);
      await job.ended;
      log.push(`${job.abort.signal.aborted ? 'aborted' : 'end'} ${job.id}`);
    }, limit);
  }

  it('runs one job at a time, in order, with at most `limit` waiting; a full queue takes nothing', async () => {
    const log: string[] = [];
    const q = queue(2, log);
    const jobs = [1, 2, 3, 4].map((id) => new FakeJob(id));
    assert.equal(q.add(jobs[0]), 'started');
    assert.equal(q.current, jobs[0]);
    assert.equal(q.add(jobs[1]), 'queued');
    assert.equal(q.add(jobs[2]), 'queued');
    assert.equal(q.length, 2);
    assert.ok(q.full);
    assert.equal(q.add(jobs[3]), 'full');
    assert.equal(q.length, 2, 'the refused job took no place');
    for (const job of jobs.slice(0, 3)) {
      assert.equal(q.current, job);
      job.finish();
      await settle();
    }
    assert.deepEqual(log, ['start 1', 'end 1', 'start 2', 'end 2', 'start 3', 'end 3']);
    assert.equal(q.current, undefined);
    assert.equal(q.full, false);
  });

  it('cancelAll drops the waiting jobs, oldest first, and aborts the running one; the queue goes on', async () => {
    const log: string[] = [];
    const q = queue(5, log);
    for (const id of [1, 2, 3]) q.add(new FakeJob(id));
    const dropped: number[] = [];
    q.cancelAll((job) => dropped.push(job.id));
    assert.deepEqual(dropped, [2, 3]);
    assert.equal(q.length, 0);
    await settle();
    assert.deepEqual(log, ['start 1', 'aborted 1']);
    const next = new FakeJob(4);
    assert.equal(q.add(next), 'started');
    next.finish();
    await settle();
    assert.deepEqual(log, ['start 1', 'aborted 1', 'start 4', 'end 4']);
  });

  it('close drops the waiting, aborts the running and resolves once it has ended; at once when none runs', async () => {
    const log: string[] = [];
    const q = queue(1, log);
    await q.close(() => assert.fail('nothing waits'));
    const job = new FakeJob(1);
    q.add(job);
    q.add(new FakeJob(2));
    const dropped: number[] = [];
    const closed = q.close((j) => dropped.push(j.id));
    assert.deepEqual(dropped, [2]);
    assert.equal(q.current, job, 'running until it lets go');
    await closed;
    assert.equal(q.current, undefined);
    assert.deepEqual(log, ['start 1', 'aborted 1']);
  });

  it('a job whose run throws is passed on, and the line goes on', async () => {
    const failures: number[] = [];
    const ran: number[] = [];
    const q = new UploadQueue<FakeJob>(
      async (job) => {
        ran.push(job.id);
        if (job.id === 1) throw new Error('a bug in run');
      },
      3,
      (_err, job) => failures.push(job.id),
    );
    q.add(new FakeJob(1));
    q.add(new FakeJob(2));
    await settle();
    assert.deepEqual(failures, [1]);
    assert.deepEqual(ran, [1, 2]);
    assert.equal(q.current, undefined);
  });
});

describe('shared status for an error', () => {
  // A catalogue as RED._ would serve it: the key itself where there is no text.
  const texts: Record<string, string> = {
    'n.status.failed': 'failed',
    'n.status.invalidImage': 'invalid image',
    'n.status.codes.DEVICE_NOT_FOUND': 'device not found',
  };
  const t = (key: string) => texts[key] ?? key;

  it("the node's text for the code, else 'invalid image' for an image error, else 'failed'; a red ring", () => {
    assert.deepEqual(statusForError(t, 'n.status.', new BleOtaError('DEVICE_NOT_FOUND', 'x')), { fill: 'red', shape: 'ring', text: 'device not found' });
    assert.equal(statusForError(t, 'n.status.', new ImageError('IMAGE_STREAMED', 'x')).text, 'invalid image');
    assert.equal(statusForError(t, 'n.status.', new BleOtaError('GATT_TIMEOUT', 'x')).text, 'failed');
    assert.equal(statusForError(t, 'n.status.', new Error('plain')).text, 'failed');
    assert.equal(statusForError(t, 'n.status.', 'not even an Error').text, 'failed');
  });

  it('a node without an image text says failed for an image error; a radio problem shows its reason', () => {
    const scanT = (key: string) => (key === 's.status.failed' ? 'scan failed' : key);
    assert.equal(statusForError(scanT, 's.status.', new ImageError('IMAGE_STREAMED', 'x')).text, 'scan failed');
    assert.equal(statusForError(scanT, 's.status.', new BluetoothUnavailableError('Bluetooth off', 'the adapter is off')).text, 'Bluetooth off');
  });
});

describe('closing a node', () => {
  afterEach(() => mock.timers.reset());

  it('finishes once the work has settled, cleanup first, exactly once', async () => {
    const calls: string[] = [];
    let release!: () => void;
    const work = new Promise<void>((resolve) => (release = resolve));
    closeWhenSettled(
      [work, Promise.reject(new Error('a failed one counts as settled'))],
      () => calls.push('done'),
      () => calls.push('cleanup'),
    );
    await Promise.resolve();
    assert.deepEqual(calls, []);
    release();
    await work;
    await new Promise((resolve) => setImmediate(resolve));
    assert.deepEqual(calls, ['cleanup', 'done']);
  });

  it(`finishes after ${CLOSE_TIMEOUT_MS} ms when the work never lets go`, async () => {
    mock.timers.enable({ apis: ['setTimeout'] });
    const calls: string[] = [];
    closeWhenSettled(
      [new Promise(() => undefined)],
      () => calls.push('done'),
      () => calls.push('cleanup'),
    );
    mock.timers.tick(CLOSE_TIMEOUT_MS - 1);
    assert.deepEqual(calls, []);
    mock.timers.tick(1);
    assert.deepEqual(calls, ['cleanup', 'done']);
  });
});

describe('the config problem at deploy', () => {
  function fakeNode() {
    const seen: { status: NodeStatus[]; warnings: string[] } = { status: [], warnings: [] };
    const node = { status: (s: NodeStatus) => seen.status.push(s), warn: (m: string) => seen.warnings.push(m) } as unknown as Node;
    return { node, seen };
  }
  const device = (problem?: BluetoothUnavailableError) => ({ problem: () => problem }) as unknown as DeviceNode;

  it('no device node: the red ring with the node’s text, unless the device node is optional', () => {
    const { node, seen } = fakeNode();
    assert.equal(checkConfigAtDeploy(node, null, 'no device configured'), false);
    assert.deepEqual(seen.status, [{ fill: 'red', shape: 'ring', text: 'no device configured' }]);
    const optional = fakeNode();
    assert.equal(checkConfigAtDeploy(optional.node, null, undefined), true);
    assert.deepEqual(optional.seen.status, []);
  });

  it('a radio that cannot be used: its reason in the status, its message as a warning; else nothing', () => {
    const { node, seen } = fakeNode();
    assert.equal(checkConfigAtDeploy(node, device(new BluetoothUnavailableError('no adapter', 'no Bluetooth adapter was found')), 'x'), false);
    assert.deepEqual(seen.status, [{ fill: 'red', shape: 'ring', text: 'no adapter' }]);
    assert.deepEqual(seen.warnings, [new BluetoothUnavailableError('no adapter', 'no Bluetooth adapter was found').message]);
    const fine = fakeNode();
    assert.equal(checkConfigAtDeploy(fine.node, device(), 'x'), true);
    assert.deepEqual(fine.seen, { status: [], warnings: [] });
  });
});
