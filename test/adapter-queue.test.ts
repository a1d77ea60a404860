/**
 * The adapter's line of operations waiting for a radio is bounded: beyond
 * its limit a new operation fails at once with BUSY, so a flood of requests
 * (scans, updates) cannot delay every update behind it without end.
 */
import { strict as assert } from 'node:assert';
import { BleOtaError } from '../lib/errors';
import { Adapter, MAX_WAITING } from '../nodes/shared/adapter';

/** A radio nobody reaches: these operations never touch noble. */
function adapter(limit?: number): Adapter {
  return new Adapter('virtual', () => assert.fail('noble is not used'), limit);
}

describe('the adapter queue', () => {
  it(`is bounded (${MAX_WAITING} by default): one more fails at once with BUSY and says why`, async () => {
    const radio = adapter();
    let release!: () => void;
    const held = radio.run(() => new Promise<void>((resolve) => (release = resolve)));
    const order: number[] = [];
    const waiting = Array.from({ length: MAX_WAITING }, (_, i) => radio.run(async () => void order.push(i)));
    assert.equal(radio.queued, MAX_WAITING);

    await assert.rejects(
      radio.run(async () => assert.fail('ran beyond the limit')),
      (err: unknown) => err instanceof BleOtaError && err.code === 'BUSY' && new RegExp(`busy: ${MAX_WAITING} operations are already waiting for it`).test(err.message),
    );
    assert.equal(radio.queued, MAX_WAITING, 'the refused operation took no place in the line');

    release();
    await held;
    await Promise.all(waiting);
    assert.deepEqual(order, [...Array(MAX_WAITING).keys()], 'the waiting ones ran, in order');
    assert.equal(radio.inUse, false);
  });

  it('a place freed by a cancelled waiter is taken again', async () => {
    const radio = adapter(2);
    let release!: () => void;
    const held = radio.run(() => new Promise<void>((resolve) => (release = resolve)));
    const abort = new AbortController();
    const cancelled = radio.run(async () => 'never', abort.signal);
    const kept = radio.run(async () => 'kept');
    await assert.rejects(
      radio.run(async () => 'refused'),
      { code: 'BUSY' },
    );
    abort.abort();
    await assert.rejects(cancelled, { code: 'CANCELLED' });
    const again = radio.run(async () => 'again');
    release();
    await held;
    assert.deepEqual(await Promise.all([kept, again]), ['kept', 'again']);
  });

  it('an operation on a free radio never waits, whatever the limit', async () => {
    assert.equal(await adapter(0).run(async () => 'ran'), 'ran');
  });
});
