/**
 * Delta updates on the air (docs/PROTOCOL.md, *Delta updates*), request by
 * request through the client's v2 session: what a device with the DELTA
 * feature must do with BEGIN's PATCH flag and a patch stream, whatever
 * client sends them. The patches are lib/delta's; the stream is the DEFLATE
 * stream of the patch (lib/protocol/deflate-chunks.ts).
 */
import { strict as assert } from 'node:assert';
import { createHash } from 'node:crypto';
import { OtaConnection } from '../../lib/client/ota-client';
import { V2Session } from '../../lib/client/v2-session';
import { computePatch } from '../../lib/delta';
import { BeginFlag, Command, Feature, Status, TransferState } from '../../lib/protocol/constants';
import { DeflatedStream, encodeChunk } from '../../lib/protocol/deflate-chunks';
import { BeginRequest, DeviceInfoV2 } from '../../lib/protocol/v2-codec';
import { ConformanceTarget, connectV2, refused } from './v2-conformance';

const sha = (b: Buffer) => createHash('sha256').update(b).digest();

/** Defines the delta cases for the target setup() makes (in `before`). */
export function defineDeltaConformance(setup: () => Promise<ConformanceTarget>): void {
  describe('delta updates over the air', function () {
    let t: ConformanceTarget;
    let conn: OtaConnection | undefined;
    let v2: V2Session;
    let T: number;
    /** The image the device runs (installed by `before`), and the next one. */
    let base: Buffer;
    let next: Buffer;
    let patch: Buffer;

    const connect = async () => {
      ({ conn, v2 } = await connectV2(t));
    };
    const info = () => v2.readInfo();
    const beginPatch = (over: Partial<BeginRequest> = {}) =>
      v2.begin({ size: next.length, sha256: sha(next), chipId: base.readUInt16LE(12), flags: BeginFlag.DEFLATE | BeginFlag.PATCH, base: sha(base), ...over }, T);
    const send = async (stream: DeflatedStream, info: DeviceInfoV2, offset: number) => v2.stream(stream, 0, info.window, info.maxPacket, T, () => undefined, offset);

    before(async function () {
      this.timeout(120_000);
      t = await setup();
      T = t.requestMs;
      // A known image to patch from: installed in full (a client that keeps
      // the images it installed has it, as this one now does).
      base = t.image({ size: 48 * 1024, version: '8.1.0', seed: 81 });
      next = t.image({ size: 52 * 1024, version: '8.2.0', seed: 81 });
      patch = computePatch(base, next);
      assert.ok(patch.length > 4096, `a patch of several blocks (${patch.length} bytes)`);
      const r = await t.client.update({ target: t.target, image: base, secret: t.secret });
      assert.equal(r.runningVersion, '8.1.0');
    });
    beforeEach(connect);
    afterEach(async () => {
      await v2?.command(Command.ABORT, T).catch(() => undefined);
      await conn?.close();
      conn = undefined;
    });

    it('OTA Info offers DELTA and names the running image by its size and SHA-256', async () => {
      const i = await info();
      assert.ok(i.features & Feature.DELTA, 'the DELTA feature');
      assert.equal(i.runningSize, base.length);
      assert.deepEqual(i.runningSha256, sha(base));
    });

    it('BEGIN with PATCH: WRONG_BASE for another base, BAD_ARGUMENT without DEFLATE; nothing changes', async () => {
      await refused(beginPatch({ base: sha(next) }), Status.WRONG_BASE);
      await refused(beginPatch({ flags: BeginFlag.PATCH }), Status.BAD_ARGUMENT);
      const i = await info();
      assert.equal(i.transferState, TransferState.IDLE);
      assert.equal(i.runningSize, base.length);
    });

    it("a patch whose header is not for BEGIN's image fails BAD_DATA at its first chunk", async () => {
      const other = t.image({ size: 52 * 1024, version: '8.3.0', seed: 81 });
      const answer = await beginPatch({ size: other.length, sha256: sha(other) });
      assert.deepEqual([answer.offset, answer.imageOffset], [0, 0]);
      const i = await info();
      await assert.rejects(send(new DeflatedStream(patch, 0), i, 0), (err: Error & { code?: string }) => {
        assert.match(String(err.message), /BAD_DATA|0x11/, err.message);
        return true;
      });
      const after = await info();
      assert.equal(after.transferState, TransferState.IDLE);
      assert.equal(after.lastStatus, Status.BAD_DATA);
    });

    it('a patch goes on after a lost link from the patch block the device names, and installs the new image', async () => {
      const answer = await beginPatch();
      assert.deepEqual([answer.offset, answer.imageOffset], [0, 0]);
      // The first chunk and part of the second, then the link drops.
      const first = encodeChunk(patch, 0);
      const second = encodeChunk(patch, 1);
      const part = Buffer.concat([first, second.subarray(0, Math.floor(second.length / 2))]);
      const i = await info();
      const step = Math.min(i.maxPacket, (conn?.mtu ?? 23) - 3) - 4;
      for (let at = 0; at < part.length; at += step) v2.sendPacket(at, part.subarray(at, Math.min(at + step, part.length)));
      // Written without response: the device has taken them once OTA Info says so.
      const until = Date.now() + T;
      while ((await info()).transferOffset < part.length && Date.now() < until) await new Promise((resolve) => setTimeout(resolve, 20));
      assert.equal((await info()).transferOffset, part.length);
      await conn?.close();
      await connect();
      const resumed = await beginPatch();
      // The device had the first chunk whole: it goes on from the second block.
      assert.equal(resumed.offset, first.length);
      assert.equal(resumed.imageOffset, 4096);
      await send(new DeflatedStream(patch, resumed.imageOffset ?? 0), i, resumed.offset);
      await v2.command(Command.END, T);
      await v2.command(Command.RESTART, T);
      await conn?.close();
      conn = undefined;
      // The rebuilt image runs, and is the device's base from now on.
      const deadline = Date.now() + t.restartMs;
      for (;;) {
        try {
          await connect();
          const now = await info();
          if (now.app.version === '8.2.0') {
            assert.equal(now.runningSize, next.length);
            assert.deepEqual(now.runningSha256, sha(next));
            await v2.command(Command.CONFIRM, T).catch(() => undefined);
            break;
          }
          await (conn as OtaConnection | undefined)?.close();
        } catch (err) {
          if (Date.now() > deadline) throw err;
        }
        if (Date.now() > deadline) assert.fail('the device did not come back with the new image');
        await new Promise((resolve) => setTimeout(resolve, 200));
      }
    });
  });
}
