/**
 * A real Node-RED seen through Debian's Chromium (driven by playwright-core),
 * for the suites that check what a user sees: the editor, the dashboard.
 * Without Chromium the suite is skipped, except on CI, where .ci/run
 * installs it and its absence is a failure.
 */
import { existsSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium, Browser, Page } from 'playwright-core';
import type { NodeRedProcess } from './node-red-process';

const CHROMIUM = '/usr/bin/chromium';

/** Where the suites put their screenshots. */
export const SHOTS = join(tmpdir(), 'ble-ota-browser');

/** What a suite's tests use, there once its before hook ran. */
export interface InChromium {
  readonly nr: NodeRedProcess;
  readonly browser: Browser;
  /** A page of the given size, nothing loaded yet. */
  readonly page: Page;
}

/**
 * Adds before and after hooks to the calling describe: start Node-RED as
 * `start` does, launch Chromium, open a page of `viewport`; afterwards close
 * both. The hooks' time counts against the suite's timeout.
 */
export function nodeRedInChromium(start: () => Promise<NodeRedProcess>, viewport: { width: number; height: number }): InChromium {
  let nr: NodeRedProcess | undefined;
  let browser: Browser | undefined;
  let page: Page | undefined;

  before(async function () {
    if (!existsSync(CHROMIUM)) {
      if (process.env.CI) throw new Error(`${CHROMIUM} is missing: .ci/run installs Debian's chromium`);
      this.skip();
    }
    mkdirSync(SHOTS, { recursive: true });
    nr = await start();
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      headless: true,
      args: ['--no-sandbox', '--disable-background-networking', '--disable-dev-shm-usage'],
    });
    page = await browser.newPage({ viewport });
  });

  after(async () => {
    await browser?.close();
    await nr?.stop();
  });

  const ready = <T>(value: T | undefined): T => {
    if (value === undefined) throw new Error('Node-RED and Chromium are not started: use them in tests, after the before hook');
    return value;
  };
  return {
    get nr() {
      return ready(nr);
    },
    get browser() {
      return ready(browser);
    },
    get page() {
      return ready(page);
    },
  };
}
