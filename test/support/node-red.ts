/**
 * node-red-node-test-helper with the types our tests use, and the package's
 * nodes as Node-RED loads them (from dist/, beside their editor HTML).
 */
import type { EventEmitter } from 'node:events';
import { sharedVirtualRadio } from '../../lib/virtual/virtual-radio';

export interface TestNode extends EventEmitter {
  id: string;
  receive(msg: Record<string, unknown>): void;
  status: ((s: unknown) => void) & { lastCall?: { args: unknown[] } };
}

export interface Helper {
  init(runtimePath: string): void;
  startServer(done: (err?: Error) => void): void;
  stopServer(done: (err?: Error) => void): void;
  load(nodes: unknown[], flow: unknown[], credentials: Record<string, unknown>, cb: () => void): void;
  load(nodes: unknown[], flow: unknown[], cb: () => void): void;
  unload(): Promise<void>;
  getNode(id: string): TestNode;
  /** supertest against the runtime's admin HTTP (the editor's endpoints). */
  request(): { get(path: string): Promise<{ status: number; body: any }> }; // eslint-disable-line @typescript-eslint/no-explicit-any -- a JSON body, asserted field by field by each test
}

// eslint-disable-next-line @typescript-eslint/no-require-imports
export const helper = require('node-red-node-test-helper') as Helper;
// BLE_OTA_NODE_RED: another Node-RED's runtime (test/node-red-5.test.ts runs these tests with Node-RED 5).
const runtime = process.env.BLE_OTA_NODE_RED ?? require.resolve('node-red');
helper.init(runtime);

/* eslint-disable @typescript-eslint/no-require-imports */
export const deviceNode = require('../../nodes/ble-ota-device/ble-ota-device') as unknown;
export const uploadNode = require('../../nodes/ble-ota-upload/ble-ota-upload') as unknown;
/** Node-RED's own Catch node, to receive what done(err) reports. */
export const catchNode = require(require.resolve('@node-red/nodes/core/common/25-catch.js', { paths: [runtime] })) as unknown;
/* eslint-enable @typescript-eslint/no-require-imports */

/**
 * The hooks of a suite whose flows run in the test helper's Node-RED and
 * reach the shared virtual radio: the server for the suite, each test's
 * flow unloaded after it, and the virtual devices stopped before the
 * server (the radio's failure reported, the server stopped all the same).
 */
export function useNodeRed(): void {
  before(function (done) {
    helper.startServer(done);
  });
  after(function (done) {
    sharedVirtualRadio()
      .stopAll()
      .then(
        () => helper.stopServer(done),
        (err: Error) => helper.stopServer(() => done(err)),
      );
  });
  afterEach(() => helper.unload());
}

/** The last status a node showed. */
export function lastStatus(node: TestNode): { fill?: string; shape?: string; text?: string } {
  return (node.status.lastCall?.args[0] ?? {}) as { fill?: string; shape?: string; text?: string };
}

type Msg = Record<string, unknown>;

/**
 * Sends msg into `node`; resolves with the first message `out` receives, or
 * with the Catch node's message (received by `errors`) for an error that
 * `node` reported: what a flow sees of one input.
 */
export function exchange(node: TestNode, msg: Msg, wires: { out: TestNode; errors: TestNode }): Promise<{ result?: Msg; error?: Msg }> {
  const { out, errors } = wires;
  return new Promise((resolve) => {
    const finish = (r: { result?: Msg; error?: Msg }) => {
      out.off('input', onResult);
      errors.off('input', onError);
      resolve(r);
    };
    const onResult = (m: Msg) => finish({ result: m });
    const onError = (m: Msg) => (m.error as { source?: { id?: string } } | undefined)?.source?.id === node.id && finish({ error: m });
    out.on('input', onResult);
    errors.on('input', onError);
    node.receive(msg);
  });
}
