/**
 * The editor in a real browser (Debian's Chromium, driven by playwright-core)
 * against a real Node-RED with this package: a flow of Inject, File In,
 * ble-ota-upload and Debug (imported, as a user imports an example); in the
 * upload node's dialog the user adds a device configuration, picks the
 * virtual radio, presses Scan and picks the virtual ESP32 from the list
 * (heard at RSSI 127, "not available", which the list shows as unknown);
 * deploys, presses the Inject button, and watches the node's status go
 * through the upload to "confirmed" and the result arrive in the debug
 * sidebar. Screenshots go to the OS temp folder (ble-ota-browser/).
 */
import { strict as assert } from 'node:assert';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium, Browser, Page } from 'playwright-core';
import { buildAppImage } from '../lib/image/app-image-builder';
import { NodeRedProcess } from './support/node-red-process';

const CHROMIUM = '/usr/bin/chromium';
const SHOTS = join(tmpdir(), 'ble-ota-browser');
const TAB = 'f1f1f1f1f1f1f1f1';

const FLOW = [
  { id: 'inj', type: 'inject', z: TAB, name: 'update', props: [{ p: 'payload' }], payload: '', payloadType: 'date', repeat: '', crontab: '', once: false, onceDelay: 0.1, topic: '', x: 150, y: 300, wires: [['fin']] },
  { id: 'fin', type: 'file in', z: TAB, name: 'firmware', filename: 'firmware/app.bin', filenameType: 'str', format: '', encoding: 'none', x: 330, y: 300, wires: [['up']] },
  { id: 'up', type: 'ble-ota-upload', z: TAB, name: '', device: '', x: 540, y: 300, wires: [['dbg'], []] },
  { id: 'dbg', type: 'debug', z: TAB, name: 'result', active: true, tosidebar: true, complete: 'payload', x: 760, y: 300, wires: [] },
];

/** Waits until the node's status text matches (it changes as the update goes). */
async function statusMatches(status: ReturnType<Page['locator']>, pattern: RegExp, timeoutMs: number): Promise<void> {
  const until = Date.now() + timeoutMs;
  let last = '';
  while (Date.now() < until) {
    last = (await status.textContent().catch(() => '')) ?? '';
    if (pattern.test(last)) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  assert.fail(`the status is "${last}", never ${pattern}`);
}

describe('the editor in Chromium', function () {
  this.timeout(120_000);
  let nr: NodeRedProcess | undefined;
  let browser: Browser | undefined;
  let page: Page;

  before(async function () {
    if (!existsSync(CHROMIUM)) {
      if (process.env.CI) throw new Error(`${CHROMIUM} is missing: .ci/run installs Debian's chromium`);
      this.skip();
    }
    mkdirSync(SHOTS, { recursive: true });
    nr = await NodeRedProcess.start(FLOW, '', { BLE_OTA_VIRTUAL_DEVICES: 'esp32-browser', BLE_OTA_VIRTUAL_RSSI: '127' });
    mkdirSync(join(nr.userDir, 'firmware'), { recursive: true });
    // Large enough that the status shows the upload in progress for a while.
    writeFileSync(join(nr.userDir, 'firmware/app.bin'), buildAppImage({ projectName: 'browser-app', version: '1.4.0', size: 1800 * 1024 }));
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      headless: true,
      args: ['--no-sandbox', '--disable-background-networking', '--disable-dev-shm-usage'],
    });
    page = await browser.newPage({ viewport: { width: 1440, height: 900 } });
  });

  after(async () => {
    await browser?.close();
    await nr?.stop();
  });

  it('configure the device with Scan, deploy, inject: the status reaches "confirmed" and Debug shows the result', async () => {
    await page.goto(nr!.url);
    await page.waitForSelector('#red-ui-header-button-deploy');
    await page.waitForSelector('#up');

    // The upload node's dialog: add a device configuration.
    await page.locator('#up').dblclick();
    await page.click('#node-input-btn-device-add');
    await page.waitForSelector('#node-config-input-device', { state: 'visible' });
    await page.click('#node-config-input-backend + .red-ui-typedInput-container .red-ui-typedInput-option-trigger');
    await page.click('.red-ui-typedInput-options a[value="virtual"]');

    // Scan, and pick the virtual ESP32 from the list.
    await page.click('#ble-ota-device-scan');
    const found = page.locator('#ble-ota-device-scan-list a', { hasText: 'esp32-browser' });
    await found.waitFor({ timeout: 20_000 });
    assert.match((await found.textContent()) ?? '', /^esp32-browser +([0-9a-f]{2}:){5}[0-9a-f]{2} +RSSI unknown +1\.0\.0$/);
    await page.screenshot({ path: join(SHOTS, 'scan.png') });
    await found.click();
    assert.equal(await page.inputValue('#node-config-input-device'), 'esp32-browser');
    await page.click('#node-config-dialog-ok');
    await page.click('#node-dialog-ok');

    // Deploy, then press the Inject button.
    await page.click('#red-ui-header-button-deploy');
    await page.locator('.red-ui-notification', { hasText: 'Successfully deployed' }).waitFor();
    await page.click('#inj .red-ui-flow-node-button');

    const status = page.locator('#up .red-ui-flow-node-status-label');
    await statusMatches(status, /uploading/, 30_000);
    await page.screenshot({ path: join(SHOTS, 'uploading.png'), clip: { x: 0, y: 0, width: 1120, height: 420 } });
    await statusMatches(status, /confirmed 1\.4\.0/, 60_000);

    // The result in the debug sidebar.
    // Through the editor's API: Node-RED 4 and 5 lay out their sidebars differently.
    await page.evaluate(() => (globalThis as unknown as { RED: { sidebar: { show(id: string): void } } }).RED.sidebar.show('debug'));
    const message = page.locator('.red-ui-debug-msg', { hasText: 'node: result' }).first();
    await message.waitFor({ timeout: 10_000 });
    assert.match((await message.textContent()) ?? '', /msg\.payload : Object.*protocol: "v2"/);
    await page.screenshot({ path: join(SHOTS, 'confirmed.png') });
  });
});
