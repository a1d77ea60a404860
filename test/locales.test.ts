/**
 * Every node speaks English (en-US) and German (de) completely: the message
 * catalogues have the same keys with the same placeholders, nothing is left
 * untranslated by accident, every node has help in both languages with the
 * same sections, properties and codes, every key the runtime code and the
 * editor files use exists (in the node's own catalogue, which is the only one
 * Node-RED gives it), and no label of an edit dialog is written into the
 * template instead of the catalogue. A real Node-RED started in German
 * reports a node's error in German.
 */
import { strict as assert } from 'node:assert';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { translator } from '../nodes/shared/i18n';
import type { RED } from '../nodes/shared/red';
import { NodeRedProcess, ROOT } from './support/node-red-process';

const LANGS = ['en-US', 'de'] as const;
/** Every node the package registers (package.json "node-red"), each in its folder under nodes/. */
const NODES = Object.keys((JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { 'node-red': { nodes: Record<string, string> } })['node-red'].nodes);

type Catalogue = { [key: string]: string | Catalogue };

const read = (file: string) => readFileSync(join(ROOT, file), 'utf8');
const catalogue = (node: string, lang: string) => JSON.parse(read(`nodes/${node}/locales/${lang}/${node}.json`)) as Catalogue;

/** key -> text, keys joined with dots as RED._ takes them. */
function flatten(c: Catalogue, prefix = ''): Map<string, string> {
  const out = new Map<string, string>();
  for (const [k, v] of Object.entries(c)) {
    if (typeof v === 'string') out.set(prefix + k, v);
    else for (const [kk, vv] of flatten(v, `${prefix}${k}.`)) out.set(kk, vv);
  }
  return out;
}

/** The object at a key prefix ("ble-ota-upload.status.codes."), if there is one. */
function section(c: Catalogue, prefix: string): Catalogue | undefined {
  let at: string | Catalogue | undefined = c;
  for (const part of prefix.replace(/\.$/, '').split('.')) at = typeof at === 'object' ? at[part] : undefined;
  return typeof at === 'object' ? at : undefined;
}

const placeholders = (text: string) => [...text.matchAll(/__\w+__|\{\{[^}]*\}\}/g)].map((m) => m[0]).sort();

/**
 * The German texts that are the English ones on purpose: names, units and
 * terms German uses as they are. Anything else equal to its English text was
 * forgotten.
 */
const SAME_IN_GERMAN = new Set(['Name', 'Chip', 'Signal', 'Version', 's', 'dBm', 'Min. RSSI', 'Payload', 'Topic', 'Scan']);

/** Error codes (BleOtaErrorCode) as lib/errors.ts declares them. */
const ERROR_CODES = new Set(
  [
    ...read('lib/errors.ts')
      .slice(read('lib/errors.ts').indexOf('export type BleOtaErrorCode'))
      .split(';')[0]
      .matchAll(/'([A-Z_]+)'/g),
  ].map((m) => m[1]),
);

describe('locales: message catalogues', () => {
  it('every node the package registers has en-US and de catalogues', () => {
    assert.ok(NODES.includes('ble-ota-upload') && NODES.includes('ble-ota-device'), NODES.join(', '));
    assert.deepEqual(
      readdirSync(join(ROOT, 'nodes'))
        .filter((d) => d !== 'shared')
        .sort(),
      [...NODES].sort(),
      'a folder under nodes/ per registered node',
    );
    for (const node of NODES) for (const lang of LANGS) assert.ok(existsSync(join(ROOT, `nodes/${node}/locales/${lang}/${node}.json`)), `${node} ${lang}`);
  });

  for (const node of NODES) {
    it(`${node}: the same keys in en-US and de, with the same placeholders, none empty`, () => {
      const en = flatten(catalogue(node, 'en-US'));
      const de = flatten(catalogue(node, 'de'));
      assert.deepEqual(
        [...en.keys()].filter((k) => !de.has(k)),
        [],
        'keys missing in de',
      );
      assert.deepEqual(
        [...de.keys()].filter((k) => !en.has(k)),
        [],
        'keys in de that en-US does not have',
      );
      for (const [key, text] of en) {
        assert.deepEqual(placeholders(de.get(key)!), placeholders(text), `${key}: placeholders`);
        assert.ok(text.trim() && de.get(key)!.trim(), `${key} is empty`);
        assert.ok(Object.keys(catalogue(node, 'en-US')).length === 1 && key.startsWith(`${node}.`), `${key}: under ${node}`);
      }
    });

    it(`${node}: every German text is translated (equal to the English only where German says it so)`, () => {
      const en = flatten(catalogue(node, 'en-US'));
      const de = flatten(catalogue(node, 'de'));
      const same = [...en].filter(([key, text]) => de.get(key) === text && !SAME_IN_GERMAN.has(text)).map(([key, text]) => `${key}: "${text}"`);
      assert.deepEqual(same, []);
    });

    it(`${node}: errors and warnings are sentences in both languages`, () => {
      for (const lang of LANGS) {
        for (const [key, text] of flatten(catalogue(node, lang))) {
          if (!/\.(errors|warnings)\./.test(key)) continue;
          assert.match(text, /^([A-ZÄÖÜ]|__\w+__|msg\.)/, `${lang} ${key} starts a sentence: "${text}"`);
          assert.match(text, /(\.|__message__)$/, `${lang} ${key} ends a sentence: "${text}"`);
        }
      }
    });
  }

  it('status codes are error codes the library has', () => {
    for (const node of NODES) {
      const codes = section(catalogue(node, 'en-US'), `${node}.status.codes.`);
      for (const code of Object.keys(codes ?? {})) assert.ok(ERROR_CODES.has(code), `${node}: ${code} is no BleOtaErrorCode`);
    }
    assert.ok(ERROR_CODES.has('DEVICE_NOT_FOUND') && ERROR_CODES.size > 30, 'lib/errors.ts read');
  });
});

describe('locales: help', () => {
  /** What must be the same in every language: structure, and what is code rather than prose. */
  function skeleton(html: string) {
    const codes = [...html.matchAll(/<code>([^<]*)<\/code>/g)].map((m) => m[1]).filter((c) => !/\s/.test(c));
    return {
      h3: (html.match(/<h3>/g) ?? []).length,
      h4: (html.match(/<h4>/g) ?? []).length,
      dt: (html.match(/<dt[ >]/g) ?? []).length,
      li: (html.match(/<li>/g) ?? []).length,
      optional: (html.match(/<dt class="optional">/g) ?? []).length,
      types: [...html.matchAll(/<span class="property-type">([^<]*)<\/span>/g)].length,
      codes: [...new Set(codes)].sort(),
      errorCodes: [...new Set(html.match(/\b[A-Z][A-Z0-9]*_[A-Z0-9_]+\b/g) ?? [])].sort(),
      links: [...html.matchAll(/href="([^"]+)"/g)].map((m) => m[1]).sort(),
    };
  }

  for (const node of NODES) {
    it(`${node} has help in en-US and de, with the same sections, properties, codes and links`, () => {
      const [en, de] = LANGS.map((lang) => {
        const file = `nodes/${node}/locales/${lang}/${node}.html`;
        assert.ok(existsSync(join(ROOT, file)), `${file} is missing`);
        const html = read(file);
        assert.match(html, new RegExp(`^<script type="text/html" data-help-name="${node}">\\s*<p>[^<]{20,}`), `${file}: starts with the palette tip`);
        return html;
      });
      assert.deepEqual(skeleton(de), skeleton(en));
    });
  }

  /**
   * The fields of a node's edit dialog, Name aside, with their labels' catalogue keys: the inputs,
   * selects and text areas a user fills in (not the hidden ones behind a typed input or a code
   * editor), and the code editors. Each must have a label from the catalogue.
   */
  function dialogFields(node: string): Array<{ field: string; key: string }> {
    const html = read(`nodes/${node}/${node}.html`);
    const template = html.slice(html.indexOf('data-template-name'));
    const fields = [
      ...[...template.matchAll(/<(?:input|select|textarea)\b[^>]*\bid="(node-(?:config-)?input-(\w+))"[^>]*>/g)]
        .filter((m) => m[2] !== 'name' && !/type="hidden"/.test(m[0]))
        .map((m) => ({ id: m[1], field: m[2] })),
      ...[...template.matchAll(/<div\b[^>]*\bid="(node-input-(\w+)-editor)"/g)].map((m) => ({ id: m[1], field: m[2] })),
    ];
    return fields.map(({ id, field }) => {
      const label = new RegExp(`<label for="${id}"[^>]*>[\\s\\S]*?</label>`).exec(template);
      const key = label && /data-i18n="([\w.-]+)"/.exec(label[0])?.[1];
      assert.ok(key, `${node}: the field ${field} has no label from the catalogue`);
      return { field, key };
    });
  }

  for (const node of NODES) {
    it(`${node}: the help names every field of the edit dialog by its label, in both languages`, () => {
      const fields = dialogFields(node);
      assert.ok(fields.length >= 1, `${node}: fields found`);
      for (const lang of LANGS) {
        const texts = flatten(catalogue(node, lang));
        const help = read(`nodes/${node}/locales/${lang}/${node}.html`)
          .replace(/<[^>]+>/g, ' ')
          .replace(/&lt;/g, '<')
          .replace(/&gt;/g, '>')
          .replace(/&amp;/g, '&')
          .replace(/\s+/g, ' ');
        for (const { field, key } of fields) {
          const label = texts.get(key)!;
          const named = label.split(' (')[0];
          assert.ok(help.includes(named), `${lang} ${node}: the help never names ${field} as "${named}"`);
        }
      }
    });
  }

  it('the build puts both languages beside the compiled nodes', () => {
    for (const node of NODES) {
      for (const lang of LANGS) {
        for (const ext of ['json', 'html']) {
          const path = `locales/${lang}/${node}.${ext}`;
          assert.equal(read(`dist/nodes/${node}/${path}`), read(`nodes/${node}/${path}`), `dist/nodes/${node}/${path}`);
        }
      }
    }
  });
});

describe('locales: every key used exists', () => {
  /** Full keys and key prefixes (ending in ".") a file asks for. */
  function keysIn(file: string): { keys: string[]; prefixes: string[] } {
    const text = read(file);
    const found: string[] = [];
    // String literals that are keys: t('ble-ota-upload.status.noDevice'), this._('...'), data-i18n="[placeholder]...".
    // (Not an icon file, nor the permission the editor's Scan needs.)
    for (const m of text.matchAll(/(needsPermission\()?['"`]((?:\[\w+\])?ble-ota-[a-z]+\.[\w.]*)['"`]/g)) {
      if (!m[1] && !m[2].endsWith('.svg')) found.push(m[2].replace(/^\[\w+\]/, ''));
    }
    for (const m of text.matchAll(/data-i18n="([^"]+)"/g)) for (const k of m[1].split(';')) found.push(k.replace(/^\[\w+\]/, ''));
    // A constant prefix with literal or template tails: S + 'status.failed', `${S}codes.${code}`.
    const prefix = /const S = '([\w.-]+)';/.exec(text)?.[1];
    if (prefix) {
      for (const m of text.matchAll(/\bS \+ '([\w.]+)'/g)) found.push(prefix + m[1]);
      for (const m of text.matchAll(/`\$\{S\}([\w.]+)/g)) found.push(prefix + m[1]);
    }
    const unique = [...new Set(found)];
    return { keys: unique.filter((k) => !k.endsWith('.')), prefixes: unique.filter((k) => k.endsWith('.')) };
  }

  const files = NODES.flatMap((node) =>
    readdirSync(join(ROOT, 'nodes', node))
      .filter((f) => /\.(ts|html)$/.test(f))
      .map((f) => ({ node, file: `nodes/${node}/${f}` })),
  );

  it('the code and editor files of each node use keys of its own catalogue, and every one exists', () => {
    let counted = 0;
    for (const { node, file } of files) {
      const en = catalogue(node, 'en-US');
      const all = flatten(en);
      const { keys, prefixes } = keysIn(file);
      for (const key of [...keys, ...prefixes]) {
        assert.ok(key.startsWith(`${node}.`), `${file} uses ${key}: Node-RED gives ${node} only its own catalogue`);
      }
      // A text with plural forms exists as <key>_one and <key>_other (RED._ picks one by count).
      for (const key of keys) assert.ok(all.has(key) || (all.has(`${key}_one`) && all.has(`${key}_other`)), `${file} uses ${key}, which ${node}'s catalogue lacks`);
      for (const p of prefixes) assert.ok(section(en, p), `${file} builds keys under ${p}, which ${node}'s catalogue lacks`);
      counted += keys.length;
    }
    assert.ok(counted > 100, `only ${counted} keys found: the search missed them`);
  });

  it('the shared nodes code uses no catalogue key (each node translates its own texts)', () => {
    for (const f of readdirSync(join(ROOT, 'nodes/shared')).filter((f) => f.endsWith('.ts'))) {
      const { keys, prefixes } = keysIn(`nodes/shared/${f}`);
      assert.deepEqual([...keys, ...prefixes], [], f);
    }
  });

  it('keys built from a list at run time exist for every entry: OTA states, template fields', () => {
    const states = section(catalogue('ble-ota-status', 'en-US'), 'ble-ota-status.states.')!;
    const listed = (file: string, name: string) => [...(new RegExp(`${name}[^=]*=\\s*\\[([^\\]]*)\\]`).exec(read(file))?.[1] ?? '').matchAll(/'(\w+)'/g)].map((m) => m[1]);
    const inView = listed('nodes/ble-ota-status/event-view.ts', 'STATES');
    const inEditor = listed('nodes/ble-ota-status/ble-ota-status.html', 'STATES');
    assert.ok(inView.length > 5);
    assert.deepEqual(inEditor, inView, 'the editor lists the states the runtime reports');
    assert.deepEqual(Object.keys(states).sort(), [...inView].sort());
    const labels = section(catalogue('ble-ota-status', 'en-US'), 'ble-ota-status.label.')!;
    for (const field of ['template', 'topic']) assert.ok(labels[field], `label.${field}`);
  });
});

describe('locales: editor templates', () => {
  for (const node of NODES) {
    it(`${node}: every text of the edit dialog comes from the catalogue`, () => {
      const html = read(`nodes/${node}/${node}.html`);
      const template = new RegExp(`<script type="text/html" data-template-name="${node}">([\\s\\S]*?)</script>`).exec(html)?.[1];
      assert.ok(template, 'the edit dialog');
      const text = template
        .replace(/<[^>]+>/g, ' ')
        .replace(/&nbsp;/g, ' ')
        .trim();
      assert.equal(text, '', `words written into the template rather than the catalogue: "${text}"`);
      // Attributes people read: placeholders and titles come from the catalogue too (numbers are examples).
      for (const m of template.matchAll(/\s(placeholder|title)="([^"]*)"/g)) assert.match(m[2], /^[-\d.]*$/, `${m[1]}="${m[2]}"`);
    });
  }

  it("palette labels have no '-': Node-RED's palette breaks a label there and shows it spaced out (a non-breaking hyphen, U+2011, is kept)", () => {
    for (const node of NODES) {
      const key = /paletteLabel: function \(\) \{\s*return this\._\('([\w.-]+)'\)/.exec(read(`nodes/${node}/${node}.html`))?.[1];
      assert.ok(key, `${node}: a palette label from the catalogue`);
      if (/category: 'config'/.test(read(`nodes/${node}/${node}.html`))) continue; // not in the palette
      for (const lang of LANGS) assert.doesNotMatch(flatten(catalogue(node, lang)).get(key) ?? '', /-/, `${lang} ${key}`);
    }
  });

  it('each node has its own icon, and the config node a type name for its dialogs', () => {
    const flowNodes = NODES.filter((node) => !/category: 'config'/.test(read(`nodes/${node}/${node}.html`)));
    const icons = flowNodes.map((node) => /icon: '([^']+)'/.exec(read(`nodes/${node}/${node}.html`))?.[1]);
    assert.ok(flowNodes.length >= 3, flowNodes.join(', '));
    assert.equal(new Set(icons).size, icons.length, `icons: ${icons.join(', ')}`);
    for (const icon of icons) {
      const svg = read(`icons/${icon}`);
      assert.match(svg, /^<svg xmlns="http:\/\/www\.w3\.org\/2000\/svg" width="40" height="60" viewBox="0 0 40 60">/, icon);
    }
    assert.match(read('nodes/ble-ota-device/ble-ota-device.html'), /paletteLabel: function \(\) \{\s*return this\._\('ble-ota-device\.label\.type'\);/);
  });
});

describe('locales: plural forms', () => {
  it('a text with a count takes its plural form, also where RED._ has no catalogue (the test helper)', () => {
    const bare = { _: (key: string) => key } as unknown as RED;
    const t = translator(bare, join(ROOT, 'nodes/ble-ota-scan'), 'ble-ota-scan');
    assert.deepEqual(
      [0, 1, 2].map((count) => t('ble-ota-scan.status.found', { count })),
      ['0 devices', '1 device', '2 devices'],
    );
  });
});

describe('locales: a Node-RED running in German', function () {
  this.timeout(90_000);
  let nr: NodeRedProcess | undefined;
  after(() => nr?.stop());

  it("reports a node's error and status and serves its help in German", async () => {
    nr = await NodeRedProcess.start(
      [
        // An upload node without its device configuration: the first message fails with the node's own text.
        { id: 'de-inj', type: 'inject', z: '', props: [{ p: 'payload' }], payload: '', payloadType: 'date', repeat: '', once: false, wires: [['de-up']] },
        { id: 'de-up', type: 'ble-ota-upload', z: '', name: '', device: '', wires: [[], []] },
        // A scan that finds one virtual device: its status, through a Status node, in the log.
        { id: 'de-scan-inj', type: 'inject', z: '', props: [{ p: 'payload' }], payload: '', payloadType: 'date', repeat: '', once: false, wires: [['de-scan']] },
        { id: 'de-scan', type: 'ble-ota-scan', z: '', name: '', device: 'de-radio', duration: 1, output: 'list', wires: [[]] },
        { id: 'de-radio', type: 'ble-ota-device', name: '', device: '', backend: 'virtual', virtualDevices: 'esp32-de', scanTimeout: 5, operationTimeout: 5 },
        { id: 'de-status', type: 'status', z: '', scope: ['de-scan'], wires: [['de-log']] },
        { id: 'de-log', type: 'debug', z: '', active: true, tosidebar: false, console: true, complete: 'status.text', wires: [] },
      ],
      "lang: 'de'",
    );
    let from = nr.output.length;
    await nr.inject('de-inj');
    await nr.waitForOutput(/\[ble-ota-upload:de-up\] Kein Gerät konfiguriert: Öffnen Sie den Node und wählen oder erstellen Sie ein OTA-Gerät\./, 20_000, from);
    from = nr.output.length;
    await nr.inject('de-scan-inj');
    await nr.waitForOutput(/\[debug:de-log\][^\n]*\n?[^\n]*Suche läuft/, 30_000, from);
    await nr.waitForOutput(/\[debug:de-log\][^\n]*\n?[^\n]*\b1 Gerät\b/, 30_000, from); // the plural form for one
    const help = await (await fetch(`${nr.url}/nodes`, { headers: { Accept: 'text/html', 'Accept-Language': 'de' } })).text();
    assert.match(help, /data-help-name="ble-ota-upload">\s*<p>Aktualisiert die Firmware eines ESP32/);
    const catalog = (await (await fetch(`${nr.url}/locales/node-red-contrib-esp32-ble-ota/ble-ota-scan?lng=de`)).json()) as Catalogue;
    assert.equal(flatten(catalog).get('ble-ota-scan.label.default'), 'OTA\u2011Scan');
  });
});
