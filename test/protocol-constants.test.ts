/**
 * The firmware (ble_ota_protocol.h) and the client (lib/protocol/constants.ts)
 * each define the on-air constants; they must agree. Every constant of the
 * header is compared with its TypeScript value, so one added on one side only
 * fails here; OTA Info's layout is compared field by field (offset, size,
 * type, the info_version that added it).
 */
import { strict as assert } from 'node:assert';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  ABANDON_TIMEOUT_MS,
  ANSWER,
  AttErrorCode,
  AUTH_FAILURES_MAX,
  AUTH_KEY_LEN,
  AUTH_LOCK_MIN_MS,
  AUTH_MAC_LEN,
  AUTH_NONCE_LEN,
  AUTH_TIMEOUT_MS,
  BEGIN_PATCH_SIZE,
  BEGIN_SIZE,
  BeginFlag,
  Command,
  Control,
  DEFLATE_CHUNK,
  DEVICE_ID_LEN,
  DEVICE_INFORMATION_UUID,
  DEVICE_KEY_LABEL,
  Event,
  Feature,
  FIRMWARE_REVISION_UUID,
  HELLO_SIZE,
  INFO_SIZE,
  INFO_SIZE_V1,
  INFO_SIZE_V2,
  INFO_VERSION,
  InfoFieldName,
  InfoLayout,
  InfoReserved,
  infoSize,
  KEY_MAGIC,
  KEY_RECORD_LEN,
  LAST_STATUS_NONE,
  LinkRequest,
  MAC_ANSWER,
  MAC_REQUEST,
  MANUFACTURER_NAME_UUID,
  MAX_ATTRIBUTE_VALUE,
  MAX_PACKET,
  MODEL_NUMBER_UUID,
  OPCODE_MAX,
  OTA_COMMAND_UUID,
  OTA_CONTROL_UUID,
  OTA_DATA_UUID,
  OTA_INFO_UUID,
  OTA_SERVICE_UUID,
  OTA_STREAM_UUID,
  Phy,
  PROTOCOL_VERSION,
  RESTART_DELAY_MS,
  RunningState,
  SESSION_LABEL,
  Status,
  STREAM_HEADER,
  TransferState,
  UpdateSlot,
} from '../lib/protocol/constants';
import { encodeBegin } from '../lib/protocol/v2-codec';
import { VirtualRadio } from '../lib/virtual/virtual-radio';

const include = join(__dirname, '../../firmware/components/ble_ota_core/include');
const header = readFileSync(join(include, 'ble_ota_protocol.h'), 'utf8');

interface Define {
  /** The value as written: a number, a string literal, a name or (a + b). */
  text: string;
  /** The comment on the same line, if any. */
  comment: string;
}

function definesOf(source: string): Map<string, Define> {
  const out = new Map<string, Define>();
  for (const m of source.matchAll(/^#define[ \t]+(\w+)(?:[ \t]+([^\n]*?))?[ \t]*(?:\/\*[ \t]*([^\n]*?)[ \t]*(?:\*\/)?)?$/gm)) {
    out.set(m[1], { text: (m[2] ?? '').trim(), comment: m[3] ?? '' });
  }
  return out;
}

const defines = definesOf(header);

/** A define's value: numbers (decimal or hex, an unsigned suffix allowed), strings, other defines and sums of them. */
function valueOf(name: string, seen: string[] = []): number | string {
  const d = defines.get(name);
  assert.ok(d, `${name} is defined in ble_ota_protocol.h`);
  assert.ok(!seen.includes(name), `${name} is not defined by itself`);
  return evaluate(d.text, [...seen, name]);
}

function evaluate(text: string, seen: string[]): number | string {
  const t = text.trim();
  if (/^".*"$/.test(t)) return t.slice(1, -1);
  if (/^\(.*\)$/.test(t)) return evaluate(t.slice(1, -1), seen);
  if (t.includes('+')) {
    return t.split('+').reduce<number>((sum, term) => {
      const v = evaluate(term, seen);
      assert.equal(typeof v, 'number', `${term} in ${text} is a number`);
      return sum + (v as number);
    }, 0);
  }
  if (/^(0x[0-9a-f]+|\d+)u?$/i.test(t)) return Number(t.replace(/u$/i, ''));
  if (/^BLE_OTA_\w+$/.test(t)) return valueOf(t, seen);
  throw new Error(`cannot read the value '${text}' of a define`);
}

/** What each define of the header is on the client's side. */
const expected = new Map<string, number | string>();
function group(prefix: string, values: Record<string, number>): void {
  for (const [name, value] of Object.entries(values)) expected.set(prefix + name, value);
}
const singles: Record<string, number | string> = {
  BLE_OTA_SERVICE_UUID: OTA_SERVICE_UUID,
  BLE_OTA_CONTROL_UUID: OTA_CONTROL_UUID,
  BLE_OTA_DATA_UUID: OTA_DATA_UUID,
  BLE_OTA_INFO_UUID: OTA_INFO_UUID,
  BLE_OTA_COMMAND_UUID: OTA_COMMAND_UUID,
  BLE_OTA_STREAM_UUID: OTA_STREAM_UUID,
  BLE_OTA_DEVICE_INFORMATION_UUID: DEVICE_INFORMATION_UUID,
  BLE_OTA_MANUFACTURER_NAME_UUID: MANUFACTURER_NAME_UUID,
  BLE_OTA_MODEL_NUMBER_UUID: MODEL_NUMBER_UUID,
  BLE_OTA_FIRMWARE_REVISION_UUID: FIRMWARE_REVISION_UUID,
  BLE_OTA_MAX_PACKET: MAX_PACKET,
  BLE_OTA_RESTART_DELAY_MS: RESTART_DELAY_MS,
  BLE_OTA_ABANDON_TIMEOUT_MS: ABANDON_TIMEOUT_MS,
  BLE_OTA_PROTOCOL_VERSION: PROTOCOL_VERSION,
  BLE_OTA_INFO_VERSION: INFO_VERSION,
  BLE_OTA_INFO_SIZE: INFO_SIZE,
  BLE_OTA_LAST_STATUS_NONE: LAST_STATUS_NONE,
  BLE_OTA_ANSWER: ANSWER,
  BLE_OTA_OPCODE_MAX: OPCODE_MAX,
  BLE_OTA_BEGIN_SIZE: BEGIN_SIZE,
  BLE_OTA_BEGIN_PATCH_SIZE: BEGIN_PATCH_SIZE,
  BLE_OTA_DEFLATE_CHUNK: DEFLATE_CHUNK,
  BLE_OTA_STREAM_HEADER: STREAM_HEADER,
  BLE_OTA_AUTH_KEY_LEN: AUTH_KEY_LEN,
  BLE_OTA_AUTH_NONCE_LEN: AUTH_NONCE_LEN,
  BLE_OTA_AUTH_MAC_LEN: AUTH_MAC_LEN,
  BLE_OTA_HELLO_SIZE: HELLO_SIZE,
  BLE_OTA_DEVICE_ID_LEN: DEVICE_ID_LEN,
  BLE_OTA_DEVICE_KEY_LABEL: DEVICE_KEY_LABEL,
  BLE_OTA_SESSION_LABEL: SESSION_LABEL,
  BLE_OTA_MAC_REQUEST: MAC_REQUEST,
  BLE_OTA_MAC_ANSWER: MAC_ANSWER,
  BLE_OTA_AUTH_FAILURES_MAX: AUTH_FAILURES_MAX,
  BLE_OTA_AUTH_TIMEOUT_MS: AUTH_TIMEOUT_MS,
  BLE_OTA_AUTH_LOCK_MIN_MS: AUTH_LOCK_MIN_MS,
};
for (const [name, value] of Object.entries(singles)) expected.set(name, value);
// The size of each older info_version: BLE_OTA_INFO_SIZE_V<n>, where its fields end.
const versionSizes = new Map<number, number>([[INFO_VERSION, INFO_SIZE]]);
for (const name of defines.keys()) {
  const v = /^BLE_OTA_INFO_SIZE_V(\d+)$/.exec(name);
  if (v) {
    expected.set(name, infoSize(Number(v[1])));
    versionSizes.set(Number(v[1]), valueOf(name) as number);
  }
}
const groups: Array<[string, Record<string, number>]> = [
  ['BLE_OTA_CTRL_', Control],
  ['BLE_OTA_ATT_ERR_', AttErrorCode],
  ['BLE_OTA_CMD_', Command],
  ['BLE_OTA_BEGIN_FLAG_', BeginFlag],
  ['BLE_OTA_EVT_', Event],
  ['BLE_OTA_ST_', Status],
  ['BLE_OTA_FEATURE_', Feature],
  ['BLE_OTA_RUNNING_', RunningState],
  ['BLE_OTA_UPDATE_SLOT_', UpdateSlot],
  ['BLE_OTA_TRANSFER_', TransferState],
];
for (const [prefix, values] of groups) group(prefix, values);
const fields = Object.entries(InfoLayout) as Array<[InfoFieldName, (typeof InfoLayout)[InfoFieldName]]>;
for (const [name, f] of fields) {
  expected.set(`BLE_OTA_INFO_OFF_${name}`, f.offset);
  // Integers take their size from their type; bytes and text have a length.
  if (f.type === 'bytes' || f.type === 'text') expected.set(`BLE_OTA_INFO_LEN_${name}`, f.size);
}

/** Defines the client has no use for, and why. */
const C_ONLY: Record<string, string> = {
  BLE_OTA_PROTOCOL_H: 'the include guard',
  BLE_OTA_FLASH_BLOCK: 'how the device writes flash; nothing on the air depends on it',
};

describe('protocol constants: C header and TypeScript agree', () => {
  it('every constant of the header has the same value in the client', () => {
    const missing: string[] = [];
    for (const name of defines.keys()) {
      if (name in C_ONLY) continue;
      if (!expected.has(name)) {
        missing.push(name);
        continue;
      }
      assert.equal(valueOf(name), expected.get(name), name);
    }
    assert.deepEqual(missing, [], 'constants of ble_ota_protocol.h the client does not define (or list in C_ONLY with a reason)');
    for (const name of Object.keys(C_ONLY)) assert.ok(defines.has(name), `${name} (C_ONLY) is still in the header`);
  });

  it('every constant the client compares is in the header', () => {
    const absent = [...expected.keys()].filter((name) => !defines.has(name));
    assert.deepEqual(absent, [], 'client constants without their define in ble_ota_protocol.h');
  });

  for (const [prefix, values] of groups) {
    it(`${prefix}*: the same names on both sides`, () => {
      const inHeader = [...defines.keys()].filter((n) => n.startsWith(prefix)).map((n) => n.slice(prefix.length));
      assert.deepEqual(inHeader.sort(), Object.keys(values).sort());
    });
  }

  it('BEGIN with PATCH: the base SHA-256 follows flags, 32 bytes more, and goes with the flag only', () => {
    assert.equal(defines.get('BLE_OTA_BEGIN_PATCH_SIZE')?.text, '(BLE_OTA_BEGIN_SIZE + 32)');
    const sha256 = Buffer.alloc(32, 0x11);
    const base = Buffer.alloc(32, 0x22);
    const flags = BeginFlag.DEFLATE | BeginFlag.PATCH;
    const begin = encodeBegin({ size: 0x12345, sha256, chipId: 5, flags, base });
    assert.equal(begin.length, BEGIN_PATCH_SIZE);
    assert.deepEqual(begin.subarray(0, BEGIN_SIZE), encodeBegin({ size: 0x12345, sha256, chipId: 5, flags: flags & ~BeginFlag.PATCH }).fill(flags, 39, 40));
    assert.ok(begin.subarray(BEGIN_SIZE).equals(base));
    assert.throws(() => encodeBegin({ size: 1, sha256, chipId: 5, flags }), /PATCH flag needs the base image's SHA-256/);
    assert.throws(() => encodeBegin({ size: 1, sha256, chipId: 5, flags: BeginFlag.DEFLATE, base }), /only with the PATCH flag/);
    assert.throws(() => encodeBegin({ size: 1, sha256, chipId: 5, flags, base: base.subarray(1) }), /32-byte SHA-256, not 31 bytes/);
  });

  it('the HELLO size is written as the opcode and a nonce', () => {
    assert.equal(defines.get('BLE_OTA_HELLO_SIZE')?.text, '(1 + BLE_OTA_AUTH_NONCE_LEN)');
    assert.equal(HELLO_SIZE, 1 + AUTH_NONCE_LEN);
  });

  describe('OTA Info layout, field by field', () => {
    /** A field as the header describes it: offset, size and how it is stored. */
    function cField(name: string): { offset: number; size: number; type: string } {
      const off = defines.get(`BLE_OTA_INFO_OFF_${name}`);
      assert.ok(off, `BLE_OTA_INFO_OFF_${name} is defined`);
      const offset = valueOf(`BLE_OTA_INFO_OFF_${name}`) as number;
      const int = /^(u8|u16|u32)\b/.exec(off.comment);
      const len = defines.has(`BLE_OTA_INFO_LEN_${name}`) ? (valueOf(`BLE_OTA_INFO_LEN_${name}`) as number) : undefined;
      if (int) {
        assert.equal(len, undefined, `${name} is an integer (${int[1]}) and has no length`);
        return { offset, size: { u8: 1, u16: 2, u32: 4 }[int[1] as 'u8' | 'u16' | 'u32'], type: int[1] };
      }
      assert.ok(len !== undefined, `${name}: its comment starts with its type (u8, u16, u32), or BLE_OTA_INFO_LEN_${name} gives its length`);
      return { offset, size: len, type: /^text\b/.test(off.comment) ? 'text' : 'bytes' };
    }

    it('the same fields on both sides', () => {
      const inHeader = [...defines.keys()].filter((n) => n.startsWith('BLE_OTA_INFO_OFF_')).map((n) => n.slice('BLE_OTA_INFO_OFF_'.length));
      assert.deepEqual(inHeader.sort(), Object.keys(InfoLayout).sort());
      const lengths = [...defines.keys()].filter((n) => n.startsWith('BLE_OTA_INFO_LEN_')).map((n) => n.slice('BLE_OTA_INFO_LEN_'.length));
      for (const name of lengths) assert.ok(name in InfoLayout, `BLE_OTA_INFO_LEN_${name} belongs to a field`);
    });

    for (const [name, f] of fields) {
      it(`${name}: offset ${f.offset}, ${f.size} bytes, ${f.type}, since info_version ${f.since}`, () => {
        assert.deepEqual(cField(name), { offset: f.offset, size: f.size, type: f.type });
        // The C header's version sizes: a field lies inside every version from its own on, outside the earlier ones.
        for (const [version, size] of versionSizes) {
          if (f.since <= version) assert.ok(f.offset + f.size <= size, `${name} lies within info_version ${version}'s ${size} bytes`);
          else assert.ok(f.offset >= size, `${name} lies after info_version ${version}'s ${size} bytes`);
        }
      });
    }

    it('fields and reserved bytes cover the value without gaps or overlaps, and versions only append', () => {
      const all = [...fields.map(([name, f]) => ({ name, ...f })), ...InfoReserved.map((r) => ({ name: `reserved@${r.offset}`, ...r }))];
      all.sort((a, b) => a.offset - b.offset);
      let end = 0;
      let since = 1;
      for (const f of all) {
        assert.equal(f.offset, end, `${f.name} starts where the previous field ends`);
        assert.ok(f.since >= since, `${f.name} (info_version ${f.since}) comes after the fields of info_version ${since}`);
        end = f.offset + f.size;
        since = f.since;
      }
      assert.equal(end, INFO_SIZE);
      for (let v = 1; v <= INFO_VERSION; v++) {
        assert.equal(
          infoSize(v),
          all.filter((f) => f.since <= v).reduce((e, f) => Math.max(e, f.offset + f.size), 0),
        );
      }
    });

    it("docs/PROTOCOL.md's OTA Info table: each field and reserved byte at its offset, with its size", () => {
      const doc = readFileSync(join(__dirname, '../../docs/PROTOCOL.md'), 'utf8');
      const section = doc.slice(doc.indexOf('### OTA Info'), doc.indexOf('###', doc.indexOf('### OTA Info') + 1));
      const rows = [...section.matchAll(/^\| (\d+) \| (\d+) \|/gm)].map((m) => `${m[1]}+${m[2]}`);
      const layout = [...fields.map(([, f]) => f), ...InfoReserved].sort((a, b) => a.offset - b.offset).map((f) => `${f.offset}+${f.size}`);
      assert.deepEqual(rows, layout);
      assert.match(section, new RegExp(`\\(${INFO_SIZE} bytes`), 'the size it gives');
    });

    it('the C header gives the size of every older info_version', () => {
      assert.deepEqual(
        [...versionSizes.keys()].sort((a, b) => a - b),
        Array.from({ length: INFO_VERSION }, (_, i) => i + 1),
      );
      assert.equal(INFO_SIZE_V1, versionSizes.get(1));
      assert.equal(INFO_SIZE_V2, versionSizes.get(2));
    });

    it('OTA Info fits one attribute value', () => {
      assert.ok(INFO_SIZE <= MAX_ATTRIBUTE_VALUE, `${INFO_SIZE} bytes, at most ${MAX_ATTRIBUTE_VALUE}`);
    });
  });

  it("docs/PROTOCOL.md's service table is the GATT table the firmware serves (ble_ota_gatt.h, as the virtual ESP32 announces it)", async function () {
    this.timeout(120_000);
    const doc = readFileSync(join(__dirname, '../../docs/PROTOCOL.md'), 'utf8');
    // | OTA Control | `7ad671aa-...` | read, write, notify | seed |
    const rows = [...doc.matchAll(/^\| [^|]+ \| `([0-9a-f-]{36})` \| ([a-z ,]+) \| (seed|v2) \|$/gm)].map((m) => ({
      uuid: m[1],
      properties: m[2].split(', ').map((p) => p.replace(/ /g, '-')),
      seed: m[3] === 'seed',
    }));
    assert.equal(rows.length, 5, 'the five OTA characteristics');
    const radio = new VirtualRadio();
    try {
      for (const protocol of ['v2', 'seed'] as const) {
        const device = await radio.addDevice({ name: `gatt-${protocol}`, protocol });
        const served = device.characteristics.filter((c) => c.service === OTA_SERVICE_UUID).map((c) => ({ uuid: c.uuid, properties: c.properties }));
        const documented = rows.filter((r) => protocol === 'v2' || r.seed).map((r) => ({ uuid: r.uuid, properties: r.properties }));
        assert.deepEqual(served, documented, `a device serving ${protocol === 'v2' ? 'both protocols' : 'the seed protocol only'}`);
        const dis = device.characteristics.filter((c) => c.service === DEVICE_INFORMATION_UUID).map((c) => c.uuid);
        const expectedDis = [MANUFACTURER_NAME_UUID, MODEL_NUMBER_UUID, ...(protocol === 'v2' ? [FIRMWARE_REVISION_UUID] : [])];
        assert.deepEqual(dis, expectedDis, 'Device Information');
      }
    } finally {
      await radio.stopAll();
    }
  });

  it('ble_ota_link.h: the PHY and link_request values OTA Info reports', () => {
    const link = readFileSync(join(include, 'ble_ota_link.h'), 'utf8');
    const linkDefines = definesOf(link);
    const phy: Record<string, number> = { UNKNOWN: Phy.UNKNOWN, '1M': Phy.LE_1M, '2M': Phy.LE_2M, CODED: Phy.LE_CODED };
    const inHeader = [...linkDefines.keys()].filter((n) => n.startsWith('BLE_OTA_PHY_'));
    assert.deepEqual(inHeader.map((n) => n.slice('BLE_OTA_PHY_'.length)).sort(), Object.keys(phy).sort());
    for (const [name, value] of Object.entries(phy)) assert.equal(Number(linkDefines.get(`BLE_OTA_PHY_${name}`)?.text), value, name);
    const profiles = [...link.matchAll(/^\s*BLE_OTA_LINK_(\w+)\s*=\s*(\d+)\s*,/gm)].map((m) => [m[1], Number(m[2])]);
    assert.deepEqual(Object.fromEntries(profiles), { ...LinkRequest });
  });

  it('ble_ota_core.h: the key record the CLI provisions', () => {
    const core = readFileSync(join(include, 'ble_ota_core.h'), 'utf8');
    assert.match(core, new RegExp(`#define\\s+BLE_OTA_KEY_RECORD_LEN\\s+${KEY_RECORD_LEN}\\b`));
    assert.match(core, new RegExp(`#define\\s+BLE_OTA_KEY_MAGIC\\s+"${KEY_MAGIC}"`));
  });
});
