/**
 * The command line, parsed with node:util's parseArgs into one command.
 * Every mistake becomes a UsageError (exit status 2) whose message names
 * the mistake; main prints it with the command's usage.
 */
import { parseArgs } from 'node:util';
import type { ConfirmMode } from '../client/ota-client';
import { DEVICE_ID_TEXT_LEN } from '../client/session';
import { hasSecretForm, hideSecretForms } from '../client/target';
import { SAMPLE_MAX_SIZE, SAMPLE_MIN_SIZE, sampleChip } from '../image/sample-image';
import type { KeyScheme } from '../image/signature';

export const PROGRAM = 'esp32-ble-ota';

export type CommandName = 'scan' | 'info' | 'upload' | 'keygen' | 'sign' | 'verify' | 'pubkey' | 'secret' | 'provision' | 'sample-image';

export interface GlobalOptions {
  /** Machine-readable output on stdout. */
  json: boolean;
  /** An in-process virtual ESP32 instead of the system's Bluetooth. */
  virtual: boolean;
}

export type Command =
  | { kind: 'help'; topic?: CommandName; json: boolean }
  | { kind: 'version'; json: boolean }
  | ({ kind: 'scan'; durationMs: number; device?: string } & GlobalOptions)
  | ({ kind: 'info'; device: string; timeoutMs?: number; secretFile?: string; deviceId?: string } & GlobalOptions)
  | ({
      kind: 'upload';
      file: string;
      device: string;
      confirm: ConfirmMode;
      protocol: 'auto' | 'seed';
      timeoutMs?: number;
      /** A file holding the fleet secret (64 hex digits); never the secret itself on the command line. */
      secretFile?: string;
      allowUnauthenticated: boolean;
      /** The device id the device must prove (its factory MAC). */
      deviceId?: string;
      requireSignature: boolean;
      /** The public key (PEM file) the image must be signed with, for requireSignature. */
      publicKey?: string;
      /** The image the device runs (a file): the base of a delta patch. */
      base?: string;
      /** The image cache's folder; undefined: the default one (none with --virtual). */
      cacheDir?: string;
      /** --no-cache: no image cache at all. */
      noCache?: boolean;
    } & GlobalOptions)
  | ({ kind: 'keygen'; scheme: KeyScheme; out: string } & GlobalOptions)
  | ({ kind: 'sign'; file: string; keys: string[]; append: boolean; out: string } & GlobalOptions)
  | ({ kind: 'verify'; file: string; publicKey: string } & GlobalOptions)
  | ({ kind: 'pubkey'; key: string; out?: string } & GlobalOptions)
  | ({ kind: 'secret'; out: string } & GlobalOptions)
  | ({ kind: 'provision'; secretFile?: string; deviceId: string; out: string; chip?: string } & GlobalOptions)
  | ({
      kind: 'sample-image';
      /** A file, or "-" for stdout. */
      out: string;
      projectName?: string;
      version?: string;
      chip?: string;
      size?: number;
    } & GlobalOptions);

export class UsageError extends Error {
  constructor(
    message: string,
    /** The command whose usage to print with the message. */
    readonly topic?: CommandName,
  ) {
    // A secret typed where an operand or a value goes is not repeated (the words a command line's mistakes are told in echo it).
    super(hideSecretForms(message));
    this.name = 'UsageError';
  }
}

const OPTIONS = {
  json: { type: 'boolean' },
  virtual: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
  version: { type: 'boolean', short: 'V' },
  device: { type: 'string', short: 'd' },
  duration: { type: 'string' },
  timeout: { type: 'string' },
  confirm: { type: 'string' },
  protocol: { type: 'string' },
  'secret-file': { type: 'string' },
  'allow-unauthenticated': { type: 'boolean' },
  'require-signature': { type: 'boolean' },
  'device-id': { type: 'string' },
  chip: { type: 'string' },
  scheme: { type: 'string' },
  out: { type: 'string', short: 'o' },
  key: { type: 'string', multiple: true },
  append: { type: 'boolean' },
  'public-key': { type: 'string' },
  project: { type: 'string' },
  // Not --version: that one prints the tool's own.
  'app-version': { type: 'string' },
  size: { type: 'string' },
  // Taken as many times as given, so that a second one is refused rather than silently replacing the first.
  base: { type: 'string', multiple: true },
  'cache-dir': { type: 'string' },
  'no-cache': { type: 'boolean' },
} as const;

type OptionName = keyof typeof OPTIONS;

const GLOBAL_FLAGS = { json: true, virtual: true, help: true, version: true };

/** Which options each command takes besides the global ones. */
const COMMAND_OPTIONS: Record<CommandName, OptionName[]> = {
  scan: ['duration', 'device'],
  info: ['device', 'timeout', 'secret-file', 'device-id'],
  upload: ['device', 'timeout', 'confirm', 'protocol', 'secret-file', 'allow-unauthenticated', 'device-id', 'require-signature', 'public-key', 'base', 'cache-dir', 'no-cache'],
  keygen: ['scheme', 'out'],
  sign: ['key', 'append', 'out'],
  verify: ['public-key'],
  pubkey: ['key', 'out'],
  secret: ['out'],
  provision: ['secret-file', 'device-id', 'out', 'chip'],
  'sample-image': ['out', 'project', 'app-version', 'chip', 'size'],
};

/** Commands that work on files only: no Bluetooth, so no --virtual. */
const OFFLINE: CommandName[] = ['keygen', 'sign', 'verify', 'pubkey', 'secret', 'provision', 'sample-image'];

const COMMANDS = Object.keys(COMMAND_OPTIONS) as CommandName[];

export const DEFAULT_SCAN_S = 5;

export function parseCommandLine(argv: string[]): Command {
  let parsed: ReturnType<typeof parse>;
  try {
    parsed = parse(argv);
  } catch (err) {
    const command = commandIn(argv);
    const ambiguous = /^Option '(--[a-z-]+|-[A-Za-z])' argument is ambiguous/.exec((err as Error).message);
    if (ambiguous) throw dashValue(ambiguous[1], argv, command);
    // parseArgs' messages name the option ("Unknown option '--foo'"); the
    // hint about '--' only confuses, since no command takes such operands.
    const message = (err as Error).message.replace(/\. To specify a positional argument starting with a '-'.*$/s, '');
    throw new UsageError(message, command);
  }
  const { values, positionals, tokens } = parsed;
  const json = values.json ?? false;
  const [name, ...operands] = positionals;

  if (values.version) {
    // "sample-image --version 2.0.0" means the sample's version: say which option that is, rather than print the tool's.
    if (asCommand(name) === 'sample-image') throw new UsageError("--version prints the tool's own version; the sample's version is --app-version VERSION", 'sample-image');
    return { kind: 'version', json };
  }
  if (name === 'help') return { kind: 'help', topic: asCommand(operands[0]), json };
  if (values.help) return { kind: 'help', topic: asCommand(name), json };
  if (name === undefined) throw new UsageError('no command given');
  const command = asCommand(name);
  if (!command) throw new UsageError(`unknown command "${name}"; the commands are ${COMMANDS.join(', ')}`);
  const repeated = repeatedValue(tokens, command);
  if (repeated) throw repeated;

  for (const option of Object.keys(values) as OptionName[]) {
    if (option in GLOBAL_FLAGS || COMMAND_OPTIONS[command].includes(option)) continue;
    throw new UsageError(`${command} does not take --${option}`, command);
  }
  const global: GlobalOptions = { json, virtual: values.virtual ?? false };
  if (OFFLINE.includes(command)) {
    if (global.virtual) throw new UsageError(`${command} works on files, without Bluetooth; it does not take --virtual`, command);
    return offlineCommand(command, values, operands, global);
  }

  if (command === 'scan') {
    if (operands.length > 0) throw new UsageError(`scan takes no operands (got "${operands[0]}")`, command);
    const durationS = values.duration === undefined ? DEFAULT_SCAN_S : seconds('--duration', values.duration, command);
    return { kind: 'scan', durationMs: durationS * 1000, device: deviceOption(values.device, command, false), ...global };
  }

  const device = deviceOption(values.device, command, true) as string;
  const timeoutMs = values.timeout === undefined ? undefined : seconds('--timeout', values.timeout, command) * 1000;
  if (command === 'info') {
    if (operands.length > 0) throw new UsageError(`info takes no operands (got "${operands[0]}")`, command);
    return { kind: 'info', device, timeoutMs, secretFile: values['secret-file'], deviceId: deviceIdOption(values['device-id'], command), ...global };
  }

  if (operands.length === 0) throw new UsageError('upload needs the firmware file (the app .bin from idf.py build)', command);
  if (operands.length > 1) throw new UsageError(`upload takes one file (got ${operands.length}: ${operands.join(', ')})`, command);
  const requireSignature = values['require-signature'] ?? false;
  if (!requireSignature && values['public-key'] !== undefined) {
    throw new UsageError('--public-key goes with --require-signature: the image is then checked against it before any radio work', command);
  }
  const bases = values.base ?? [];
  if (bases.length > 1) throw new UsageError(`--base is given ${bases.length} times: give it once, the image the device runs now`, command);
  if (bases.length > 0 && values.protocol === 'seed') {
    throw new UsageError(
      '--base is the base of a delta patch, which only protocol v2 carries: --protocol seed would send the whole image and use it for nothing; give one of them',
      command,
    );
  }
  const noCache = values['no-cache'] ?? false;
  if (noCache && values['cache-dir'] !== undefined) {
    throw new UsageError('--no-cache and --cache-dir contradict each other: give one (--cache-dir names the image cache, --no-cache uses none)', command);
  }
  return {
    kind: 'upload',
    file: operands[0],
    device,
    confirm: oneOf('--confirm', values.confirm ?? 'client', ['client', 'device'] as const, command),
    protocol: oneOf('--protocol', values.protocol ?? 'auto', ['auto', 'seed'] as const, command),
    timeoutMs,
    secretFile: values['secret-file'],
    allowUnauthenticated: values['allow-unauthenticated'] ?? false,
    deviceId: deviceIdOption(values['device-id'], command),
    requireSignature: values['require-signature'] ?? false,
    publicKey: requireSignature ? fileOption('--public-key', values['public-key'], command, 'the public key (PEM) the image must be signed with') : values['public-key'],
    // Only when given: the delta options came later than the others, and a command is compared whole.
    ...(bases.length === 0 ? {} : { base: fileOption('--base', bases[0], command, 'the image the device runs now (its .bin)') }),
    ...(values['cache-dir'] === undefined ? {} : { cacheDir: fileOption('--cache-dir', values['cache-dir'], command, 'the image cache folder') }),
    ...(noCache ? { noCache } : {}),
    ...global,
  };
}

type Values = ReturnType<typeof parse>['values'];

function offlineCommand(command: CommandName, values: Values, operands: string[], global: GlobalOptions): Command {
  if (command === 'keygen') {
    noOperands(command, operands);
    return {
      kind: 'keygen',
      scheme: oneOf('--scheme', values.scheme ?? 'rsa3072', ['rsa3072', 'ecdsa256'] as const, command),
      out: fileOption('--out', values.out, command, 'the file to write the new key to'),
      ...global,
    };
  }
  if (command === 'sign') {
    const keys = values.key ?? [];
    if (keys.length === 0) throw new UsageError('sign needs --key FILE (a private signing key, PEM); repeat it to sign with up to 3 keys', command);
    if (keys.length > 3) throw new UsageError(`sign takes at most 3 --key (a signature sector holds 3 blocks; got ${keys.length})`, command);
    keys.forEach((k) => fileOption('--key', k, command, ''));
    return {
      kind: 'sign',
      file: oneFile(command, operands, 'the app image to sign (the .bin of idf.py build)'),
      keys,
      append: values.append ?? false,
      out: fileOption('--out', values.out, command, 'the file to write the signed image to'),
      ...global,
    };
  }
  if (command === 'verify') {
    return {
      kind: 'verify',
      file: oneFile(command, operands, 'the signed app image to check'),
      publicKey: fileOption('--public-key', values['public-key'], command, 'the key to check against (PEM, public or private)'),
      ...global,
    };
  }
  if (command === 'secret') {
    noOperands(command, operands);
    return { kind: 'secret', out: fileOption('--out', values.out, command, 'the file to write the new fleet secret to'), ...global };
  }
  if (command === 'provision') {
    noOperands(command, operands);
    const deviceId = deviceIdOption(values['device-id'], command);
    if (deviceId === undefined) throw new UsageError("provision needs --device-id MAC, the chip's MAC address as esptool.py read_mac prints it", command);
    return {
      kind: 'provision',
      secretFile: values['secret-file'],
      deviceId,
      out: fileOption('--out', values.out, command, 'the key partition image to write'),
      chip: chipOption(values.chip, command),
      ...global,
    };
  }
  if (command === 'sample-image') {
    noOperands(command, operands);
    const out = fileOption('--out', values.out, command, 'the file to write the sample image to ("-": standard output)');
    if (out === '-' && global.json) throw new UsageError('--out - writes the image to standard output, where --json would go: leave out one of them', command);
    return {
      kind: 'sample-image',
      out,
      projectName: values.project,
      version: values['app-version'],
      chip: chipOption(values.chip, command),
      size: values.size === undefined ? undefined : sampleSize(values.size, command),
      ...global,
    };
  }
  noOperands(command, operands);
  const keys = values.key ?? [];
  if (keys.length > 1) throw new UsageError(`pubkey takes one --key (got ${keys.length})`, command);
  return {
    kind: 'pubkey',
    key: fileOption('--key', keys[0], command, 'the signing key (PEM)'),
    out: values.out === undefined ? undefined : fileOption('--out', values.out, command, ''),
    ...global,
  };
}

/** --device-id: a device id as provisioned (12 hex digits, with or without colons). */
function deviceIdOption(value: string | undefined, command: CommandName): string | undefined {
  if (value === undefined) return undefined;
  const given = value.trim();
  if (!/^[0-9a-f]{12}$/i.test(given.replace(/[:-]/g, ''))) {
    // Only a value as short as a device id is repeated: a fleet secret given here by mistake is not printed.
    const got = given.length <= DEVICE_ID_TEXT_LEN ? `got "${given}"` : `got ${given.length} characters, not repeated here`;
    throw new UsageError(`--device-id is the chip's factory MAC, as esptool.py read_mac prints it and provision took it, e.g. 24:0a:c4:12:34:56 (${got})`, command);
  }
  return given;
}

/** --chip: a chip as ESP-IDF targets name it (esp32, esp32c3, ESP32-S3), in esptool.py's spelling. */
function chipOption(value: string | undefined, command: CommandName): string | undefined {
  if (value === undefined) return undefined;
  try {
    return sampleChip(value.trim())
      .name.toLowerCase()
      .replace(/[-_\s]/g, '');
  } catch (err) {
    throw new UsageError(`--chip: ${(err as Error).message.replace(/\.$/, '')}`, command);
  }
}

function noOperands(command: CommandName, operands: string[]): void {
  if (operands.length > 0) throw new UsageError(`${command} takes no operands (got "${operands[0]}")`, command);
}

function oneFile(command: CommandName, operands: string[], what: string): string {
  if (operands.length === 0) throw new UsageError(`${command} needs IMAGE, ${what}`, command);
  if (operands.length > 1) throw new UsageError(`${command} takes one image (got ${operands.length}: ${operands.join(', ')})`, command);
  return operands[0];
}

function fileOption(option: string, value: string | undefined, command: CommandName, what: string): string {
  if (value === undefined) throw new UsageError(`${command} needs ${option} FILE, ${what}`, command);
  if (value.trim() === '') throw new UsageError(`${option} is empty`, command);
  return value;
}

/**
 * An option followed by a value that starts with a dash (--duration -1),
 * which parseArgs takes for a forgotten value: a number is checked as the
 * option's own, anything else told how to give it.
 */
function dashValue(given: string, argv: string[], command: CommandName | undefined): UsageError {
  const value = argv[argv.indexOf(given) + 1] ?? '';
  // A short option (-d) is named by its long form, which takes --name=value.
  const long = Object.entries(OPTIONS).find(([, o]) => 'short' in o && `-${o.short}` === given)?.[0];
  const option = long ? `--${long}` : given;
  if (command && (option === '--duration' || option === '--timeout')) {
    try {
      seconds(option, value, command);
    } catch (err) {
      return err as UsageError;
    }
  }
  if (command && option === '--size') {
    try {
      byteSize(option, value, command);
    } catch (err) {
      return err as UsageError;
    }
  }
  return new UsageError(`${option} needs a value, and "${value}" looks like an option: if it is the value, write ${option}=${value}`, command);
}

function parse(argv: string[]) {
  return parseArgs({ args: argv, options: OPTIONS, allowPositionals: true, strict: true, tokens: true });
}

/** A value option given more than once: parseArgs keeps the last, which is rarely what was meant. */
function repeatedValue(tokens: ReturnType<typeof parse>['tokens'], command: CommandName | undefined): UsageError | undefined {
  const counts = new Map<string, number>();
  for (const token of tokens) {
    if (token.kind !== 'option' || token.value === undefined) continue;
    const option = OPTIONS[token.name as OptionName];
    // --key is taken as many times as given (sign); --base has its own message.
    if ('multiple' in option && option.multiple) continue;
    counts.set(token.name, (counts.get(token.name) ?? 0) + 1);
  }
  for (const [name, count] of counts) {
    if (count > 1) return new UsageError(`--${name} is given ${count} times: give it once`, command);
  }
  return undefined;
}

function asCommand(name: string | undefined): CommandName | undefined {
  return COMMANDS.find((c) => c === name);
}

/** The command named on a line that did not parse, for the usage printed with the error. */
function commandIn(argv: string[]): CommandName | undefined {
  return argv.map(asCommand).find((c) => c !== undefined);
}

function deviceOption(value: string | undefined, command: CommandName, required: boolean): string | undefined {
  if (value === undefined) {
    if (required) throw new UsageError(`${command} needs --device DEVICE (the advertised name, AA:BB:CC:DD:EE:FF, or the id scan prints)`, command);
    return undefined;
  }
  if (value.trim() === '') throw new UsageError('--device is empty', command);
  // A fleet secret or a key given here by mistake would be printed by every error that names the device: refused, not repeated.
  if (hasSecretForm(value)) {
    throw new UsageError(
      "--device looks like a key or a secret, not a device name (64 hex digits, a fleet secret's form, or a key's PEM text), so it is not repeated here: a device is named by its advertised name, its address (AA:BB:CC:DD:EE:FF) or the id scan prints; the fleet secret goes in a file given with --secret-file (or in ESP32_BLE_OTA_SECRET)",
      command,
    );
  }
  return value;
}

/** A size in bytes, or with a k or M suffix (KiB, MiB): 131072, 128k, 1M. */
function byteSize(option: string, value: string, command: CommandName): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([kKmM]?)i?[bB]?\s*$/.exec(value);
  const bytes = m ? Math.round(Number(m[1]) * (m[2] === '' ? 1 : /k/i.test(m[2]) ? 1024 : 1024 * 1024)) : NaN;
  if (!Number.isFinite(bytes) || bytes <= 0) {
    throw new UsageError(`${option} takes a size in bytes, or with k or M (KiB, MiB), e.g. 128k (got "${value}")`, command);
  }
  return bytes;
}

/** A sample's size: out of range is a usage error (exit 2), said before anything is built. */
function sampleSize(value: string, command: CommandName): number {
  const bytes = byteSize('--size', value, command);
  if (bytes < SAMPLE_MIN_SIZE || bytes > SAMPLE_MAX_SIZE) {
    throw new UsageError(`--size ${value} is ${bytes} bytes: a sample image has ${SAMPLE_MIN_SIZE / 1024} KiB to ${SAMPLE_MAX_SIZE / 1024 / 1024} MiB, e.g. 128k`, command);
  }
  return bytes;
}

function seconds(option: string, value: string, command: CommandName): number {
  const n = Number(value);
  // An hour bounds a typo (--timeout 30000 meant as ms) without limiting real use.
  // At least a millisecond, the shortest timer the client keeps.
  if (value.trim() === '' || !Number.isFinite(n) || n < 0.001 || n > 3600) {
    throw new UsageError(`${option} takes seconds, a number from 0.001 to 3600 (got "${hideSecretForms(value).slice(0, 40)}")`, command);
  }
  return n;
}

function oneOf<T extends string>(option: string, value: string, allowed: readonly T[], command: CommandName): T {
  const match = allowed.find((a) => a === value);
  if (match === undefined) throw new UsageError(`${option} is one of ${allowed.join(', ')} (got "${value}")`, command);
  return match;
}

/** --device names a device by address or id when it looks like one, else by advertised name (as the nodes read theirs: lib/client/target.ts). */
export { targetOf } from '../client/target';

export function usage(topic?: CommandName): string {
  const lines = {
    scan: `${PROGRAM} scan [--duration S] [--device DEVICE] [--json] [--virtual]`,
    info: `${PROGRAM} info --device DEVICE [--secret-file PATH] [--device-id MAC] [--timeout S] [--json] [--virtual]`,
    upload: `${PROGRAM} upload FILE --device DEVICE [--secret-file PATH] [--device-id MAC] [--allow-unauthenticated] [--require-signature --public-key FILE] [--base FILE] [--cache-dir DIR | --no-cache] [--confirm client|device] [--protocol auto|seed] [--timeout S] [--json] [--virtual]`,
    keygen: `${PROGRAM} keygen --out FILE [--scheme rsa3072|ecdsa256] [--json]`,
    sign: `${PROGRAM} sign --key FILE [--key FILE ...] [--append] --out FILE IMAGE [--json]`,
    verify: `${PROGRAM} verify --public-key FILE IMAGE [--json]`,
    pubkey: `${PROGRAM} pubkey --key FILE [--out FILE] [--json]`,
    secret: `${PROGRAM} secret --out FILE [--json]`,
    provision: `${PROGRAM} provision --device-id MAC --out FILE [--secret-file PATH] [--chip CHIP] [--json]`,
    'sample-image': `${PROGRAM} sample-image --out FILE|- [--project NAME] [--app-version VERSION] [--chip CHIP] [--size BYTES] [--json]`,
  };
  if (topic) return `usage: ${lines[topic]}\n`;
  return `usage: ${COMMANDS.map((c) => lines[c]).join('\n       ')}\n       ${PROGRAM} --help | --version\n`;
}

export function help(topic?: CommandName): string {
  const common = `
  --json         machine-readable output on stdout (errors too, as {"error":{"code","message"}})
  --virtual      use an in-process virtual ESP32 instead of the system's Bluetooth; it is named
                 after --device (default "esp32"), so the tool can be tried without hardware
  -h, --help     this help`;
  const texts: Record<CommandName, string> = {
    scan: `Lists the Bluetooth LE devices in range: name, address, RSSI, and whether they advertise
the OTA service (devices running the seed's firmware do not; info tells). Where the system
hides addresses (macOS), the device's id stands in their place: --device takes it.

  --duration S          how long to scan (default ${DEFAULT_SCAN_S})
  -d, --device DEVICE   list only this device (name, address or id)`,
    info: `Connects to a device and prints what it reports: the protocol, and for protocol v2 the
OTA Info (project, version, ESP-IDF version, chip, running state, slot size, window,
features); the Device Information firmware revision.

  -d, --device DEVICE            the advertised name, the address AA:BB:CC:DD:EE:FF, or the id
                                 scan prints (12 or 32 hex digits; on macOS, which hides
                                 addresses, it tells devices of one name apart)
  --secret-file PATH             the fleet secret (or ESP32_BLE_OTA_SECRET): the device then
                                 proves what it reports
  --device-id MAC                the device id it must have (its factory MAC, as provisioned;
                                 proven with the secret)
  --timeout S                    how long to look for the device (default 15)`,
    upload: `Checks FILE (an ESP32 app image, the .bin of idf.py build), uploads it to the device with
a progress bar, and prints the result. Ctrl-C cancels: the device keeps its old firmware.

  -d, --device DEVICE            the advertised name, the address AA:BB:CC:DD:EE:FF, or the id
                                 scan prints (12 or 32 hex digits; on macOS, which hides
                                 addresses, it tells devices of one name apart)
  --secret-file PATH             a file holding the fleet secret (64 hex digits) the devices'
                                 keys derive from; or set ESP32_BLE_OTA_SECRET. Never taken on
                                 the command line, where shells and ps show it. With it, a
                                 device that cannot prove it holds its key is refused
  --device-id MAC                the device id (factory MAC, as provisioned) the device must
                                 have, proven with the secret: without it, any device of your
                                 fleet found by --device passes; with it, only that one
  --allow-unauthenticated        with a secret: still update devices without authentication
                                 (development builds, the seed protocol)
  --require-signature            check the image's signature against --public-key before any
  --public-key FILE              radio work: unsigned or foreign images never reach a device
  --confirm client|device        protocol v2: who confirms the new image after its restart: this
                                 tool, once the device runs the new version (default client), or
                                 the device after its own self-test
  --protocol auto|seed           auto: v2 where the device offers it (default); seed: the seed
                                 project's protocol, as its Python client spoke it
  --base FILE                    the image the device runs now: where the device applies delta
                                 patches, only the difference from it is sent (when the device
                                 runs another image, the whole one goes)
  --cache-dir DIR                the images this tool installed, bases of later patches (default
                                 $XDG_CACHE_HOME/esp32-ble-ota or ~/.cache/esp32-ble-ota; with
                                 --virtual, none unless given)
  --no-cache                     neither look in nor store to the image cache
  --timeout S                    how long to look for the device (default 15)`,
    keygen: `Makes a Secure Boot v2 signing key, as espsecure.py generate_signing_key --version 2 does,
and prints the digest by which devices will trust it. The file is readable by you only;
an existing file is never overwritten.

  -o, --out FILE               where to write the private key (PEM)
  --scheme rsa3072|ecdsa256    the key type (default rsa3072, the only one the ESP32 has)`,
    sign: `Signs IMAGE (an ESP32 app image) as espsecure.py sign_data --version 2 does: pads it to
4 KiB and appends a signature sector with one block per key.

  --key FILE      a private signing key (PEM); repeat for up to 3 keys
  --append        keep the signatures IMAGE already has and add these
  -o, --out FILE  where to write the signed image (never IMAGE itself)`,
    verify: `Checks that IMAGE's signature block 0 is signed by the key, as ESP-IDF does before it
accepts a signed update: exit status 0 if so, 1 with the reason if not (unsigned, another
key, changed after signing, bad signature).

  --public-key FILE   the trusted key: its public key (PEM), or the private key`,
    pubkey: `Prints the public key of a signing key (PEM) and its digest, the value a device trusts
(espsecure.py extract_public_key and digest_sbv2_public_key). Without --out the PEM goes to
stdout and the digest to stderr.

  --key FILE      the signing key (PEM)
  -o, --out FILE  write the public key to this file instead of stdout`,
    secret: `Makes a fleet secret: 32 random bytes, as 64 hex digits. Each device's key derives from it
and the device's MAC address (provision); give it to the Node-RED device node (Fleet secret)
and to upload and info (--secret-file). The file is readable by you only; an existing file is
never overwritten.

  -o, --out FILE  where to write the secret`,
    provision: `Writes the key partition image of one device: its own key, derived from the fleet secret
and its MAC address, for the firmware's "ble_ota_key" partition. Flash it once over USB with
the esptool command it prints. No firmware image carries the key.

  --device-id MAC      the chip's factory MAC address, as esptool.py read_mac prints it
  --secret-file PATH   the fleet secret (or ESP32_BLE_OTA_SECRET)
  -o, --out FILE       where to write the partition image (4096 bytes)
  --chip CHIP          put --chip CHIP in the esptool command (esp32, esp32c3, ...)`,
    'sample-image': `Writes a sample app image, to try upload --virtual, the Node-RED flows and the examples
without an ESP-IDF build: a valid image (header, segments, app descriptor, SHA-256) with
the project name, version and chip you choose, whose code is filler. Virtual ESP32s install
it; upload refuses to send it to a real device, which would boot it and crash. An existing
file is replaced only when it is a sample too.

  -o, --out FILE           where to write it; - for standard output (e.g. to pipe into curl)
  --project NAME           the project name (default sample-app), at most 31 bytes
  --app-version VERSION    the version (default 2.0.0); virtual devices run 1.0.0 at first
  --chip CHIP              the chip it is for (default esp32; esp32c3, esp32s3, ...)
  --size BYTES             about this size, 1k to 16M (default 128k)`,
  };
  if (topic) {
    const options = OFFLINE.includes(topic) ? common.replace(/\n {2}--virtual[^]*?(?=\n {2}-h)/, '') : common;
    return `${usage(topic)}\n${texts[topic]}\n${options}\n`;
  }
  return `${PROGRAM}: update ESP32 firmware over Bluetooth Low Energy

${usage()}
Commands:
  scan          list the devices in range
  info          show a device's firmware and OTA capabilities
  upload        update a device's firmware
  keygen        make a signing key for signed updates
  sign          sign an app image (Secure Boot v2 format)
  verify        check an image's signature against a key
  pubkey        print a signing key's public key and digest
  secret        make a fleet secret for authenticated updates
  provision     write a device's key partition image
  sample-image  write a sample app image, to try things without a build

Options:${common}
  -V, --version  the tool's version

"${PROGRAM} COMMAND --help" describes a command. Exit status: 0 success, 1 failure (the
message and error code on stderr), 2 a usage error, 130 cancelled (Ctrl-C).
`;
}
