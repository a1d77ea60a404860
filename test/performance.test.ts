/**
 * The benchmark's figures that a regression must not move (docs/PERFORMANCE.md):
 * on the modelled ESP32 link (1M PHY, DLE 251, MTU 517, 7.5 ms), v2 delivers
 * a 1 MB image within 10 % of what the link and flash allow (on 2M PHY too),
 * as fast as the link allows against the seed's protocol (10 times at 15 ms),
 * compressed app code 1.5 times faster than the link carries raw bytes, and
 * the model gives the same figure on every run. `npm run bench` has the full
 * tables.
 */
import { strict as assert } from 'node:assert';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { buildAppImage } from '../lib/image/app-image-builder';
import { boundMs, ESP_2M_RX_BUFFERS, ESP_RX_BUFFERS, preset, PRESETS } from '../lib/virtual/link-model';
import { modelledUpdate } from '../lib/virtual/modelled-update';
import { fixture, haveFixtures } from './support/fixtures';
import { ROOT } from './support/node-red-process';

describe('performance on the modelled link', function () {
  this.timeout(60_000);
  const esp32 = preset('esp32-1m-517-7.5');
  const oneMb = buildAppImage({ size: 1024 * 1024, version: '2.0.0', seed: 77 });

  it('v2 delivers 1 MB at 90 % or more of the bound, and at least 6.5 times as fast as the seed protocol (the link allows 6.95)', async () => {
    const v2 = await modelledUpdate(esp32, oneMb, { protocol: 'v2' });
    const seed = await modelledUpdate(esp32, oneMb, { protocol: 'seed' });
    console.log(
      `      ${esp32.description}, 1 MB: v2 ${(v2.transferMs / 1000).toFixed(2)} s (${(v2.ratio * 100).toFixed(1)} % of the bound), seed ${(seed.transferMs / 1000).toFixed(2)} s: ${(seed.transferMs / v2.transferMs).toFixed(1)} x`,
    );
    assert.ok(v2.ratio >= 0.9, `v2 at ${(v2.ratio * 100).toFixed(1)} % of the bound`);
    assert.ok(seed.transferMs / v2.transferMs >= 6.5, `v2 only ${(seed.transferMs / v2.transferMs).toFixed(2)} x the seed`);
    // No protocol beats the link: the seed's speed times this is the most any could reach here.
    assert.ok(seed.transferMs / v2.boundMs < 7, `the link allows ${(seed.transferMs / v2.boundMs).toFixed(2)} x the seed`);
  });

  it('at a 15 ms interval v2 is 10 times as fast as the seed protocol', async () => {
    const slower = preset('esp32-1m-517-15');
    const v2 = await modelledUpdate(slower, oneMb, { protocol: 'v2' });
    const seed = await modelledUpdate(slower, oneMb, { protocol: 'seed' });
    assert.ok(seed.transferMs / v2.transferMs >= 10, `v2 only ${(seed.transferMs / v2.transferMs).toFixed(2)} x the seed`);
  });

  it('on the 2M PHY of the S3 / C3 / C6, v2 delivers 1 MB at 90 % or more of the bound too', async () => {
    const run = await modelledUpdate(preset('esp32s3-2m-517-7.5'), oneMb, { protocol: 'v2' });
    assert.ok(run.ratio >= 0.9, `v2 at ${(run.ratio * 100).toFixed(1)} % of the bound`);
  });

  it("with DEFLATE, real app code goes 1.5 times faster than the link's raw capacity", async function () {
    if (!haveFixtures) return this.skip(); // the real app code is in ../shared/fixtures
    // The S2 blink's code in a 1 MB ESP32 image, as the benchmark does.
    const image = buildAppImage({ size: 1024 * 1024, version: '2.0.0', fill: fixture('esp_idf_blink_esp32s2.bin') });
    const run = await modelledUpdate(esp32, image, { protocol: 'v2', compress: true });
    console.log(`      ${esp32.description}, 1 MB of app code, DEFLATE: ${(run.transferMs / 1000).toFixed(2)} s, ${run.linkRatio.toFixed(2)} x the link`);
    assert.ok(run.compressed);
    assert.ok(run.linkRatio >= 1.5, `${run.linkRatio.toFixed(3)} x the link's raw capacity`);
  });

  it('the model is deterministic: the same update gives the same figure', async () => {
    const image = buildAppImage({ size: 200 * 1024, version: '2.0.0', seed: 78 });
    const a = await modelledUpdate(esp32, image, { protocol: 'v2' });
    const b = await modelledUpdate(esp32, image, { protocol: 'v2' });
    assert.equal(a.transferMs, b.transferMs);
    assert.ok(a.transferMs > 0);
  });

  it("the presets' receive buffers are the firmware's: sdkconfig.defaults, and the 2M targets' own files", () => {
    const count = (file: string) => Number(/^CONFIG_BT_NIMBLE_TRANSPORT_ACL_FROM_LL_COUNT=(\d+)$/m.exec(readFileSync(join(ROOT, 'firmware', file), 'utf8'))?.[1]);
    assert.equal(count('sdkconfig.defaults'), ESP_RX_BUFFERS);
    for (const target of ['esp32s3', 'esp32c3', 'esp32c6']) assert.equal(count(`sdkconfig.defaults.${target}`), ESP_2M_RX_BUFFERS, target);
    for (const p of PRESETS) assert.equal(p.link.rxBuffers, p.link.phy === '2M' ? ESP_2M_RX_BUFFERS : ESP_RX_BUFFERS, p.name);
  });

  it('the bound is the link for this preset, and its figures follow the air-time arithmetic', () => {
    const b = boundMs(esp32, 1024 * 1024);
    assert.equal(b.boundMs, Math.max(b.linkMs, b.flashMs));
    // 16 block erases (150 ms) and 4096 page programs (0.4 ms).
    assert.ok(Math.abs(b.flashMs - (16 * 150 + 4096 * 0.4)) < 1e-6);
    // 495-byte values in two full 251-byte PDUs, 2.468 ms each on 1M PHY: about 96 KB/s.
    const kbPerS = 1024 / (b.linkMs / 1000);
    assert.ok(kbPerS > 90 && kbPerS < 100, `${kbPerS.toFixed(1)} KB/s`);
  });
});
