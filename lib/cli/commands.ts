/**
 * The three commands on the OTA client. Each returns normally on success and
 * throws on failure; main turns what they throw into the message and the
 * exit status.
 */
import { readFileSync } from 'node:fs';
import { BleOtaClient, Phase, Timeouts, UpdateResult } from '../client/ota-client';
import { normalizeAddress, SeenDevice, Target } from '../client/scanner';
import { BleOtaError, CancelledError, ImageError } from '../errors';
import { imageSummary } from '../image/esp-image';
import { validateImage } from '../image/validate';
import { loadSystemNoble } from '../noble-loader';
import { VirtualRadio } from '../virtual/virtual-radio';
import { Command, targetOf } from './args';
import { formatImage, formatInfo, formatResult, formatScan, infoView } from './output';
import { ProgressReporter, ProgressStream } from './progress';

export interface Io {
  stdout: ProgressStream;
  stderr: ProgressStream;
  /** Aborted on Ctrl-C. */
  signal: AbortSignal;
}

/** A failure of the tool itself rather than of the client (a file it cannot read). */
export class CliError extends Error {
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
    this.name = 'CliError';
  }
}

type Run = Exclude<Command, { kind: 'help' } | { kind: 'version' }>;

/** The client on the chosen radio, and how to release the radio afterwards. */
interface Radio {
  client: BleOtaClient;
  close(): Promise<void>;
}

async function openRadio(cmd: Run, io: Io, timeouts: Partial<Timeouts>): Promise<Radio> {
  if (!cmd.virtual) {
    // Load noble now: where Bluetooth is unavailable this throws the
    // loader's explanation before anything else happens.
    const noble = loadSystemNoble();
    return { client: new BleOtaClient({ noble, timeouts }), close: async () => undefined };
  }
  // As in Node-RED: BLE_OTA_VIRTUAL_AUTH_KEY makes the virtual device a keyed build.
  const authKey = process.env.BLE_OTA_VIRTUAL_AUTH_KEY?.trim();
  const radio = new VirtualRadio(undefined, authKey ? { authKey } : {});
  try {
    const name = cmd.device ?? 'esp32';
    const device = await radio.ensureDevice(name);
    if (!cmd.json) io.stdout.write(`virtual ESP32 "${device.name}" (${device.address}) started\n`);
    if (io.signal.aborted) throw new CancelledError('cancelled while starting the virtual ESP32');
  } catch (err) {
    await radio.stopAll();
    throw err;
  }
  return { client: new BleOtaClient({ noble: radio.noble, timeouts }), close: () => radio.stopAll() };
}

async function withRadio<T>(cmd: Run, io: Io, timeouts: Partial<Timeouts>, use: (client: BleOtaClient) => Promise<T>): Promise<T> {
  const radio = await openRadio(cmd, io, timeouts);
  try {
    return await use(radio.client);
  } finally {
    await radio.close();
  }
}

export async function runCommand(cmd: Run, io: Io): Promise<void> {
  switch (cmd.kind) {
    case 'scan':
      return scan(cmd, io);
    case 'info':
      return info(cmd, io);
    case 'upload':
      return upload(cmd, io);
  }
}

async function scan(cmd: Extract<Run, { kind: 'scan' }>, io: Io): Promise<void> {
  // A malformed --device address is a mistake to report, not a filter that matches nothing.
  const target = cmd.device === undefined ? undefined : targetOf(cmd.device);
  if (target?.address) normalizeAddress(target.address);
  const seen = await withRadio(cmd, io, {}, (client) => {
    if (!cmd.json) io.stdout.write(`scanning for ${cmd.durationMs / 1000} s...\n`);
    return client.scan(cmd.durationMs, io.signal);
  });
  const devices = target ? seen.filter((d) => isTarget(d, target)) : seen;
  if (cmd.json) {
    io.stdout.write(JSON.stringify(devices.map((d) => ({ ...d, name: d.name ?? null }))) + '\n');
  } else {
    io.stdout.write(formatScan(devices, cmd.durationMs));
  }
  // Ctrl-C ends a scan early: what was seen is printed, and the status still says "interrupted".
  if (io.signal.aborted) throw new CancelledError('the scan was cancelled');
}

function isTarget(d: SeenDevice, target: Target): boolean {
  if (target.address) return d.address?.toLowerCase() === normalizeAddress(target.address);
  return d.name === target.name;
}

async function info(cmd: Extract<Run, { kind: 'info' }>, io: Io): Promise<void> {
  const timeouts = cmd.timeoutMs ? { scanMs: cmd.timeoutMs } : {};
  const view = await withRadio(cmd, io, timeouts, async (client) => {
    const connection = await client.connect(targetOf(cmd.device), { signal: io.signal });
    try {
      return infoView(await connection.info());
    } finally {
      await connection.close();
    }
  });
  io.stdout.write(cmd.json ? JSON.stringify(view) + '\n' : formatInfo(view));
}

async function upload(cmd: Extract<Run, { kind: 'upload' }>, io: Io): Promise<void> {
  const image = readImage(cmd.file);
  const summary = imageSummary(checkImage(cmd.file, image));
  const key = deviceKey(cmd);
  if (!cmd.json) io.stdout.write(formatImage(cmd.file, summary));

  // With --json stdout carries only the result, so progress goes to stderr.
  const progressStream = cmd.json ? io.stderr : io.stdout;
  const progress = new ProgressReporter(progressStream);
  let phase: Phase | undefined;
  const timeouts = cmd.timeoutMs ? { scanMs: cmd.timeoutMs } : {};
  let result: UpdateResult;
  try {
    result = await withRadio(cmd, io, timeouts, (client) =>
      client.update({
        target: targetOf(cmd.device),
        image,
        confirm: cmd.confirm,
        protocol: cmd.protocol,
        requireSignature: cmd.requireSignature,
        key,
        signal: io.signal,
        onProgress: (p) => {
          phase = p.phase;
          progress.update(p);
        },
      }),
    );
  } catch (err) {
    progress.finish();
    if (err instanceof BleOtaError && err.code === 'CANCELLED') throw new CancelledError(cancelledMessage(phase));
    throw err;
  }
  progress.finish();
  io.stdout.write(cmd.json ? JSON.stringify(result) + '\n' : formatResult(result));
}

/** The device's key: from --key-file, else ESP32_BLE_OTA_KEY; the client checks its format. */
function deviceKey(cmd: Extract<Run, { kind: 'upload' }>): string | undefined {
  if (cmd.keyFile !== undefined) {
    let text: string;
    try {
      text = readFileSync(cmd.keyFile, 'utf8');
    } catch (err) {
      throw new BleOtaError('INVALID_ARGUMENT', `--key-file ${cmd.keyFile}: cannot read it (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);
    }
    if (text.trim() === '') throw new BleOtaError('INVALID_ARGUMENT', `--key-file ${cmd.keyFile} is empty: it should hold the device's key, 64 hex digits`);
    return text.trim();
  }
  const env = process.env.ESP32_BLE_OTA_KEY?.trim();
  return env ? env : undefined;
}

/** What a cancellation leaves on the device depends on how far the update got. */
function cancelledMessage(phase: Phase | undefined): string {
  if (phase === 'restarting' || phase === 'confirming') {
    return 'the update was cancelled after the upload: the device may run the new image unconfirmed, and returns to the old one unless it is confirmed';
  }
  return 'the update was cancelled; the device keeps its old firmware';
}

/** The client validates again; checking here names the file and fails before any radio starts. */
function checkImage(file: string, image: Buffer) {
  try {
    return validateImage(image);
  } catch (err) {
    if (err instanceof ImageError) throw new ImageError(err.code, `${file}: ${err.message}`, { cause: err });
    throw err;
  }
}

function readImage(file: string): Buffer {
  try {
    return readFileSync(file);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    const why =
      code === 'ENOENT' ? 'no such file' : code === 'EISDIR' ? 'it is a directory' : code === 'EACCES' ? 'permission denied' : (err as Error).message;
    throw new CliError('FILE_UNREADABLE', `cannot read ${file}: ${why}`);
  }
}
