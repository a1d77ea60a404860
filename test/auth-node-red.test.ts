/**
 * The fleet secret in a real Node-RED: entered as the device node's
 * credential (through the admin API, as the editor's Deploy sends it), it
 * updates a virtual ESP32 provisioned from it; another or a missing secret
 * fails with its code; and neither the secret nor any device key derived
 * from it appears where a user or an attacker could read it: not in the
 * flow file, the credentials file (encrypted), the flows the editor and
 * exports get, the runtime log, or any message.
 */
import { strict as assert } from 'node:assert';
import { randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { deviceKey, parseDeviceId } from '../lib/client/session';
import { addressFromName } from '../lib/virtual/virtual-device';
import { NodeRedProcess, waitForText } from './support/node-red-process';
import { OWNER, ownedVirtualEnv, signedImage } from './support/owner';

const KEY = OWNER.secret;
const WRONG = randomBytes(32).toString('hex');

/** inject -> file in -> upload -> debug (whole messages, to the log), for one device node. */
function chain(prefix: string, deviceNode: string): Array<Record<string, unknown>> {
  return [
    { id: `${prefix}1`, type: 'inject', z: 'tab1', props: [], wires: [[`${prefix}2`]] },
    { id: `${prefix}2`, type: 'file in', z: 'tab1', filename: 'firmware/app.bin', filenameType: 'str', format: '', encoding: 'none', wires: [[`${prefix}3`]] },
    { id: `${prefix}3`, type: 'ble-ota-upload', z: 'tab1', device: deviceNode, wires: [[`${prefix}4`], [`${prefix}4`]] },
    { id: `${prefix}4`, type: 'debug', z: 'tab1', name: `${prefix}-out`, active: true, tosidebar: true, console: true, complete: 'true', wires: [] },
    { id: `${prefix}5`, type: 'catch', z: 'tab1', scope: [`${prefix}3`], wires: [[`${prefix}4`]] },
  ];
}

describe('the fleet secret in a real Node-RED', function () {
  this.timeout(120_000);
  let nr: NodeRedProcess;
  after(() => nr?.stop());

  it('updates with the right secret, fails with AUTH_FAILED / AUTH_REQUIRED otherwise, and never shows a key', async () => {
    // Every virtual device of this Node-RED is provisioned from the owner's
    // secret and takes only the owner's signed images; the credentials
    // file is encrypted, as Node-RED does by default.
    nr = await NodeRedProcess.start([], "credentialSecret: 'test-credential-secret'", ownedVirtualEnv());
    mkdirSync(join(nr.userDir, 'firmware'), { recursive: true });
    writeFileSync(join(nr.userDir, 'firmware/app.bin'), signedImage({ projectName: 'keyed-app', version: '4.0.0', size: 80_000 }));

    const device = (id: string, name: string, key?: string) => ({
      id,
      type: 'ble-ota-device',
      device: name,
      backend: 'virtual',
      virtualDevices: name,
      scanTimeout: 5,
      operationTimeout: 5,
      ...(key === undefined ? {} : { credentials: { secret: key } }),
    });
    const from = nr.output.length;
    await nr.deploy([
      device('dev-right', 'keyed-a', KEY),
      device('dev-wrong', 'keyed-b', WRONG),
      device('dev-none', 'keyed-c'),
      ...chain('right', 'dev-right'),
      ...chain('wrong', 'dev-wrong'),
      ...chain('none', 'dev-none'),
    ]);

    await nr.inject('right1');
    await nr.waitForOutput(/runningVersion: '4\.0\.0'/, 60_000, from);
    await nr.waitForOutput(/authenticated: true/, 5_000, from);
    await nr.inject('wrong1');
    await nr.waitForOutput(/AUTH_FAILED/, 30_000, from);
    await nr.inject('none1');
    await nr.waitForOutput(/AUTH_REQUIRED/, 30_000, from);

    // The editor (and an export) gets the flows without the key's value.
    const exported = await (await fetch(`${nr.url}/flows`)).text();
    assert.ok(exported.includes('dev-right'));
    const creds = (await (await fetch(`${nr.url}/credentials/ble-ota-device/dev-right`)).json()) as Record<string, unknown>;
    assert.equal(creds.has_secret, true, 'the editor is told a secret is set');
    assert.equal(creds.secret, undefined, 'but not the secret');

    const places: Record<string, string> = {
      'flows.json': readFileSync(join(nr.userDir, 'flows.json'), 'utf8'),
      'flows_cred.json': readFileSync(join(nr.userDir, 'flows_cred.json'), 'utf8'),
      'the flows the editor and exports get': exported,
      'the credentials the editor gets': JSON.stringify(creds),
      'the runtime log and every message (debug to console)': nr.output,
    };
    assert.match(places['the runtime log and every message (debug to console)'], /right-out/, 'messages are in the log');
    // The keys the devices hold, derived from the secrets: in none of these places either.
    const derived = ['keyed-a', 'keyed-b', 'keyed-c'].flatMap((name) =>
      [KEY, WRONG].map((s) => deviceKey(Buffer.from(s, 'hex'), parseDeviceId(addressFromName(name))).toString('hex')),
    );
    for (const [where, text] of Object.entries(places)) {
      for (const key of [KEY, WRONG, ...derived]) {
        assert.ok(!text.toLowerCase().includes(key), `a key appears in ${where}`);
        assert.ok(!text.includes(Buffer.from(key, 'hex').toString('base64')), `a key appears (base64) in ${where}`);
      }
    }
    // What the log shows instead: the codes, with what to do.
    await waitForText(() => nr.output, /provisioned with another secret/, 1000);
  });
});
