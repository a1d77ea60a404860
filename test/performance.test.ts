/**
 * The performance model's checks (docs/PERFORMANCE.md). Every figure here is
 * recomputed from the model's own parameters, never written down: the
 * presets are their centrals' sides negotiated with the firmware's request,
 * noble's side is what noble's HCI code sends, the air time follows the
 * per-event arithmetic (with the end-of-event margin), only the
 * controller's pool absorbs flash work, and an update takes no less than
 * the bound and no more than the link plus all the flash work.
 * `npm run bench` measures the targets (share of the bound, against the
 * seed, end to end).
 */
import { strict as assert } from 'node:assert';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { buildAppImage } from '../lib/image/app-image-builder';
import { NOBLE_HCI_MTU } from '../lib/virtual/bindings';
import { AirSchedule, boundMs, ESP_2M_RX_BUFFERS, ESP_RX_BUFFERS, exchangeMs, FIRMWARE_LINK_REQUEST, LINUX_NOBLE, negotiate, preset, PRESETS } from '../lib/virtual/link-model';
import { modelledUpdate } from '../bench/modelled-update';
import { W25Q32JV_MAX, withModel } from '../bench/virtual-time';
import { fixture, haveFixtures } from './support/fixtures';
import { ROOT } from './support/node-red-process';

const NOBLE_HCI = join(ROOT, 'node_modules/@abandonware/noble/lib/hci-socket');

/** PDUs of `payload` bytes one connection event holds on this link. */
function perEvent(link: ReturnType<typeof negotiate>, payload: number): number {
  const fit = Math.floor((link.eventLengthMs - link.eventMarginMs + 1e-9) / exchangeMs(link, payload));
  return Math.min(fit, link.maxPdusPerEvent);
}

describe('performance on the modelled link', function () {
  this.timeout(120_000);
  const gateway = preset('linux-noble-esp32');
  const oneMb = buildAppImage({ size: 1024 * 1024, version: '2.0.0', seed: 77 });

  it("each preset is its central's side negotiated with the firmware's request, the realistic one first", () => {
    assert.equal(PRESETS[0].central, LINUX_NOBLE);
    for (const p of PRESETS) {
      assert.deepEqual(p.link, negotiate(p.central, p.chip, FIRMWARE_LINK_REQUEST), p.name);
      assert.equal(p.link.mtu, Math.min(p.central.mtu, FIRMWARE_LINK_REQUEST.mtu), p.name);
      assert.equal(p.link.phy === '2M', p.chip.phys.includes('2M') && p.central.phys.includes('2M'), p.name);
    }
  });

  it("noble's side is what noble's HCI code sends: MTU, connection interval, supervision timeout", () => {
    const gatt = readFileSync(join(NOBLE_HCI, 'gatt.js'), 'utf8');
    assert.equal(Number(/_desired_mtu = (\d+)/.exec(gatt)?.[1]), LINUX_NOBLE.mtu);
    assert.equal(NOBLE_HCI_MTU, LINUX_NOBLE.mtu);
    const hci = readFileSync(join(NOBLE_HCI, 'hci.js'), 'utf8');
    const at = hci.indexOf('createLeConn = function');
    const conn = /maxInterval = (0x[0-9a-f]+),[\s\S]*?timeout = (0x[0-9a-f]+)/i.exec(hci.slice(at, at + 400));
    assert.ok(conn, "noble's createLeConn defaults");
    assert.equal(Number(conn[1]) * 1.25, LINUX_NOBLE.connectIntervalMs);
    assert.equal(Number(conn[2]) * 10, LINUX_NOBLE.supervisionTimeoutMs);
  });

  it("the firmware's request: the MTU of its sdkconfig, a supervision timeout longer than the worst block erase", () => {
    const sdk = readFileSync(join(ROOT, 'firmware/sdkconfig.defaults'), 'utf8');
    assert.equal(Number(/^CONFIG_BT_NIMBLE_ATT_PREFERRED_MTU=(\d+)$/m.exec(sdk)?.[1]), FIRMWARE_LINK_REQUEST.mtu);
    assert.ok(FIRMWARE_LINK_REQUEST.supervisionTimeoutMs > W25Q32JV_MAX.blockEraseMs);
  });

  it('the end-of-event margin: a connection event holds only the exchanges that end before it', () => {
    for (const p of PRESETS) {
      const link = p.link;
      const air = new AirSchedule(link);
      let inFirst = 0;
      for (let i = 0; i < 40; i++) if (air.send(0, link.dataLength) <= link.intervalMs) inFirst++;
      assert.equal(inFirst, perEvent(link, link.dataLength), p.name);
    }
    // 7.5 ms on 1M with 251-byte PDUs: the third exchange would end inside the margin.
    const short = withModel(gateway, { link: { intervalMs: 7.5, eventLengthMs: 7.5 } }).link;
    assert.ok(3 * exchangeMs(short, 251) <= 7.5);
    assert.equal(perEvent(short, 251), 2);
  });

  it('the link bound follows the per-event arithmetic', () => {
    for (const p of PRESETS) {
      const b = boundMs(p, oneMb.length);
      assert.equal(b.boundMs, Math.max(b.linkMs, b.flashMs), p.name);
      // The largest values that fill whole PDUs, as boundMs() sends them.
      const perPdu = Math.floor(p.link.mtu / p.link.dataLength);
      const value = perPdu >= 1 ? perPdu * p.link.dataLength - 7 : p.link.mtu - 3;
      const pdus = Math.ceil(oneMb.length / value) * Math.ceil((value + 7) / p.link.dataLength);
      const events = Math.ceil(pdus / perEvent(p.link, p.link.dataLength));
      // Whole events but the last, which ends after its own exchanges.
      assert.ok(b.linkMs <= events * p.link.intervalMs + 1e-6 && b.linkMs > (events - 1) * p.link.intervalMs, `${p.name}: ${b.linkMs} ms for ${events} events`);
    }
  });

  it('an update takes no less than the bound, and no more than the link plus all the flash work (typical and datasheet-maximum flash)', async () => {
    for (const p of [gateway, withModel(gateway, { flash: W25Q32JV_MAX, suffix: '-max' }), preset('esp32s3-to-esp32s3')]) {
      const v2 = await modelledUpdate(p, oneMb, { protocol: 'v2' });
      console.log(
        `      ${p.name}, 1 MB: v2 ${(v2.transferMs / 1000).toFixed(2)} s, ${(v2.ratio * 100).toFixed(1)} % of the bound; end to end ${(v2.endToEndMs / 1000).toFixed(2)} s`,
      );
      assert.ok(v2.transferMs >= v2.boundMs, p.name);
      assert.ok(v2.transferMs <= v2.linkBoundMs + v2.flashBoundMs, p.name);
      assert.ok(v2.wholeMs > v2.transferMs && v2.endToEndMs > v2.wholeMs, p.name);
    }
  });

  it("only the controller's pool absorbs flash work: the host's buffers change nothing, a larger pool would", async () => {
    const base = await modelledUpdate(gateway, oneMb, { protocol: 'v2' });
    const hostDefault = await modelledUpdate(withModel(gateway, { link: { hostRxBuffers: 24 } }), oneMb, { protocol: 'v2' });
    const bigPool = await modelledUpdate(withModel(gateway, { link: { controllerRxBuffers: gateway.chip.hostRxBuffers } }), oneMb, { protocol: 'v2' });
    assert.equal(hostDefault.transferMs, base.transferMs);
    assert.ok(bigPool.transferMs < base.transferMs);
  });

  it("the seed's protocol on the same link: one write per two intervals, and its device's flash work", async () => {
    const seed = await modelledUpdate(gateway, oneMb, { protocol: 'seed' });
    const v2 = await modelledUpdate(gateway, oneMb, { protocol: 'v2' });
    const paced = Math.ceil(oneMb.length / (Math.min(gateway.link.mtu, 256) - 3)) * 2 * gateway.link.intervalMs;
    // The seed's device erases 4 KB sectors as the data reaches them, inside the write it answers.
    const flash = Math.ceil(oneMb.length / 4096) * gateway.flash.sectorEraseMs + Math.ceil(oneMb.length / 256) * gateway.flash.pageProgramMs;
    console.log(`      ${gateway.name}, 1 MB: seed ${(seed.transferMs / 1000).toFixed(2)} s, v2 ${(seed.transferMs / v2.transferMs).toFixed(1)} x as fast`);
    assert.ok(seed.transferMs >= paced && seed.transferMs <= paced + flash, `${seed.transferMs} ms against ${paced} ms paced and ${flash} ms of flash`);
    assert.ok(seed.transferMs > v2.transferMs);
  });

  it('with DEFLATE, real app code arrives faster than without', async function () {
    if (!haveFixtures) return this.skip(); // the real app code is in ../shared/fixtures
    // The S2 blink's code in a 1 MB ESP32 image, as the benchmark does.
    const image = buildAppImage({ size: 1024 * 1024, version: '2.0.0', fill: fixture('esp_idf_blink_esp32s2.bin') });
    const plain = await modelledUpdate(gateway, image, { protocol: 'v2' });
    const run = await modelledUpdate(gateway, image, { protocol: 'v2', compress: true });
    console.log(`      ${gateway.name}, 1 MB of app code, DEFLATE: ${(run.transferMs / 1000).toFixed(2)} s, ${run.linkRatio.toFixed(2)} x the link`);
    assert.ok(run.compressed);
    assert.ok(run.transferMs < plain.transferMs);
  });

  it('the model is deterministic: the same update gives the same figure', async () => {
    const image = buildAppImage({ size: 200 * 1024, version: '2.0.0', seed: 78 });
    const a = await modelledUpdate(gateway, image, { protocol: 'v2' });
    const b = await modelledUpdate(gateway, image, { protocol: 'v2' });
    assert.equal(a.transferMs, b.transferMs);
    assert.equal(a.wholeMs, b.wholeMs);
    assert.ok(a.transferMs > 0);
  });

  it("the chips' host buffers are the firmware's: sdkconfig.defaults, and the 2M targets' own files", () => {
    const count = (file: string) => Number(/^CONFIG_BT_NIMBLE_TRANSPORT_ACL_FROM_LL_COUNT=(\d+)$/m.exec(readFileSync(join(ROOT, 'firmware', file), 'utf8'))?.[1]);
    assert.equal(count('sdkconfig.defaults'), ESP_RX_BUFFERS);
    for (const target of ['esp32s3', 'esp32c3', 'esp32c6']) assert.equal(count(`sdkconfig.defaults.${target}`), ESP_2M_RX_BUFFERS, target);
    for (const p of PRESETS) assert.equal(p.link.hostRxBuffers, p.link.phy === '2M' ? ESP_2M_RX_BUFFERS : ESP_RX_BUFFERS, p.name);
  });

  it('the flash bound: block erases where whole blocks fit, sectors for the rest, every page', () => {
    for (const flash of [gateway.flash, W25Q32JV_MAX]) {
      const b = boundMs(withModel(gateway, { flash }), oneMb.length);
      const blocks = Math.floor(oneMb.length / 65536);
      const sectors = Math.ceil((oneMb.length - blocks * 65536) / 4096);
      const expected = blocks * flash.blockEraseMs + sectors * flash.sectorEraseMs + Math.ceil(oneMb.length / 256) * flash.pageProgramMs;
      assert.ok(Math.abs(b.flashMs - expected) < 1e-6);
    }
  });
});
