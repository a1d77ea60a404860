/**
 * The editor in a real browser (Debian's Chromium, driven by playwright-core)
 * against a real Node-RED with this package.
 *
 * - The palette: short labels on one line each, and an icon per node; in
 *   every dialog each field's label fits its place.
 * - A flow of Inject, File In, OTA upload and Debug (imported, as a user
 *   imports an example): in the upload node's dialog the user adds an OTA
 *   device configuration, picks the virtual radio, presses Scan and picks the
 *   virtual ESP32 from the results table (headings, a row lit under the
 *   pointer, the chosen row selected; heard at RSSI 127, "not available",
 *   which the table shows as unknown; a device typed into In range, not
 *   deployed yet, is said not to be in range yet); a negative scan time and a timeout
 *   that is no number are marked invalid, with a message that says the range;
 *   deploys, presses the Inject button, and watches the node's status go
 *   through the upload to "confirmed" and the result arrive in the debug
 *   sidebar.
 * - The status node's Payload template, typed in and the dialog closed
 *   (Done, then Cancel). Nothing throws in the page in any of these.
 * - The same editor in a German browser (Node-RED follows the browser's
 *   language): palette, dialogs, Scan table, validation messages and help
 *   in German, every label fitting.
 *
 * Screenshots go to the OS temp folder (ble-ota-browser/).
 */
import { strict as assert } from 'node:assert';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Locator, Page } from 'playwright-core';
import { buildAppImage } from '../lib/image/app-image-builder';
import { nodeRedInChromium, SHOTS } from './support/chromium';
import { NodeRedProcess } from './support/node-red-process';

const TAB = 'f1f1f1f1f1f1f1f1';

const FLOW = [
  {
    id: 'inj',
    type: 'inject',
    z: TAB,
    name: 'update',
    props: [{ p: 'payload' }],
    payload: '',
    payloadType: 'date',
    repeat: '',
    crontab: '',
    once: false,
    onceDelay: 0.1,
    topic: '',
    x: 150,
    y: 300,
    wires: [['fin']],
  },
  { id: 'fin', type: 'file in', z: TAB, name: 'firmware', filename: 'firmware/app.bin', filenameType: 'str', format: '', encoding: 'none', x: 330, y: 300, wires: [['up']] },
  { id: 'up', type: 'ble-ota-upload', z: TAB, name: '', device: '', x: 540, y: 300, wires: [['dbg'], []] },
  { id: 'dbg', type: 'debug', z: TAB, name: 'result', active: true, tosidebar: true, complete: 'payload', x: 760, y: 300, wires: [] },
  { id: 'st', type: 'ble-ota-status', z: TAB, name: '', device: '', scope: 'all', uploads: [], report: 'all', states: [], template: '', topic: '', x: 540, y: 380, wires: [[]] },
  { id: 'sc', type: 'ble-ota-scan', z: TAB, name: '', device: 'dev-virtual', duration: 5, output: 'list', namePattern: '', minRssi: '', x: 760, y: 380, wires: [[]] },
  { id: 'dev-virtual', type: 'ble-ota-device', name: '', device: '', backend: 'virtual', virtualDevices: '', scanTimeout: 15, operationTimeout: 5 },
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

/** The little of the DOM these checks read (the tests compile without the DOM's types). */
interface Box {
  innerText: string;
  querySelector(selector: string): Box;
  getBoundingClientRect(): { height: number };
}
interface Window {
  getComputedStyle(element: Box): { backgroundImage: string; backgroundColor: string };
}

/** What a user sees of each of our palette entries: the label, its height, the icon. */
async function paletteEntries(page: Page): Promise<Record<string, { label: string; height: number; icon: string }>> {
  const types = ['ble-ota-upload', 'ble-ota-status', 'ble-ota-scan', 'inject'];
  const out: Record<string, { label: string; height: number; icon: string }> = {};
  for (const type of types) {
    const entry = page.locator(`.red-ui-palette-node[data-palette-type="${type}"]`);
    await entry.waitFor({ state: 'attached' });
    out[type] = await entry.evaluate((el) => {
      const box = el as unknown as Box;
      return {
        label: box.querySelector('.red-ui-palette-label').innerText,
        height: box.getBoundingClientRect().height,
        icon: (globalThis as unknown as Window).getComputedStyle(box.querySelector('.red-ui-palette-icon')).backgroundImage,
      };
    });
  }
  return out;
}

/** Our palette labels are these, each on one line (as tall as Inject's), each with its own icon. */
async function assertPalette(page: Page, labels: Record<string, string>): Promise<void> {
  const entries = await paletteEntries(page);
  for (const [type, label] of Object.entries(labels)) {
    assert.equal(entries[type].label, label, `${type}'s palette label`);
    assert.equal(entries[type].height, entries.inject.height, `"${label}" wraps: its palette entry is taller than Inject's`);
    assert.match(entries[type].icon, new RegExp(`icons/node-red-contrib-esp32-ble-ota/${type}\\.svg`), `${type}'s icon`);
  }
}

/** Field labels of the open dialog that do not fit their place: running into the field, or wrapped onto a second line. */
async function crampedLabels(page: Page): Promise<string[]> {
  return page
    .locator('.form-row > label:first-child:visible')
    .evaluateAll((labels) =>
      (labels as unknown as Array<Box & { scrollWidth: number; clientWidth: number }>)
        .filter((l) => l.scrollWidth > l.clientWidth + 1 || l.getBoundingClientRect().height > 30)
        .map((l) => l.innerText.trim()),
    );
}

/** The status and scan nodes' dialogs, with every optional row shown: all labels fit. */
async function assertOtherDialogsFit(page: Page): Promise<void> {
  await page.locator('#st').dblclick();
  await page.waitForSelector('#node-input-scope', { state: 'visible' });
  await page.selectOption('#node-input-scope', 'selected');
  await page.selectOption('#node-input-report', 'selected');
  assert.deepEqual(await crampedLabels(page), [], 'status node');
  await page.click('#node-dialog-cancel');
  await page.locator('#sc').dblclick();
  await page.waitForSelector('#node-input-duration', { state: 'visible' });
  assert.deepEqual(await crampedLabels(page), [], 'scan node');
  await page.click('#node-dialog-cancel');
}

/**
 * Node-RED 4.1's Monaco throws "Model is disposed!" from its code folding (a
 * closed model's getOptions) when a page's first dialog closes while folding
 * is still being computed: its core nodes' dialogs do the same (the template
 * node's, opened and closed at once), so it says nothing of these nodes.
 */
function nodeRedsFoldingRace(stack: string): boolean {
  return /^Error: Model is disposed!/.test(stack) && /_assertNotDisposed \([^)]*\)\n\s*at \S+\.getOptions \(/.test(stack);
}

/**
 * The status node's Payload template, typed in and kept (Done), then typed in
 * again and dropped (Cancel); resolves once the page has run what closing
 * the dialog queued (an error Monaco throws comes from a timer).
 */
async function editTemplate(page: Page): Promise<void> {
  for (const button of ['#node-dialog-ok', '#node-dialog-cancel']) {
    await page.locator('#st').dblclick();
    await page.waitForSelector('#node-input-template-editor', { state: 'visible' });
    await page.click('#node-input-template-editor');
    await page.keyboard.type('{{state}} ');
    await page.click(button);
    await page.locator('#node-input-template-editor').waitFor({ state: 'detached' });
    await page.evaluate(() => new Promise((resolve) => setTimeout(resolve, 0)));
  }
}

const background = (row: Locator) => row.evaluate((el) => (globalThis as unknown as Window).getComputedStyle(el as unknown as Box).backgroundColor);

/** The tooltip Node-RED shows on an invalid field. */
async function tooltipOf(page: Page, field: Locator): Promise<string> {
  await field.hover();
  const tip = page.locator('.red-ui-popover:visible .red-ui-popover-content').last();
  await tip.waitFor({ timeout: 5000 });
  return (await tip.textContent()) ?? '';
}

describe('the editor in Chromium', function () {
  this.timeout(120_000);
  const ui = nodeRedInChromium(
    async () => {
      const nr = await NodeRedProcess.start(FLOW, '', { BLE_OTA_VIRTUAL_DEVICES: 'esp32-browser slow', BLE_OTA_VIRTUAL_RSSI: '127' });
      mkdirSync(join(nr.userDir, 'firmware'), { recursive: true });
      // The device is declared slow (requests paced to a Bluetooth 4.1 link), so the status shows
      // the upload under way for seconds however loaded the machine: nothing races the clock.
      writeFileSync(join(nr.userDir, 'firmware/app.bin'), buildAppImage({ projectName: 'browser-app', version: '1.4.0', size: 400 * 1024 }));
      return nr;
    },
    { width: 1440, height: 900 },
  );

  /** What threw in the editor's pages (stacks): nothing may, but Node-RED's own race below. */
  const pageErrors: string[] = [];
  before(() => ui.page.on('pageerror', (err) => pageErrors.push(String(err.stack))));
  afterEach(() =>
    assert.deepEqual(
      pageErrors
        .splice(0)
        .filter((stack) => !nodeRedsFoldingRace(stack))
        .map((stack) => stack.split('\n').slice(0, 6).join('\n')),
      [],
      'errors thrown in the editor',
    ),
  );

  it('the palette: short labels, one line each, an icon per node', async () => {
    const { nr, page } = ui;
    await page.goto(nr.url);
    await page.waitForSelector('#red-ui-header-button-deploy');
    await assertPalette(page, { 'ble-ota-upload': 'OTA upload', 'ble-ota-status': 'OTA status', 'ble-ota-scan': 'OTA scan' });
    await page.locator('.red-ui-palette-node[data-palette-type="ble-ota-upload"]').scrollIntoViewIfNeeded();
    await page.screenshot({ path: join(SHOTS, 'palette.png'), clip: { x: 0, y: 0, width: 400, height: 900 } });
    await assertOtherDialogsFit(page);
    // The Payload template, edited twice: kept, then dropped.
    await editTemplate(page);
  });

  it('configure the device with Scan, deploy, inject: the status reaches "confirmed" and Debug shows the result', async () => {
    const { nr, page } = ui;
    await page.goto(nr.url);
    await page.waitForSelector('#red-ui-header-button-deploy');
    await page.waitForSelector('#up');

    // The upload node's dialog: add a device configuration; its dialog names the type as the palette does.
    await page.locator('#up').dblclick();
    await page.click('#node-input-btn-device-add');
    await page.waitForSelector('#node-config-input-device', { state: 'visible' });
    assert.match((await page.locator('.red-ui-tray-titlebar').last().textContent()) ?? '', /Add new OTA device config node$/);
    await page.click('#node-config-input-backend + .red-ui-typedInput-container .red-ui-typedInput-option-trigger');
    await page.click('.red-ui-typedInput-options a[value="virtual"]');
    assert.deepEqual(await crampedLabels(page), []);

    // Scan: a table with headings; the virtual ESP32 is a row. A device typed into In range is not
    // in range before the list is deployed: Scan says so.
    await page.fill('#node-config-input-virtualDevices', 'esp32-later, esp32-off offline');
    await page.click('#ble-ota-device-scan');
    const table = page.locator('#ble-ota-device-scan-table');
    const row = table.locator('tbody tr', { hasText: 'esp32-browser' });
    await row.waitFor({ timeout: 20_000 });
    assert.match(await page.locator('#ble-ota-device-scan-message').innerText(), /^Not in range yet: esp32-later\. .*Deploy, then Scan again\.$/);
    assert.deepEqual(await table.locator('thead th').allTextContents(), ['Name', 'Address', 'Signal', 'Version']);
    const cells = await row.locator('td').allTextContents();
    assert.equal(cells[0], 'esp32-browser');
    assert.match(cells[1], /^([0-9a-f]{2}:){5}[0-9a-f]{2}$/);
    assert.deepEqual(cells.slice(2), ['unknown', '1.0.0']);

    // Under the pointer a row is lit; clicked, it fills Device and stays selected.
    await page.mouse.move(0, 0);
    const plain = await background(row);
    await row.hover();
    const hovered = await background(row);
    assert.notEqual(hovered, plain, 'a row is lit under the pointer');
    await page.screenshot({ path: join(SHOTS, 'scan.png') });
    await row.click();
    assert.equal(await page.inputValue('#node-config-input-device'), 'esp32-browser');
    await page.mouse.move(0, 0);
    assert.equal(await row.getAttribute('aria-selected'), 'true');
    const selected = await background(row);
    assert.ok(selected !== plain && selected !== hovered, `the selected row shows as such (${plain}, ${hovered}, ${selected})`);
    // The selection follows what Device says.
    await page.fill('#node-config-input-device', 'esp32-other');
    assert.equal(await row.getAttribute('aria-selected'), 'false');
    assert.equal(await background(row), plain);
    // With the keyboard: a row takes the focus, Enter picks it.
    await row.focus();
    await page.keyboard.press('Enter');
    assert.equal(await page.inputValue('#node-config-input-device'), 'esp32-browser');
    assert.equal(await row.getAttribute('aria-selected'), 'true');
    await page.screenshot({ path: join(SHOTS, 'scan-selected.png') });

    // Numbers: a negative scan time and a timeout that is no number are marked, with the range.
    const scanTime = page.locator('#node-config-input-scanTimeout');
    await scanTime.fill('-5');
    await scanTime.press('Tab');
    assert.match((await scanTime.getAttribute('class')) ?? '', /input-error/, 'a negative scan time is invalid');
    assert.equal(await tooltipOf(page, scanTime), 'Scan time: give a number of seconds from 1 to 3600.');
    const timeout = page.locator('#node-config-input-operationTimeout');
    await timeout.fill('soon');
    await timeout.press('Tab');
    assert.match((await timeout.getAttribute('class')) ?? '', /input-error/, 'a timeout that is no number is invalid');
    await page.screenshot({ path: join(SHOTS, 'invalid-numbers.png') });
    await scanTime.fill('10');
    await timeout.fill('5');
    await timeout.press('Tab');
    assert.doesNotMatch((await scanTime.getAttribute('class')) ?? '', /input-error/);
    assert.doesNotMatch((await timeout.getAttribute('class')) ?? '', /input-error/);

    await page.click('#node-config-dialog-ok');
    await page.click('#node-dialog-ok');

    // Deploy, then press the Inject button.
    await page.click('#red-ui-header-button-deploy');
    await page.locator('.red-ui-notification', { hasText: 'Successfully deployed' }).waitFor();
    await page.click('#inj .red-ui-flow-node-button');

    const status = page.locator('#up .red-ui-flow-node-status-label');
    await statusMatches(status, /uploading [1-9]\d? %/, 30_000); // under way, for the README's picture
    // The flow at the top of the picture, wherever the editor left the view.
    await page.evaluate(() => {
      const chart = (globalThis as unknown as { document: { getElementById(id: string): { scrollTop: number; scrollLeft: number } } }).document.getElementById(
        'red-ui-workspace-chart',
      );
      chart.scrollTop = 220;
      chart.scrollLeft = 0;
    });
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
  it('in a German browser: palette, dialogs, Scan table, validation and help in German', async () => {
    const { nr, browser } = ui;
    const context = await browser.newContext({ locale: 'de-DE', viewport: { width: 1440, height: 900 } });
    try {
      const de = await context.newPage();
      de.on('pageerror', (err) => pageErrors.push(String(err.stack)));
      await de.goto(nr.url);
      await de.waitForSelector('#red-ui-header-button-deploy');
      await de.waitForSelector('#up');
      // With non-breaking hyphens: the palette breaks labels at '-' and shows them spaced out ("OTA - Update").
      await assertPalette(de, { 'ble-ota-upload': 'OTA\u2011Update', 'ble-ota-status': 'OTA\u2011Status', 'ble-ota-scan': 'OTA\u2011Scan' });
      await de.locator('.red-ui-palette-node[data-palette-type="ble-ota-upload"]').scrollIntoViewIfNeeded();
      await de.screenshot({ path: join(SHOTS, 'palette-de.png'), clip: { x: 0, y: 0, width: 400, height: 900 } });

      // The upload node's dialog.
      await de.locator('#up').dblclick();
      await de.waitForSelector('#node-input-confirm', { state: 'visible' });
      const label = (id: string) => de.locator(`label[for="${id}"]`).first().innerText();
      assert.equal((await label('node-input-device')).trim(), 'Gerät');
      assert.equal((await label('node-input-confirm')).trim(), 'Bestätigung');
      assert.equal((await label('node-input-skipSame')).trim(), 'Geräte überspringen, die diesen Build bereits ausführen');
      await de.click('#node-input-requireSignature');
      assert.deepEqual(await crampedLabels(de), []);

      // A new OTA device configuration: title, labels, Scan table.
      await de.click('#node-input-btn-device-add');
      await de.waitForSelector('#node-config-input-device', { state: 'visible' });
      assert.match((await de.locator('.red-ui-tray-titlebar').last().textContent()) ?? '', /Neuen Konfigurations-Node 'OTA-Gerät' hinzufügen$/);
      assert.equal((await label('node-config-input-scanTimeout')).trim(), 'Suchdauer');
      assert.equal((await label('node-config-input-operationTimeout')).trim(), 'Zeitlimit');
      assert.equal((await label('node-config-input-secret')).trim(), 'Geheimnis');
      assert.equal((await de.locator('#ble-ota-device-scan').innerText()).trim(), 'Suchen');
      await de.click('#node-config-input-backend + .red-ui-typedInput-container .red-ui-typedInput-option-trigger');
      assert.equal((await de.locator('.red-ui-typedInput-options a[value="virtual"]').innerText()).trim(), 'Virtueller ESP32 (ohne Hardware)');
      await de.click('.red-ui-typedInput-options a[value="virtual"]');
      assert.deepEqual(await crampedLabels(de), []);
      await de.click('#ble-ota-device-scan');
      const table = de.locator('#ble-ota-device-scan-table');
      const row = table.locator('tbody tr', { hasText: 'esp32-browser' });
      await row.waitFor({ timeout: 20_000 });
      assert.deepEqual(await table.locator('thead th').allTextContents(), ['Name', 'Adresse', 'Signal', 'Version']);
      assert.equal(await row.locator('td').nth(2).textContent(), 'unbekannt');
      const scanTime = de.locator('#node-config-input-scanTimeout');
      await scanTime.fill('-1');
      await scanTime.press('Tab');
      assert.match((await scanTime.getAttribute('class')) ?? '', /input-error/);
      assert.equal(await tooltipOf(de, scanTime), 'Suchdauer: Geben Sie eine Anzahl Sekunden von 1 bis 3600 an.');
      await de.screenshot({ path: join(SHOTS, 'device-de.png') });
      await de.click('#node-config-dialog-cancel');
      await de.click('#node-dialog-cancel');
      await assertOtherDialogsFit(de);

      // The help, as the sidebar shows it.
      await de.evaluate(() => (globalThis as unknown as { RED: { sidebar: { help: { show(type: string): void } } } }).RED.sidebar.help.show('ble-ota-upload'));
      await de.getByText('Aktualisiert die Firmware eines ESP32 über Bluetooth Low Energy', { exact: false }).first().waitFor({ timeout: 10_000 });
      await de.getByRole('heading', { name: 'Eingangsdaten' }).first().waitFor();
    } finally {
      await context.close();
    }
  });
});
