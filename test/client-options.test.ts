/**
 * The library's options, as a program passes them: timeouts that no timer
 * can keep are refused with the option's name before any radio work,
 * instead of firing at once (setTimeout takes NaN, Infinity or more than
 * 2^31 - 1 ms as 1 ms); a timeout left undefined keeps its default. The
 * other options too: a plain JavaScript caller's mistake is named, never
 * taken for another meaning.
 */
import { strict as assert } from 'node:assert';
import { BleOtaClient, DEFAULT_TIMEOUTS, Timeouts, UpdateOptions } from '../lib/client/ota-client';
import type { Target } from '../lib/client/scanner';
import type { NobleLike } from '../lib/client/noble-types';
import { BleOtaError } from '../lib/errors';
import { buildAppImage } from '../lib/image/app-image-builder';

/** A noble that fails the test if the client uses it at all. */
const untouchable = new Proxy({} as NobleLike, {
  get(_target, key) {
    throw new Error(`the client used noble (${String(key)}) before refusing its options`);
  },
});

function refused(name: string, shown: string) {
  return (err: unknown) => {
    assert.ok(err instanceof BleOtaError, String(err));
    assert.equal(err.code, 'INVALID_ARGUMENT');
    assert.equal(err.message, `timeouts.${name} must be a number of milliseconds from 1 to 2147483647, not ${shown}.`);
    return true;
  };
}

describe('client options', () => {
  it('a timeout left undefined keeps its default; one given replaces it', () => {
    const client = new BleOtaClient({ noble: untouchable, timeouts: { gattMs: undefined, scanMs: 2500 } });
    assert.deepEqual(client.timeouts, { ...DEFAULT_TIMEOUTS, scanMs: 2500 });
  });

  it('a timeout no timer can keep is refused with its name, in the constructor and per update', async () => {
    for (const [value, shown] of [
      [Number.NaN, 'NaN'],
      [Number.POSITIVE_INFINITY, 'Infinity'],
      [0, '0'],
      [-5, '-5'],
      [2 ** 31, '2147483648'],
      ['5000', '"5000"'],
    ] as const) {
      assert.throws(() => new BleOtaClient({ noble: untouchable, timeouts: { gattMs: value as number } }), refused('gattMs', shown));
    }
    const client = new BleOtaClient({ noble: untouchable });
    const image = buildAppImage({ size: 16 * 1024, version: '2.0.0', seed: 3 });
    await assert.rejects(client.update({ target: { name: 'any' }, image, timeouts: { verifyMs: Number.NaN } }), refused('verifyMs', 'NaN'));
    await assert.rejects(client.connect({ name: 'any' }, { timeouts: { scanMs: 0 } }), refused('scanMs', '0'));
  });

  it('a device id given as bytes must be six (the factory MAC); other bytes are refused without being repeated', async () => {
    const client = new BleOtaClient({ noble: untouchable });
    const secretLike = Buffer.alloc(32, 0x5a);
    await assert.rejects(client.connect({ name: 'any' }, { deviceId: secretLike }), (err: unknown) => {
      assert.ok(err instanceof BleOtaError);
      assert.equal(err.code, 'INVALID_ARGUMENT');
      assert.match(err.message, /^A device id is 6 bytes \(the chip's factory MAC\), not 32; the bytes given are not repeated here\.$/);
      return true;
    });
  });

  it('timeouts that are no object, or name no timeout, are refused; a long value is not repeated whole', () => {
    const code = (message: RegExp) => (err: unknown) => err instanceof BleOtaError && err.code === 'INVALID_ARGUMENT' && message.test(err.message);
    assert.throws(
      () => new BleOtaClient({ noble: untouchable, timeouts: 'fast' as unknown as Partial<Timeouts> }),
      code(/^Timeouts must be an object of milliseconds, e\.g\. \{ scanMs: 30000 \}, not string\.$/),
    );
    assert.throws(
      () => new BleOtaClient({ noble: untouchable, timeouts: { scanms: 5 } as Partial<Timeouts> }),
      code(/^timeouts\.scanms is no timeout: they are scanMs, connectMs, gattMs, verifyMs, restartMs\.$/),
    );
    assert.throws(
      () => new BleOtaClient({ noble: untouchable, timeouts: { gattMs: 'x'.repeat(5000) as unknown as number } }),
      (err: unknown) => err instanceof BleOtaError && err.message.length < 200,
    );
  });

  it('an option of the wrong kind is refused with its name before any radio work, not taken for another meaning', async () => {
    const client = new BleOtaClient({ noble: untouchable });
    const image = buildAppImage({ size: 16 * 1024, version: '2.0.0', seed: 3 });
    const refusedWith = (message: RegExp) => (err: unknown) => {
      assert.ok(err instanceof BleOtaError, String(err));
      assert.equal(err.code, 'INVALID_ARGUMENT');
      assert.match(err.message, message);
      return true;
    };
    // Plain JavaScript callers: each of these used to update a device (a bare name: the first one advertising the OTA service).
    const wrong: Array<[Record<string, unknown>, RegExp]> = [
      [{ target: 'lamp' }, /^The target must be an object naming the device, .*; not the text "lamp"\.$/],
      [{ target: undefined }, /^The target must be an object .*; not undefined\.$/],
      [{ target: { address: '' } }, /^The target's address is empty: .*macOS hides addresses: give \{ id \} from a scan/],
      [{ target: { name: 42 } }, /^The target's name must be a string, not a number\.$/],
      [{ target: { address: 'lamp' } }, /^The target's address "lamp" is not a Bluetooth address; write it as AA:BB:CC:DD:EE:FF/],
      [{ confirm: 'maybe' }, /^options\.confirm must be 'client' .* or 'device' .*, not "maybe"\.$/],
      [{ protocol: 'v3' }, /^options\.protocol must be 'auto' .* or 'seed', not "v3"\.$/],
      [{ resumeAttempts: -1 }, /^options\.resumeAttempts must be a whole number of reconnections from 0 to 100, not -1\.$/],
      [{ resumeAttempts: '2' }, /^options\.resumeAttempts must be .*, not "2"\.$/],
      [{ allowDowngrade: 'false' }, /^options\.allowDowngrade must be true or false, not "false"\.$/],
      [{ skipIfRunning: 1 }, /^options\.skipIfRunning must be true or false, not 1\.$/],
      [{ onProgress: 'log' }, /^options\.onProgress must be a function, not "log"\.$/],
      [{ signal: {} }, /^options\.signal must be an AbortSignal \(an AbortController's signal\), not an object\.$/],
      [{ cache: '/tmp/cache' }, /^options\.cache must be an ImageCache \(new ImageCache\(\{ dir \}\)\), not "\/tmp\/cache"\.$/],
    ];
    for (const [options, message] of wrong) {
      await assert.rejects(client.update({ target: { name: 'lamp' }, image, ...options } as unknown as UpdateOptions), refusedWith(message), JSON.stringify(options));
    }
    await assert.rejects(client.connect('lamp' as unknown as Target), refusedWith(/^The target must be an object/));
    // connect() and scan() take a signal too: refused before the radio is used (connect threw a TypeError from noble's scan).
    const notASignal = {} as unknown as AbortSignal;
    await assert.rejects(client.connect({ name: 'lamp' }, { signal: notASignal }), refusedWith(/^options\.signal must be an AbortSignal .*, not an object\.$/));
    await assert.rejects(client.scan(1000, notASignal), refusedWith(/^scan\(\)'s signal must be an AbortSignal .*, not an object\.$/));
  });

  it('an update refused for a signal that is no AbortSignal holds up no later update on the radio', async () => {
    const client = new BleOtaClient({ noble: untouchable });
    const image = buildAppImage({ size: 16 * 1024, version: '2.0.0', seed: 3 });
    const notASignal = { aborted: false } as unknown as AbortSignal;
    await assert.rejects(client.update({ target: { name: 'lamp' }, image, signal: notASignal }), (err: unknown) => err instanceof BleOtaError && err.code === 'INVALID_ARGUMENT');
    // The next update gets the radio: it reaches noble (which this one refuses to be used) instead of waiting for good.
    await assert.rejects(client.update({ target: { name: 'lamp' }, image }), /the client used noble/);
  });

  it('a scan of no usable duration is refused, not run for 1 ms', async () => {
    const client = new BleOtaClient({ noble: untouchable });
    for (const duration of [Number.NaN, Number.POSITIVE_INFINITY, 0, -1]) {
      await assert.rejects(client.scan(duration), (err: unknown) => err instanceof BleOtaError && err.code === 'INVALID_ARGUMENT');
    }
  });
});
