/**
 * The measurement of a real ESP32 (`npm run bench -- --hardware`,
 * bench/hardware.ts), run through its steps against a virtual ESP32: each
 * update goes the way the figure it stands for needs (raw, deflated, a
 * patch), is confirmed, and reports the link and the bytes over the air;
 * the bound is computed from the link the device reported. Its times are
 * the host's here, so none is asserted.
 */
import { strict as assert } from 'node:assert';
import type { LinkReport } from '../lib/client/types';
import { measureDevice, modelLink, StepFigures, virtualTarget } from '../bench/hardware';

describe('measuring a real ESP32 (bench/hardware.ts), against a virtual one', function () {
  this.timeout(120_000);

  it('runs the five updates, each sent as its figure needs and confirmed, with the link and a bound for the raw ones', async () => {
    const { target, stop } = await virtualTarget();
    let steps: StepFigures[];
    const lines: string[] = [];
    try {
      steps = await measureDevice(target, (line) => lines.push(line));
    } finally {
      await stop();
    }
    assert.deepEqual(
      steps.map((s) => [s.step, s.version, s.method, s.confirmed]),
      [
        ['setup', '1.0.1', 'full', true],
        ['idle', '1.0.2', 'full', true],
        ['no-idle', '1.0.1', 'full', true],
        ['deflated', '1.0.2', 'full', true],
        ['patch', '1.0.1', 'patch', true],
      ],
    );
    const [, idle, noIdle, deflated, patch] = steps;
    for (const raw of [idle, noIdle]) {
      assert.equal(raw.bytesOverAir, raw.imageBytes, `${raw.step}: the image went raw`);
      assert.ok(raw.boundMs !== undefined && raw.boundMs > 0 && raw.ofBound !== undefined, `${raw.step}: a bound from the link reported`);
    }
    assert.ok(deflated.bytesOverAir < deflated.imageBytes / 2, 'the deflated step deflated');
    assert.equal(deflated.boundMs, undefined, 'no raw bound for a deflated transfer');
    assert.ok(patch.bytesOverAir < patch.imageBytes / 50, 'a version string changed: a small patch');
    for (const s of steps) {
      assert.ok(s.link.mtu > 23 && s.link.dataLength?.toDevice !== undefined && s.link.intervalMs !== undefined, `${s.step}: the link reported`);
      assert.ok(s.endToEndMs > 0 && s.cpuMs > 0);
    }
    assert.equal(lines.length, 5);
    assert.match(
      lines[1],
      /^ {2}idle {5}1\.0\.2 .* KB over the air, call to confirmed \d+\.\d\d s, transfer \d+\.\d\d s \(\d+ % of the \d+\.\d\d s bound\); link MTU \d+, DLE \d+, 1M PHY, [\d.]+ ms; CPU \d+ ms$/,
    );
  });

  it('a link report without the fields a bound needs gives no bound, rather than a made-up one', () => {
    const full: LinkReport = { mtu: 256, dataLength: { toDevice: 251 }, phy: { toDevice: '2M' }, intervalMs: 15 };
    assert.equal(modelLink(full)?.phy, '2M');
    assert.equal(modelLink({ ...full, dataLength: undefined }), undefined);
    assert.equal(modelLink({ ...full, intervalMs: undefined }), undefined);
    assert.equal(modelLink({ ...full, phy: { toDevice: 'Coded' } }), undefined, 'the model has no coded PHY');
  });
});
