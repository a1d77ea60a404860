/**
 * The docs and comments stay true to the code: every error code has its row
 * in the troubleshooting table; every repository path, file and section a
 * doc or a source comment cites exists; nothing cites what a reader of the
 * repository cannot open (issue numbers, files beside the clone); and the
 * figures the code defines (OTA Info's size and layout, packet and request
 * sizes, the core's RAM) are stated as the code and the host build have them.
 */
import { strict as assert } from 'node:assert';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, normalize } from 'node:path';
import {
  AUTH_MAC_LEN,
  BEGIN_PATCH_SIZE,
  BEGIN_SIZE,
  DEFLATE_CHUNK,
  INFO_SIZE,
  INFO_SIZE_V1,
  INFO_SIZE_V2,
  INFO_SIZE_V3,
  InfoLayout,
  InfoReserved,
  MAX_PACKET,
} from '../lib/protocol/constants';
import { ROOT } from './support/node-red-process';

const SELF = 'test/docs.test.ts';

/** The repository's files as git sees them (tracked, and new ones not ignored). */
const FILES = execFileSync('git', ['ls-files', '--cached', '--others', '--exclude-standard'], { cwd: ROOT, encoding: 'utf8' })
  .split('\n')
  .filter((f) => f !== '' && existsSync(join(ROOT, f)));
const DIRS = new Set(
  FILES.flatMap((f) =>
    f
      .split('/')
      .slice(0, -1)
      .map((_, i, parts) => parts.slice(0, i + 1).join('/')),
  ),
);
const BASENAMES = new Set(FILES.map((f) => f.slice(f.lastIndexOf('/') + 1)));
const TOP_DIRS = [...new Set(FILES.filter((f) => f.includes('/')).map((f) => f.slice(0, f.indexOf('/'))))];

const read = (file: string) => readFileSync(join(ROOT, file), 'utf8');

const DOC = /\.(md|html)$/;
const SOURCE = /\.(ts|js|c|h)$/;
const HASH_COMMENTED = /(^|\/)(Makefile|CMakeLists\.txt|Kconfig\.projbuild|sdkconfig\.defaults[^/]*|[^/]+\.cmake)$/;

/** What of a file is prose a reader follows: a doc whole, an example flow's info texts, a source's comments. */
function prose(file: string): string {
  let found = proseOf.get(file);
  if (found === undefined) proseOf.set(file, (found = proseUncached(file)));
  return found;
}
const proseOf = new Map<string, string>();

function proseUncached(file: string): string {
  const text = read(file);
  if (SOURCE.test(file)) {
    // Block comments, and line comments that start a line or follow code (not the // of a URL).
    return [...text.matchAll(/\/\*[\s\S]*?\*\/|(?:^|[\s;,{}()])\/\/[^\n]*/gm)].map((m) => m[0]).join('\n');
  }
  if (HASH_COMMENTED.test(file)) return [...text.matchAll(/(?:^|\s)#[^\n]*/gm)].map((m) => m[0]).join('\n');
  // An example flow's prose is its nodes' info texts (the rest is configuration: URLs, templates).
  if (file.endsWith('.json')) return (JSON.parse(text) as Array<{ info?: unknown }>).flatMap((n) => (typeof n.info === 'string' ? [n.info] : [])).join('\n');
  return text;
}

/** Every file whose prose the checks read: docs, help and editor HTML, examples, and the comments of every source. */
const CITING = FILES.filter(
  (f) =>
    f !== SELF &&
    !f.startsWith('bench/results/') &&
    !f.startsWith('firmware/host/fuzz_corpus/') &&
    f !== 'package-lock.json' &&
    (DOC.test(f) || SOURCE.test(f) || HASH_COMMENTED.test(f) || /^examples\/.*\.json$/.test(f)),
);

interface Citation {
  file: string;
  /** Its line in the file, for the message. */
  line: number;
  /** What pattern's first group matched. */
  text: string;
  /** The line of prose it stands in. */
  context: string;
}

/** Every match of pattern in the prose of every citing file. */
function citations(pattern: RegExp): Citation[] {
  const out: Citation[] = [];
  for (const file of CITING) {
    const text = prose(file);
    const full = read(file);
    for (const m of text.matchAll(pattern)) {
      const start = text.lastIndexOf('\n', m.index) + 1;
      const end = text.indexOf('\n', m.index);
      const context = text.slice(start, end < 0 ? undefined : end);
      const at = full.indexOf(context);
      out.push({ file, line: at < 0 ? 0 : full.slice(0, at).split('\n').length, text: m[1], context });
    }
  }
  return out;
}

const where = (c: Citation) => `${c.file}:${c.line}: ${c.text}`;

/** A glob of * and [..] as a regular expression over repository paths. */
function globRegExp(glob: string): RegExp {
  const escaped = glob.replace(/[.+^${}()|\\]/g, '\\$&').replace(/\*/g, '[^/]*');
  return new RegExp(`^${escaped}/?$`);
}

function inRepository(path: string): boolean {
  const p = path.replace(/\/$/, '');
  if (/[*[]/.test(p)) {
    const re = globRegExp(p);
    return FILES.some((f) => re.test(f)) || [...DIRS].some((d) => re.test(d));
  }
  return FILES.includes(p) || DIRS.has(p);
}

/** The package a path in the same sentence names (noble's and bleno's own files are cited as theirs). */
function inCitedPackage(path: string, context: string): boolean {
  return ['noble', 'bleno'].some((pkg) => new RegExp(`\\b${pkg}\\b`).test(context) && existsSync(join(ROOT, 'node_modules/@abandonware', pkg, path)));
}

/** A heading's anchor as GitHub makes it. */
function slug(heading: string): string {
  return heading
    .trim()
    .toLowerCase()
    .replace(/[^\p{L}\p{N} _-]/gu, '')
    .replace(/ /g, '-');
}

function headings(file: string): string[] {
  const outsideCode = read(file).replace(/^```[\s\S]*?^```/gm, '');
  return [...outsideCode.matchAll(/^#{1,6} +(.+?) *$/gm)].map((m) => m[1].replace(/[`*]/g, ''));
}

/** A section title as cited names a heading: the same, or the heading with a parenthesis after it ("OTA Info" for "OTA Info (read)"). */
function hasSection(file: string, title: string): boolean {
  const t = title.toLowerCase();
  return headings(file).some((h) => h.toLowerCase() === t || h.toLowerCase().startsWith(`${t} (`));
}

function cDefine(file: string, name: string): number {
  const m = new RegExp(`#define\\s+${name}\\s+(0x[0-9a-fA-F]+|\\d+)u?\\b`).exec(read(file));
  assert.ok(m, `${name} is defined in ${file}`);
  return Number(m[1]);
}

/** Every match of pattern in file (at least one: a claim the test looks for must still be there). */
function stated(file: string, pattern: RegExp): RegExpMatchArray[] {
  const found = [...read(file).matchAll(pattern)];
  assert.ok(found.length > 0, `${file} no longer says ${pattern}: find where it states the figure now and update the pattern`);
  return found;
}

describe('docs', () => {
  it('docs/TROUBLESHOOTING.md has a row for every error code', () => {
    const errors = read('lib/errors.ts');
    const union = /export type BleOtaErrorCode =([^;]+);/.exec(errors);
    assert.ok(union, 'the error code union is in lib/errors.ts');
    const codes = [...union[1].matchAll(/'([A-Z0-9_]+)'/g)].map((m) => m[1]);
    assert.ok(codes.length > 20);
    const table = read('docs/TROUBLESHOOTING.md');
    const missing = codes.filter((code) => !table.includes(`| \`${code}\` |`));
    assert.deepEqual(missing, []);
  });

  it('reads the prose of every doc and source', () => {
    for (const dir of ['docs', 'lib', 'nodes', 'firmware', 'test', 'bench', 'scripts', 'examples']) {
      assert.ok(
        CITING.some((f) => f.startsWith(`${dir}/`)),
        `${dir}/ is read`,
      );
    }
    assert.ok(CITING.includes('README.md') && CITING.includes('firmware/components/ble_ota_core/include/ble_ota_core.h'));
  });

  it('every repository path a doc or comment cites exists', () => {
    // A path from the repository's root (or, in a doc, from the doc's folder): docs/PROTOCOL.md,
    // firmware/main/*.c, firmware/host/host_flash.[ch]. Images a user provides (*.bin) are not ours.
    const path = new RegExp(
      `(?<![\\w.@/-])((?:\\.\\./)*(?:${TOP_DIRS.map((d) => d.replace(/\./g, '\\.')).join('|')})/(?:[\\w./*-]|\\[\\w+\\])*(?:\\w|\\/\\*|\\[\\w+\\])\\/?)`,
      'g',
    );
    const cited = citations(path);
    const missing = cited.filter((c) => {
      const p = normalize(c.text);
      return !p.endsWith('.bin') && !inRepository(p) && !inRepository(normalize(join(dirname(c.file), c.text))) && !inCitedPackage(c.text, c.context);
    });
    assert.ok(cited.length > 200, `${cited.length} paths cited`);
    assert.deepEqual(missing.map(where), []);
  });

  it('every file a doc or comment names exists, or is ESP-IDF’s or NimBLE’s', () => {
    // A bare file name (ota_task.c, link.ts, PROTOCOL.md) is ours unless ESP-IDF's (esp_*, soc*, spi_flash*) or NimBLE's (ble_* not ble_ota_*).
    const named = citations(/(?<![\w./@-])([A-Za-z_][\w-]*\.(?:c|h|ts|md))(?![\w/])/g);
    assert.ok(named.length > 100);
    const external = /^(esp_|soc|spi_flash|ble_(?!ota_))/;
    assert.deepEqual(named.filter((c) => !BASENAMES.has(c.text) && !external.test(c.text)).map(where), []);
  });

  it('every section a doc or comment cites exists', () => {
    const missing: string[] = [];
    let checked = 0;
    const docPath = (from: string, cited: string) => [cited, normalize(join(dirname(from), cited)), `docs/${cited}`].find((p) => FILES.includes(p));

    // "docs/PROTOCOL.md, *The link*" and "docs/PROTOCOL.md,\n * "Authentication"" (across a comment's lines).
    for (const file of CITING) {
      for (const m of prose(file).matchAll(/([\w./-]+\.md)(?:,\s*(?:(?:\*|\/\/|#)\s+)*|\s+section\s+)(?:\*([^*\n]+)\*|"([^"\n]+)")/g)) {
        const doc = docPath(file, m[1]);
        const title = m[2] ?? m[3];
        checked++;
        if (!doc || !hasSection(doc, title)) missing.push(`${file}: ${m[1]}, "${title}"`);
      }
    }
    // Markdown links with an anchor: [..](PROTOCOL.md#resume), [..](#errors).
    for (const file of CITING.filter((f) => f.endsWith('.md'))) {
      for (const m of read(file).matchAll(/\]\(([^)#\s]*)#([^)\s]+)\)/g)) {
        if (/^[a-z]+:/.test(m[1])) continue;
        const doc = m[1] === '' ? file : docPath(file, m[1]);
        checked++;
        if (!doc || !headings(doc).some((h) => slug(h) === m[2])) missing.push(`${file}: ${m[1]}#${m[2]}`);
      }
      // "see *Compression*": a section of the same doc.
      for (const m of read(file).matchAll(/\bsee \*([^*\n]+)\*/g)) {
        checked++;
        if (!hasSection(file, m[1])) missing.push(`${file}: see *${m[1]}*`);
      }
    }
    assert.ok(checked > 30, `${checked} section citations`);
    assert.deepEqual(missing, []);
  });

  it('cites nothing a reader of the repository cannot open: no issue numbers, no files beside the clone', () => {
    const found = [
      ...citations(/\b((?:issues?|item|PR|pull request)\s+#?\d+)/gi),
      ...citations(/\b((?:REFERENCE|STYLE)\.md)/g),
      // Beside the clone there is only the optional esptool fixtures folder (its tests skip without it).
      ...citations(/((?:\.\.\/)+shared\/(?!fixtures\b)[\w./-]*)/g),
    ];
    assert.deepEqual(found.map(where), []);
  });

  it('every Markdown link to a file points at one that exists', () => {
    const links = CITING.filter((f) => f.endsWith('.md')).flatMap((file) =>
      [...read(file).matchAll(/\]\(([^)#\s]+)(?:#[^)\s]*)?\)/g)]
        .map((m) => m[1])
        .filter((l) => !/^[a-z]+:/.test(l))
        .map((l) => ({ file, link: l, path: normalize(join(dirname(file), l)) })),
    );
    assert.ok(links.length > 20, `${links.length} links`);
    assert.deepEqual(
      links.filter((l) => !inRepository(l.path)).map((l) => `${l.file}: ${l.link}`),
      [],
    );
  });

  describe('figures the code defines', () => {
    it('OTA Info: its size in every doc that states it, and the field each row of PROTOCOL.md’s table names', () => {
      const numbers = (m: RegExpMatchArray) => m.slice(1).map(Number);
      for (const m of stated('docs/PROTOCOL.md', /\(3: the first (\d+) bytes only; 2: the first (\d+) bytes only; 1: the first (\d+)\)/g))
        assert.deepEqual(numbers(m), [INFO_SIZE_V3, INFO_SIZE_V2, INFO_SIZE_V1]);
      for (const m of stated('docs/PROTOCOL.md', /Bytes (\d+) to (\d+) \(info_version 3\)/g)) assert.deepEqual(numbers(m), [INFO_SIZE_V2, INFO_SIZE_V3 - 1]);
      for (const m of stated('docs/PROTOCOL.md', /Bytes (\d+) to (\d+) \(info_version 4\)/g)) assert.deepEqual(numbers(m), [INFO_SIZE_V3, INFO_SIZE - 1]);
      for (const m of stated('docs/PROTOCOL.md', /info_version 2 reads the first (\d+) bytes/g)) assert.deepEqual(numbers(m), [INFO_SIZE_V2]);
      for (const m of stated('docs/VIRTUAL_ESP32.md', /OTA Info \(`read`\) returns its whole (\d+)-byte value/g)) assert.deepEqual(numbers(m), [INFO_SIZE]);
      for (const m of stated('firmware/README.md', /OTA Info `[0-9a-f-]+` \(read\):[^;]*;\s*(\d+) bytes/g)) assert.deepEqual(numbers(m), [INFO_SIZE]);
      // The ESP32 build's static copies of the value, counted in its sources.
      const copies = FILES.filter((f) => /^firmware\/main\/.*\.c$/.test(f)).reduce((n, f) => n + [...read(f).matchAll(/^static uint8_t \w+\[BLE_OTA_INFO_SIZE\];/gm)].length, 0);
      for (const m of stated('docs/PERFORMANCE.md', /OTA Info (?:buffers|copies) \((\d+) × (\d+) bytes\)/g)) assert.deepEqual(numbers(m), [copies, INFO_SIZE]);

      // PROTOCOL.md's table: offsets and sizes are the constants test's; here, that each row names
      // the field InfoLayout has at that offset, and that no blank line splits the table (Markdown
      // ends a table there, and shows the rest as text).
      const section = /^### OTA Info[^\n]*\n([\s\S]*?)\n#/m.exec(read('docs/PROTOCOL.md'));
      assert.ok(section, 'PROTOCOL.md has an OTA Info section');
      const byOffset = new Map<number, string>([
        ...Object.entries(InfoLayout).map(([name, f]): [number, string] => [f.offset, name]),
        ...InfoReserved.map((r): [number, string] => [r.offset, 'RESERVED']),
      ]);
      const rows = [...section[1].matchAll(/^\| (\d+) \| \d+ \| (?:`(\w+)`|(reserved)\b|[^`|]*`(\w+)`)/gm)];
      assert.equal(rows.length, byOffset.size, 'a row per field and reserved byte');
      for (const m of rows) assert.equal((m[2] ?? m[3] ?? m[4]).toUpperCase(), byOffset.get(Number(m[1])), m[0]);
      assert.doesNotMatch(section[1], /^\|.*\|\n\s*\n\|/m, 'a blank line inside the OTA Info table');
    });

    it('packet and request sizes', () => {
      const packets = stated('docs/PROTOCOL.md', /packets up to (\d+) bytes \(MTU (\d+)\)/g).concat(
        stated('firmware/README.md', /packets (?:of )?up to (\d+) bytes(?: \(MTU (\d+)\))?/g),
      );
      for (const m of packets) {
        assert.equal(Number(m[1]), MAX_PACKET, m[0]);
        if (m[2] !== undefined) assert.equal(Number(m[2]), MAX_PACKET + 3, m[0]);
      }
      for (const m of stated('docs/PROTOCOL.md', /packet size out of range \(1-(\d+)\)/g)) assert.equal(Number(m[1]), MAX_PACKET);
      for (const m of stated('docs/PROTOCOL.md', /`flags` u16 \((\d+) bytes in all\)/g)) assert.equal(Number(m[1]), BEGIN_SIZE);
      for (const m of stated('docs/PROTOCOL.md', /BEGIN is then (\d+) bytes, the others (\d+)/g)) {
        assert.deepEqual([Number(m[1]), Number(m[2])], [BEGIN_SIZE + AUTH_MAC_LEN, 1 + AUTH_MAC_LEN]);
      }
      for (const m of stated('docs/PROTOCOL.md', /`base_sha256` \(32 bytes[^)]*\): (\d+) bytes in all, (\d+) with a MAC/g)) {
        assert.deepEqual([Number(m[1]), Number(m[2])], [BEGIN_PATCH_SIZE, BEGIN_PATCH_SIZE + AUTH_MAC_LEN]);
      }
      for (const m of stated('docs/PROTOCOL.md', /chunks of (\d+) bytes/g)) assert.equal(Number(m[1]), DEFLATE_CHUNK);
    });

    it('the v2 window and ACK spacing', () => {
      const core = 'firmware/components/ble_ota_core/include/ble_ota_core.h';
      const window = cDefine(core, 'BLE_OTA_DEFAULT_WINDOW');
      const acks = cDefine(core, 'BLE_OTA_ACKS_PER_WINDOW');
      for (const m of stated('docs/VIRTUAL_ESP32.md', /\| `--window` \| `(\d+)` \|[^|]*every window\/(\d+) bytes/g)) assert.deepEqual([Number(m[1]), Number(m[2])], [window, acks]);
      for (const m of stated('docs/PROTOCOL.md', /every window\/(\d+) bytes/g)) assert.equal(Number(m[1]), acks);
    });

    it('menuconfig options: each one cited exists, with the default Kconfig gives it', () => {
      const kconfig = read('firmware/main/Kconfig.projbuild');
      const options = new Map([...kconfig.matchAll(/^\s*config (BLE_OTA_\w+)\n([\s\S]*?)(?=^\s*(?:config|endmenu)\b)/gm)].map((m) => [m[1], /^\s*default (.+)$/m.exec(m[2])?.[1]]));
      assert.ok(options.size > 5, 'options read from Kconfig.projbuild');
      // Code as well as prose: ESP-IDF is not built here, so a C file naming an option that is gone would pass every other test.
      // (Tests only in their comments: one may name an option to assert nothing reads it.)
      const cited = FILES.filter((f) => f !== SELF && (SOURCE.test(f) || DOC.test(f) || HASH_COMMENTED.test(f))).flatMap((f) =>
        [...(f.startsWith('test/') ? prose(f) : read(f)).matchAll(/\bCONFIG_(BLE_OTA_\w+)/g)].map((m) => `${f}: ${m[1]}`),
      );
      assert.ok(cited.length > 10);
      assert.deepEqual(
        cited.filter((c) => !options.has(c.slice(c.indexOf(': ') + 2))),
        [],
      );

      // firmware/README.md: "(`CONFIG_BLE_OTA_AUTH_TIMEOUT_S`, 10 s)", "(..., off)", "(..., default `esp32`, ...)".
      const stateds = stated('firmware/README.md', /\(`CONFIG_(BLE_OTA_\w+)`,\s+(?:default\s+)?(`[^`]*`|on|off|\d+)/g);
      for (const m of stateds) {
        const value = { on: 'y', off: 'n' }[m[2]] ?? m[2].replace(/`/g, '"');
        assert.equal(value, options.get(m[1]), m[0]);
      }
      for (const m of stated('firmware/README.md', /(\d+) KB window \(menuconfig `BLE_OTA_WINDOW_KB`\)/g)) assert.equal(m[1], options.get('BLE_OTA_WINDOW_KB'));
      // The core's own defaults (a platform without Kconfig: the host build, the virtual ESP32) are the same.
      const core = 'firmware/components/ble_ota_core/include/ble_ota_core.h';
      assert.equal(cDefine(core, 'BLE_OTA_DEFAULT_WINDOW'), 1024 * Number(options.get('BLE_OTA_WINDOW_KB')));
      assert.equal(cDefine(core, 'BLE_OTA_DEFAULT_CONFIRM_WINDOW_MS'), 1000 * Number(options.get('BLE_OTA_CONFIRM_WINDOW_S')));
      // The virtual ESP32's manual self-test gives the application as long as the firmware does.
      assert.equal(cDefine('firmware/host/virtual_esp32.c', 'VESP_DEFAULT_SELF_TEST_TIMEOUT_MS'), 1000 * Number(options.get('BLE_OTA_APP_CHECK_TIMEOUT_S')));
    });

    it('the core’s RAM, as the host build measures it', function () {
      this.timeout(120_000);
      const build = mkdtempSync(join(tmpdir(), 'ble-ota-sizes-'));
      try {
        const out = execFileSync('make', ['-s', '-C', join(ROOT, 'firmware/host'), `BUILD_DIR=${build}`, 'sizes'], { encoding: 'utf8' });
        // text data bss dec hex filename
        const objects = [...out.matchAll(/^\s*\d+\s+\d+\s+(\d+)\s+\d+\s+[0-9a-f]+\s+(\S*\/(\w+)\.o)$/gm)].map((m) => ({ path: m[2], name: m[3], bss: Number(m[1]) }));
        const state = objects.find((o) => o.name === 'core_ram');
        assert.ok(state, out);
        const core = objects.filter((o) => o !== state);
        const sources = FILES.filter((f) => /^firmware\/components\/ble_ota_core\/\w+\.c$/.test(f)).map((f) => f.slice(f.lastIndexOf('/') + 1, -2));
        assert.deepEqual(core.map((o) => o.name).sort(), sources.sort(), 'make sizes measures every source of the core');
        // Writable sections only: on a PIE host a constant table of pointers (the GATT table) is
        // .data.rel.ro, relocated once and read-only after, where the ESP32 keeps it in flash.
        const writable = core.reduce((n, o) => {
          const sections = [...execFileSync('size', ['-A', o.path], { encoding: 'utf8' }).matchAll(/^(\.\S+)\s+(\d+)/gm)];
          return n + sections.filter(([, name]) => /^\.(data|bss)\b/.test(name) && !name.startsWith('.data.rel.ro')).reduce((k, s) => k + Number(s[2]), 0);
        }, 0);
        const doc = 'docs/PERFORMANCE.md';
        for (const m of stated(doc, /^\| core objects[^|]*\| (\d+) bytes of writable data and bss\b/gm)) assert.equal(Number(m[1]), writable, m[0]);
        for (const m of stated(doc, /^\| one `ble_ota_core_t`[^|]*\| ([\d,]+) bytes/gm)) assert.equal(Number(m[1].replace(/,/g, '')), state.bss, m[0]);
      } finally {
        rmSync(build, { recursive: true, force: true });
      }
    });
  });
});
