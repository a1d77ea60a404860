/**
 * The command line, parsed with node:util's parseArgs into one command.
 * Every mistake becomes a UsageError (exit status 2) whose message names
 * the mistake; main prints it with the command's usage.
 */
import { parseArgs } from 'node:util';
import type { ConfirmMode } from '../client/ota-client';
import type { Target } from '../client/scanner';

export const PROGRAM = 'esp32-ble-ota';

export type CommandName = 'scan' | 'info' | 'upload';

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
  | ({ kind: 'info'; device: string; timeoutMs?: number } & GlobalOptions)
  | ({
      kind: 'upload';
      file: string;
      device: string;
      confirm: ConfirmMode;
      protocol: 'auto' | 'seed';
      timeoutMs?: number;
      /** A file holding the device's key (64 hex digits); never the key itself on the command line. */
      keyFile?: string;
      requireSignature: boolean;
    } & GlobalOptions);

export class UsageError extends Error {
  constructor(
    message: string,
    /** The command whose usage to print with the message. */
    readonly topic?: CommandName,
  ) {
    super(message);
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
  'key-file': { type: 'string' },
  'require-signature': { type: 'boolean' },
} as const;

type OptionName = keyof typeof OPTIONS;

const GLOBAL_FLAGS = { json: true, virtual: true, help: true, version: true };

/** Which options each command takes besides the global ones. */
const COMMAND_OPTIONS: Record<CommandName, OptionName[]> = {
  scan: ['duration', 'device'],
  info: ['device', 'timeout'],
  upload: ['device', 'timeout', 'confirm', 'protocol', 'key-file', 'require-signature'],
};

const COMMANDS = Object.keys(COMMAND_OPTIONS) as CommandName[];

export const DEFAULT_SCAN_S = 5;

export function parseCommandLine(argv: string[]): Command {
  let parsed: ReturnType<typeof parse>;
  try {
    parsed = parse(argv);
  } catch (err) {
    // parseArgs' messages name the option ("Unknown option '--foo'"); the
    // hint about '--' only confuses, since no command takes such operands.
    const message = (err as Error).message.replace(/\. To specify a positional argument starting with a '-'.*$/s, '');
    throw new UsageError(message, commandIn(argv));
  }
  const { values, positionals } = parsed;
  const json = values.json ?? false;
  const [name, ...operands] = positionals;

  if (values.version) return { kind: 'version', json };
  if (name === 'help') return { kind: 'help', topic: asCommand(operands[0]), json };
  if (values.help) return { kind: 'help', topic: asCommand(name), json };
  if (name === undefined) throw new UsageError('no command given');
  const command = asCommand(name);
  if (!command) throw new UsageError(`unknown command "${name}"; the commands are ${COMMANDS.join(', ')}`);

  for (const option of Object.keys(values) as OptionName[]) {
    if (option in GLOBAL_FLAGS || COMMAND_OPTIONS[command].includes(option)) continue;
    throw new UsageError(`${command} does not take --${option}`, command);
  }
  const global: GlobalOptions = { json, virtual: values.virtual ?? false };

  if (command === 'scan') {
    if (operands.length > 0) throw new UsageError(`scan takes no operands (got "${operands[0]}")`, command);
    const durationS = values.duration === undefined ? DEFAULT_SCAN_S : seconds('--duration', values.duration, command);
    return { kind: 'scan', durationMs: durationS * 1000, device: deviceOption(values.device, command, false), ...global };
  }

  const device = deviceOption(values.device, command, true) as string;
  const timeoutMs = values.timeout === undefined ? undefined : seconds('--timeout', values.timeout, command) * 1000;
  if (command === 'info') {
    if (operands.length > 0) throw new UsageError(`info takes no operands (got "${operands[0]}")`, command);
    return { kind: 'info', device, timeoutMs, ...global };
  }

  if (operands.length === 0) throw new UsageError('upload needs the firmware file (the app .bin from idf.py build)', command);
  if (operands.length > 1) throw new UsageError(`upload takes one file (got ${operands.length}: ${operands.join(', ')})`, command);
  return {
    kind: 'upload',
    file: operands[0],
    device,
    confirm: oneOf('--confirm', values.confirm ?? 'client', ['client', 'device'] as const, command),
    protocol: oneOf('--protocol', values.protocol ?? 'auto', ['auto', 'seed'] as const, command),
    timeoutMs,
    keyFile: values['key-file'],
    requireSignature: values['require-signature'] ?? false,
    ...global,
  };
}

function parse(argv: string[]) {
  return parseArgs({ args: argv, options: OPTIONS, allowPositionals: true, strict: true });
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
    if (required) throw new UsageError(`${command} needs --device NAME_OR_ADDRESS (the advertised name or AA:BB:CC:DD:EE:FF)`, command);
    return undefined;
  }
  if (value.trim() === '') throw new UsageError('--device is empty', command);
  return value;
}

function seconds(option: string, value: string, command: CommandName): number {
  const n = Number(value);
  // An hour bounds a typo (--timeout 30000 meant as ms) without limiting real use.
  if (value.trim() === '' || !Number.isFinite(n) || n <= 0 || n > 3600) {
    throw new UsageError(`${option} takes seconds, a number above 0 and at most 3600 (got "${value}")`, command);
  }
  return n;
}

function oneOf<T extends string>(option: string, value: string, allowed: readonly T[], command: CommandName): T {
  const match = allowed.find((a) => a === value);
  if (match === undefined) throw new UsageError(`${option} is one of ${allowed.join(', ')} (got "${value}")`, command);
  return match;
}

const ADDRESS = /^([0-9a-f]{2}[:-]){5}[0-9a-f]{2}$/i;

/** --device names a device by address when it looks like one, else by advertised name. */
export function targetOf(device: string): Target {
  return ADDRESS.test(device) ? { address: device.replace(/-/g, ':') } : { name: device };
}

export function usage(topic?: CommandName): string {
  const lines = {
    scan: `${PROGRAM} scan [--duration S] [--device NAME_OR_ADDRESS] [--json] [--virtual]`,
    info: `${PROGRAM} info --device NAME_OR_ADDRESS [--timeout S] [--json] [--virtual]`,
    upload: `${PROGRAM} upload FILE --device NAME_OR_ADDRESS [--key-file PATH] [--require-signature] [--confirm client|device] [--protocol auto|seed] [--timeout S] [--json] [--virtual]`,
  };
  if (topic) return `usage: ${lines[topic]}\n`;
  return `usage: ${lines.scan}\n       ${lines.info}\n       ${lines.upload}\n       ${PROGRAM} --help | --version\n`;
}

export function help(topic?: CommandName): string {
  const common = `
  --json         machine-readable output on stdout (errors too, as {"error":{"code","message"}})
  --virtual      use an in-process virtual ESP32 instead of the system's Bluetooth; it is named
                 after --device (default "esp32"), so the tool can be tried without hardware
  -h, --help     this help`;
  const texts: Record<CommandName, string> = {
    scan: `Lists the Bluetooth LE devices in range: name, address, RSSI, and whether they advertise
the OTA service (devices running the seed's firmware do not; info tells).

  --duration S        how long to scan (default ${DEFAULT_SCAN_S})
  -d, --device NAME   list only this device (name or address)`,
    info: `Connects to a device and prints what it reports: the protocol, and for protocol v2 the
OTA Info (project, version, ESP-IDF version, chip, running state, slot size, window,
features); the Device Information firmware revision.

  -d, --device NAME_OR_ADDRESS   the advertised name, or the address AA:BB:CC:DD:EE:FF
  --timeout S                    how long to look for the device (default 15)`,
    upload: `Checks FILE (an ESP32 app image, the .bin of idf.py build), uploads it to the device with
a progress bar, and prints the result. Ctrl-C cancels: the device keeps its old firmware.

  -d, --device NAME_OR_ADDRESS   the advertised name, or the address AA:BB:CC:DD:EE:FF
  --key-file PATH                a file holding the device's update key (64 hex digits, its
                                 CONFIG_BLE_OTA_AUTH_KEY); or set ESP32_BLE_OTA_KEY. The key is
                                 never taken on the command line, where shells and ps show it
  --require-signature            refuse an image without a Secure Boot v2 signature block
  --confirm client|device        protocol v2: who confirms the new image after its restart: this
                                 tool, once the device runs the new version (default client), or
                                 the device after its own self-test
  --protocol auto|seed           auto: v2 where the device offers it (default); seed: the seed
                                 project's protocol, as its Python client spoke it
  --timeout S                    how long to look for the device (default 15)`,
  };
  if (topic) return `${usage(topic)}\n${texts[topic]}\n${common}\n`;
  return `${PROGRAM}: update ESP32 firmware over Bluetooth Low Energy

${usage()}
Commands:
  scan      list the devices in range
  info      show a device's firmware and OTA capabilities
  upload    update a device's firmware

Options:${common}
  -V, --version  the tool's version

"${PROGRAM} COMMAND --help" describes a command. Exit status: 0 success, 1 failure (the
message and error code on stderr), 2 a usage error, 130 cancelled (Ctrl-C).
`;
}
