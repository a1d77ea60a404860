/**
 * Property-based tests (fast-check) of the image parser and the protocol v2
 * codec: what holds for every input, not only the ones a test author thought of.
 */
import { strict as assert } from 'node:assert';
import fc from 'fast-check';
import { ImageError } from '../lib/errors';
import { buildAppImage } from '../lib/image/app-image-builder';
import { parseEspImage } from '../lib/image/esp-image';
import { validateImage } from '../lib/image/validate';
import { ANSWER, BEGIN_PATCH_SIZE, BEGIN_SIZE, BeginFlag, Command, Event, INFO_SIZE, INFO_SIZE_V1, INFO_SIZE_V2, INFO_SIZE_V3, STREAM_HEADER } from '../lib/protocol/constants';
import { decodeBeginAnswer, decodeInfo, decodeNotification, encodeBegin, encodeCommand, encodeStreamPacket } from '../lib/protocol/v2-codec';

/** Runs parse and validate; anything thrown must be an ImageError with a code and a message. */
function onlyImageErrors(data: Buffer): void {
  for (const check of [parseEspImage, validateImage]) {
    try {
      check(data);
    } catch (err) {
      assert.ok(err instanceof ImageError, `threw ${String(err)}`);
      assert.match(err.code, /^IMAGE_/);
      assert.ok(err.message.length > 20);
    }
  }
}

const base = buildAppImage({ size: 8 * 1024, seed: 5 });
const text = (max: number) => fc.string({ unit: fc.constantFrom(...'abcdefghijklmnopqrstuvwxyz0123456789.-_'), minLength: 1, maxLength: max });

describe('properties: the image parser', () => {
  it('never throws anything but an ImageError, for arbitrary bytes', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 4096 }), (bytes) => onlyImageErrors(Buffer.from(bytes))),
      { numRuns: 500 },
    );
  });

  it('never throws anything but an ImageError, for arbitrary bytes after an image header', () => {
    const header = fc.tuple(fc.integer({ min: 0, max: 20 }), fc.uint8Array({ minLength: 22, maxLength: 22 }), fc.uint8Array({ maxLength: 2048 }));
    fc.assert(
      fc.property(header, ([segments, rest, tail]) => onlyImageErrors(Buffer.concat([Buffer.from([0xe9, segments]), rest, tail]))),
      { numRuns: 500 },
    );
  });

  it('never throws anything but an ImageError, for a valid image with bytes changed or cut', () => {
    const change = fc.record({ at: fc.nat({ max: base.length - 1 }), value: fc.integer({ min: 0, max: 255 }) });
    fc.assert(
      fc.property(fc.array(change, { maxLength: 8 }), fc.nat({ max: base.length }), (changes, cut) => {
        const data = Buffer.from(base);
        for (const c of changes) data[c.at] = c.value;
        onlyImageErrors(data.subarray(0, Math.max(cut, 1)));
      }),
      { numRuns: 500 },
    );
  });

  it('reads back what the builder wrote, for any options', () => {
    const options = fc.record({
      chipId: fc.constantFrom(0, 5, 9, 12, 13, 16),
      size: fc.integer({ min: 400, max: 48 * 1024 }),
      seed: fc.nat(),
      projectName: text(31),
      version: text(31),
      idfVersion: text(31),
      secureVersion: fc.nat({ max: 0xffffffff }),
      hashAppended: fc.boolean(),
    });
    fc.assert(
      fc.property(options, (o) => {
        const image = buildAppImage(o);
        const parsed = validateImage(image);
        assert.equal(parsed.chipId, o.chipId);
        assert.equal(parsed.appDesc.projectName, o.projectName);
        assert.equal(parsed.appDesc.version, o.version);
        assert.equal(parsed.appDesc.idfVersion, o.idfVersion);
        assert.equal(parsed.appDesc.secureVersion, o.secureVersion);
        assert.equal(parsed.header.hashAppended, o.hashAppended);
        assert.equal(parsed.imageLength, image.length);
        assert.equal(parsed.trailingBytes, 0);
      }),
      { numRuns: 200 },
    );
  });
});

describe('properties: the protocol v2 codec', () => {
  const u32 = fc.nat({ max: 0xffffffff });

  it('BEGIN: every field where PROTOCOL.md puts it', () => {
    const req = fc.record({ size: u32, sha256: fc.uint8Array({ minLength: 32, maxLength: 32 }), chipId: fc.nat({ max: 0xffff }), flags: fc.nat({ max: 0xffff }) });
    fc.assert(
      fc.property(req, (r) => {
        // With PATCH, the base image's SHA-256 follows flags.
        const base = r.flags & BeginFlag.PATCH ? Buffer.from(r.sha256).reverse() : undefined;
        const b = encodeBegin({ ...r, sha256: Buffer.from(r.sha256), base });
        assert.equal(b.length, base ? BEGIN_PATCH_SIZE : BEGIN_SIZE);
        if (base) assert.ok(b.subarray(BEGIN_SIZE).equals(base));
        assert.equal(b[0], Command.BEGIN);
        assert.equal(b.readUInt32LE(1), r.size);
        assert.ok(b.subarray(5, 37).equals(Buffer.from(r.sha256)));
        assert.equal(b.readUInt16LE(37), r.chipId);
        assert.equal(b.readUInt16LE(39), r.flags);
      }),
    );
    fc.assert(
      fc.property(
        fc.uint8Array({ maxLength: 64 }).filter((a) => a.length !== 32),
        (sha) => {
          assert.throws(() => encodeBegin({ size: 1, sha256: Buffer.from(sha), chipId: 0, flags: 0 }), RangeError);
        },
      ),
    );
  });

  it('a stream packet carries its offset and its bytes', () => {
    fc.assert(
      fc.property(u32, fc.uint8Array({ maxLength: 600 }), (offset, data) => {
        const p = encodeStreamPacket(offset, Buffer.from(data));
        assert.equal(p.length, STREAM_HEADER + data.length);
        assert.equal(p.readUInt32LE(0), offset);
        assert.ok(p.subarray(STREAM_HEADER).equals(Buffer.from(data)));
      }),
    );
  });

  it('decodeNotification takes any bytes without throwing', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 64 }), (bytes) => {
        const n = decodeNotification(Buffer.from(bytes));
        assert.ok(['answer', 'ack', 'resync', 'failed', 'unknown'].includes(n.kind));
      }),
      { numRuns: 1000 },
    );
  });

  it('answers and events round-trip: what the device sends is what the client reads', () => {
    const answer = fc.record({ opcode: fc.nat({ max: 0x3f }), status: fc.nat({ max: 255 }), body: fc.uint8Array({ maxLength: 16 }) });
    fc.assert(
      fc.property(answer, (a) => {
        const n = decodeNotification(Buffer.concat([Buffer.from([a.opcode | ANSWER, a.status]), Buffer.from(a.body)]));
        assert.deepEqual(n, { kind: 'answer', opcode: a.opcode, status: a.status, body: Buffer.from(a.body) });
      }),
    );
    fc.assert(
      fc.property(fc.constantFrom(Event.ACK, Event.RESYNC), u32, (type, offset) => {
        const b = Buffer.alloc(5);
        b[0] = type;
        b.writeUInt32LE(offset, 1);
        assert.deepEqual(decodeNotification(b), { kind: type === Event.ACK ? 'ack' : 'resync', offset });
      }),
    );
    fc.assert(
      fc.property(fc.nat({ max: 255 }), u32, (status, offset) => {
        const b = Buffer.alloc(6);
        b[0] = Event.FAILED;
        b[1] = status;
        b.writeUInt32LE(offset, 2);
        assert.deepEqual(decodeNotification(b), { kind: 'failed', status, offset });
      }),
    );
  });

  it('a one-byte command is its opcode', () => {
    fc.assert(fc.property(fc.nat({ max: 255 }), (op) => assert.deepEqual([...encodeCommand(op)], [op])));
  });

  it('OTA Info and the BEGIN answer decode any long enough value, and refuse a short one with RangeError', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 320 }), (bytes) => {
        const value = Buffer.from(bytes);
        // info_version 1 is 220 bytes, version 2 260, version 3 276; from version 4 on, at least 312.
        const version = value.length === 0 ? 0 : value[0];
        const needed = version < 2 ? INFO_SIZE_V1 : version === 2 ? INFO_SIZE_V2 : version === 3 ? INFO_SIZE_V3 : INFO_SIZE;
        if (value.length >= needed) {
          const info = decodeInfo(value);
          assert.equal(info.transferOffset, value.readUInt32LE(20));
          assert.equal(info.app.elfSha256.length, 32);
          assert.equal(info.deviceId?.length, value[0] >= 2 ? 6 : undefined);
          assert.equal(info.link === undefined, value[0] < 3);
        } else {
          assert.throws(() => decodeInfo(value), RangeError);
        }
        if (value.length >= 8) {
          assert.deepEqual(decodeBeginAnswer(value), { offset: value.readUInt32LE(0), window: value.readUInt16LE(4), maxPacket: value.readUInt16LE(6) });
        } else {
          assert.throws(() => decodeBeginAnswer(value), RangeError);
        }
      }),
      { numRuns: 500 },
    );
  });
});
