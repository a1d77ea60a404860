/**
 * The dashboard example (examples/dashboard-fleet-progress.json) as a user
 * runs it: imported into a real Node-RED that has this package and Node-RED
 * Dashboard 2 (the development dependency, loaded through nodesDir as an
 * installed module would be), against the virtual devices its device node
 * declares. Debian's Chromium opens the page, clicks Update all and watches
 * each device's progress bar move, the version change and the result
 * appear; then updates one device and cancels it. The mid-update screenshot
 * goes to the OS temp folder (ble-ota-browser/dashboard-uploading.png);
 * docs/images/dashboard-uploading.png is one of them.
 */
import { strict as assert } from 'node:assert';
import { readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import type { Page } from 'playwright-core';
import { nodeRedInChromium, SHOTS } from './support/chromium';
import { NodeRedProcess, ROOT } from './support/node-red-process';

const EXAMPLE = join(ROOT, 'examples/dashboard-fleet-progress.json');
const DASHBOARD = join(ROOT, 'node_modules/@flowfuse/node-red-dashboard');
const DEVICES = ['esp32-lab-1', 'esp32-lab-2', 'esp32-lab-3'];

/** What the page shows for one device. */
interface Row {
  device: string;
  percent: number | null;
  state: string;
  version: string;
  result: string;
  failed: boolean;
}

/** Every value each device's progress bar took, as the page showed it. */
type Seen = Record<string, number[]>;

// The page's side, typed here as far as it is used (the project compiles without the DOM library).
interface PageElement {
  getAttribute(name: string): string | null;
  querySelector(selector: string): PageElement | null;
  readonly textContent: string | null;
  readonly classList: { contains(name: string): boolean };
}
declare const window: { __seen: Seen };
declare const document: { querySelectorAll(selector: string): Iterable<PageElement>; body: unknown };
declare const MutationObserver: new (callback: () => void) => { observe(target: unknown, options: object): void };

async function rows(page: Page): Promise<Row[]> {
  return page.$$eval('tr[data-device]', (trs: PageElement[]) =>
    trs.map((tr) => {
      const bar = tr.querySelector('[role=progressbar]');
      const value = bar?.getAttribute('aria-valuenow');
      const result = tr.querySelector('.ota-result');
      return {
        device: tr.getAttribute('data-device') ?? '',
        percent: value == null ? null : Number(value),
        state: tr.querySelector('.ota-state')?.textContent?.trim() ?? '',
        version: tr.querySelector('.ota-version')?.textContent?.trim() ?? '',
        result: result?.textContent?.trim() ?? '',
        failed: result?.classList.contains('text-error') ?? false,
      };
    }),
  );
}

/** Waits until the rows satisfy `ok`; fails with what the page showed last. */
async function rowsUntil(page: Page, ok: (rows: Row[]) => boolean, what: string, timeoutMs = 90_000): Promise<Row[]> {
  const until = Date.now() + timeoutMs;
  let last: Row[] = [];
  while (Date.now() < until) {
    last = await rows(page);
    if (ok(last)) return last;
    await new Promise((r) => setTimeout(r, 100));
  }
  assert.fail(`${what}: the page shows ${JSON.stringify(last)}`);
}

/** Records every value of every device's progress bar from now on (a DOM observer, so none is missed between polls). */
async function recordProgress(page: Page): Promise<void> {
  await page.evaluate(() => {
    const seen: Seen = {};
    window.__seen = seen;
    const read = () => {
      for (const tr of document.querySelectorAll('tr[data-device]')) {
        const value = tr.querySelector('[role=progressbar]')?.getAttribute('aria-valuenow');
        if (value == null) continue;
        const list = (seen[tr.getAttribute('data-device') ?? ''] ??= []);
        if (list[list.length - 1] !== Number(value)) list.push(Number(value));
      }
    };
    read();
    new MutationObserver(read).observe(document.body, { subtree: true, childList: true, attributes: true, attributeFilter: ['aria-valuenow'] });
  });
}

/** Waits until the device's bar has shown a value strictly between 0 and 100: the update is under way. */
async function midUpdate(page: Page, device: string): Promise<number> {
  const handle = await page.waitForFunction((d) => window.__seen[d]?.find((v) => v > 0 && v < 100), device, { timeout: 90_000, polling: 50 });
  return (await handle.jsonValue()) as number;
}

describe('the dashboard example in Chromium (Node-RED Dashboard 2)', function () {
  this.timeout(240_000);
  const ui = nodeRedInChromium(
    async () => {
      const flow = JSON.parse(readFileSync(EXAMPLE, 'utf8')) as Array<Record<string, unknown>>;
      // As imported: no image file, no environment; the device node declares the devices.
      const nr = await NodeRedProcess.start(flow, `nodesDir: [${JSON.stringify(DASHBOARD)}],`);
      await nr.waitForOutput(/\[ui-base:[^\]]*\] Node-RED Dashboard 2\.0 .* started at \/dashboard/, 10_000);
      return nr;
    },
    { width: 1000, height: 480 },
  );

  it('lists the devices the scan found, with the version each runs', async () => {
    const { nr, page } = ui;
    await page.goto(`${nr.url}/dashboard/fleet-ota`);
    const found = await rowsUntil(page, (r) => r.length === DEVICES.length, 'three devices listed after the scan at deploy', 60_000);
    assert.deepEqual(
      found.map((r) => [r.device, r.version, r.percent, r.result]),
      DEVICES.map((d) => [d, '1.0.0', 0, '']),
    );
  });

  it('Update all: each bar moves while its device updates, one device at a time; then the new version and "confirmed"', async () => {
    const { nr, page } = ui;
    await recordProgress(page);
    await page.getByRole('button', { name: 'Update all' }).click();

    const value = await midUpdate(page, 'esp32-lab-1');
    const now = await rows(page);
    assert.ok(value > 0 && value < 100, `esp32-lab-1 at ${value} %`);
    // One radio: the others wait their turn.
    const lab3 = now.find((r) => r.device === 'esp32-lab-3');
    assert.deepEqual([lab3?.percent, lab3?.state], [0, 'queued'], JSON.stringify(now));

    // The picture for the README: one device done, one under way, one waiting. Taken
    // once the second device's bar has moved; a little further along when the page shows that in time.
    await midUpdate(page, 'esp32-lab-2');
    await page.waitForFunction(() => window.__seen['esp32-lab-2']?.some((v) => v >= 30 && v <= 70), undefined, { timeout: 5000, polling: 50 }).catch(() => undefined);
    await page
      .locator('.v-card', { has: page.locator('table.ota-devices') })
      .first()
      .screenshot({ path: join(SHOTS, 'dashboard-uploading.png') });

    const done = await rowsUntil(page, (r) => r.length === 3 && r.every((x) => /^confirmed/.test(x.result)), 'every device confirmed');
    for (const row of done) {
      assert.equal(row.version, '1.1.0', row.device);
      assert.equal(row.percent, 100, row.device);
      assert.match(row.result, /^confirmed 1\.1\.0 in \d+\.\d s$/, row.device);
      assert.equal(row.failed, false, row.device);
    }
    const seen = await page.evaluate(() => window.__seen);
    for (const device of DEVICES) {
      const values = seen[device] ?? [];
      assert.ok(
        values.some((v) => v > 0 && v < 100),
        `${device}'s bar moved through the update: ${JSON.stringify(values)}`,
      );
      assert.equal(values[values.length - 1], 100, device);
      assert.deepEqual(
        values,
        [...values].sort((a, b) => a - b),
        `${device}'s bar only went forward: ${JSON.stringify(values)}`,
      );
    }
    // Through the upload node too: each device runs the image, confirmed.
    for (const device of DEVICES) assert.match(nr.output, new RegExp(`updated ${device} to dashboard-demo 1\\.1\\.0 in [\\d.]+ s \\(v2, confirmed`));
  });

  it("one device's Update, then Cancel: that row says it was cancelled, in red, and keeps its version", async () => {
    const { nr, page } = ui;
    // The next sample version would go as a patch against the one each device runs, from the
    // upload node's image cache, and end in a moment; without the cache it goes whole, for
    // seconds on these slow links: time to press Cancel.
    rmSync(join(nr.userDir, 'ble-ota-cache'), { recursive: true, force: true });
    await recordProgress(page);
    await page.locator('tr[data-device="esp32-lab-2"]').getByRole('button', { name: 'Update' }).click();
    await midUpdate(page, 'esp32-lab-2');
    await page.getByRole('button', { name: 'Cancel' }).click();

    const after = await rowsUntil(page, (r) => /^cancelled: /.test(r.find((x) => x.device === 'esp32-lab-2')?.result ?? ''), 'esp32-lab-2 cancelled');
    const lab2 = after.find((r) => r.device === 'esp32-lab-2')!;
    assert.equal(lab2.failed, true, 'shown as a failure');
    assert.equal(lab2.version, '1.1.0', 'still runs what it ran');
    assert.match(lab2.result, /^cancelled: \S.*\.$/, 'the reason, as a sentence');
    for (const other of after.filter((r) => r.device !== 'esp32-lab-2')) {
      assert.match(other.result, /^confirmed 1\.1\.0/, `${other.device} untouched`);
    }
    await page.screenshot({ path: join(SHOTS, 'dashboard-cancelled.png') });
  });
});
