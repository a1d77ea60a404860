/**
 * The commands: three on the OTA client, four on signing keys and images
 * (no radio). Each returns normally on success and throws on failure; main
 * turns what they throw into the message and the exit status.
 */
import { createHash } from 'node:crypto';
import { closeSync, constants, existsSync, fstatSync, openSync, readFileSync, type Stats, statSync, writeFileSync } from 'node:fs';
import { Socket } from 'node:net';
import { join, resolve } from 'node:path';
import { isatty } from 'node:tty';
import { defaultCacheDir, ImageCache } from '../client/image-cache';
import { BleOtaClient, checkUpdate, Phase, Timeouts, UpdateResult } from '../client/ota-client';
import type { NobleLike } from '../client/noble-types';
import { namesDevice, normalizeAddress } from '../client/scanner';
import { BleOtaError, CancelledError, ImageError } from '../errors';
import { readRegularFileSync } from '../regular-file';
import { ESP_IMAGE_MAGIC, imageSummary, parseEspImage } from '../image/esp-image';
import { isSampleImage, sampleImage } from '../image/sample-image';
import {
  generateSigningKey,
  publicKeyPem,
  readSignatureSector,
  signatureSectorOffset,
  signImage,
  signingKeyDigest,
  signingKeyInfo,
  SIGNATURE_SECTOR_SIZE,
  type SignatureFailure,
  type SigningKeyInfo,
  verifyImageSignature,
} from '../image/signature';
import { MAX_APP_SIZE, validateImage } from '../image/validate';
import { loadSystemNoble, releaseSystemBluetooth } from '../noble-loader';
import { keyPartition, newSecret, parseDeviceId, parseSecret } from '../client/session';
import { KEY_PARTITION_OFFSET } from '../protocol/constants';
import { VirtualRadio, virtualDefaultsFromEnv } from '../virtual/virtual-radio';
import { Command, targetOf, UsageError } from './args';
import {
  formatImage,
  formatInfo,
  formatKeygen,
  formatResult,
  formatSample,
  formatScan,
  formatSigned,
  formatVerified,
  infoView,
  KeygenView,
  PubkeyView,
  SampleView,
  scanView,
  schemeName,
  SignView,
  VerifyView,
} from './output';
import { ProgressReporter, ProgressStream } from './progress';

export interface Io {
  stdout: ProgressStream;
  stderr: ProgressStream;
  /** Aborted on Ctrl-C. */
  signal: AbortSignal;
  /**
   * The Bluetooth to use without --virtual instead of the system's (a
   * virtual radio's noble in tests, such as one that hides addresses as
   * macOS does); its owner releases it.
   */
  noble?: NobleLike;
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
/** The commands that use Bluetooth (or the virtual ESP32). */
type RadioRun = Extract<Run, { kind: 'scan' | 'info' | 'upload' }>;

/** The client on the chosen radio, and how to release the radio afterwards. */
interface Radio {
  client: BleOtaClient;
  close(): Promise<void>;
}

async function openRadio(cmd: RadioRun, io: Io, timeouts: Partial<Timeouts>): Promise<Radio> {
  if (!cmd.virtual) {
    // Load noble now: where Bluetooth is unavailable this throws the
    // loader's explanation before anything else happens.
    if (io.noble) return { client: new BleOtaClient({ noble: io.noble, timeouts }), close: async () => undefined };
    const noble = loadSystemNoble();
    return { client: new BleOtaClient({ noble, timeouts }), close: async () => releaseSystemBluetooth() };
  }
  // As in Node-RED: BLE_OTA_VIRTUAL_SECRET and BLE_OTA_VIRTUAL_SIGNING_KEY make
  // the virtual device our firmware's default build (provisioned, signed images only).
  const radio = new VirtualRadio(undefined, virtualDefaultsFromEnv());
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

async function withRadio<T>(cmd: RadioRun, io: Io, timeouts: Partial<Timeouts>, use: (client: BleOtaClient) => Promise<T>): Promise<T> {
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
    case 'keygen':
      return keygen(cmd, io);
    case 'sign':
      return sign(cmd, io);
    case 'verify':
      return verify(cmd, io);
    case 'pubkey':
      return pubkey(cmd, io);
    case 'secret':
      return secret(cmd, io);
    case 'provision':
      return provision(cmd, io);
    case 'sample-image':
      return sample(cmd, io);
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
  const devices = target ? seen.filter((d) => namesDevice(d, target)) : seen;
  if (cmd.json) {
    io.stdout.write(JSON.stringify(devices.map(scanView)) + '\n');
  } else {
    io.stdout.write(formatScan(devices, cmd.durationMs));
  }
  // Ctrl-C ends a scan early: what was seen is printed, and the status still says "interrupted".
  if (io.signal.aborted) throw new CancelledError('the scan was cancelled');
}

async function info(cmd: Extract<Run, { kind: 'info' }>, io: Io): Promise<void> {
  const timeouts = cmd.timeoutMs ? { scanMs: cmd.timeoutMs } : {};
  const view = await withRadio(cmd, io, timeouts, async (client) => {
    const connection = await client.connect(targetOf(cmd.device), { signal: io.signal, secret: await readSecret(cmd.secretFile, io.signal), deviceId: cmd.deviceId });
    try {
      return infoView(await connection.info());
    } finally {
      await connection.close();
    }
  });
  io.stdout.write(cmd.json ? JSON.stringify(view) + '\n' : formatInfo(view));
}

async function upload(cmd: Extract<Run, { kind: 'upload' }>, io: Io): Promise<void> {
  refuseSharedPipe(
    [
      [cmd.file, cmd.file],
      [`--secret-file ${cmd.secretFile}`, cmd.secretFile],
      [`--public-key ${cmd.publicKey}`, cmd.publicKey],
      [`--base ${cmd.base}`, cmd.base],
    ],
    'upload',
  );
  const image = await readImage(cmd.file, io.signal);
  const summary = imageSummary(checkImage(cmd.file, image));
  if (isSampleImage(image) && !cmd.virtual) {
    throw new ImageError(
      'IMAGE_SAMPLE',
      `${cmd.file} is a sample image (esp32-ble-ota sample-image): its code is filler, which a real device would boot and crash on. Send it with --virtual, or send your build's .bin.`,
    );
  }
  const secret = await readSecret(cmd.secretFile, io.signal);
  const publicKey = cmd.publicKey === undefined ? undefined : await readKey(cmd.publicKey, io.signal);
  const baseImage = cmd.base === undefined ? undefined : await readBase(cmd.base, io.signal);
  // A virtual device starts afresh on every run, running its built-in image: a cache gains it nothing unless asked for.
  const cacheDir = cmd.noCache ? undefined : (cmd.cacheDir ?? (cmd.virtual ? undefined : defaultCacheDir()));
  // What the cache holds under the running image's name but does not use (a FIFO, an unreadable file) is said here, once.
  const onWarning = (message: string) => io.stderr.write(`warning: ${message}\n`);
  const cache = cacheDir === undefined ? undefined : new ImageCache({ dir: resolve(cacheDir), onWarning });
  if (!cmd.json) io.stdout.write(formatImage(cmd.file, summary));

  // With --json stdout carries only the result, so progress goes to stderr.
  const progressStream = cmd.json ? io.stderr : io.stdout;
  const progress = new ProgressReporter(progressStream);
  let phase: Phase | undefined;
  const timeouts = cmd.timeoutMs ? { scanMs: cmd.timeoutMs } : {};
  const options = {
    target: targetOf(cmd.device),
    image,
    confirm: cmd.confirm,
    protocol: cmd.protocol,
    requireSignature: cmd.requireSignature,
    publicKey,
    secret,
    allowUnauthenticated: cmd.allowUnauthenticated,
    deviceId: cmd.deviceId,
    baseImage,
    cache,
  };
  // What the client checks before any radio work (the signature, the secret, ...), checked before this opens one.
  checkUpdate(options);
  let result: UpdateResult;
  try {
    result = await withRadio(cmd, io, timeouts, (client) =>
      client.update({
        ...options,
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
  // The update succeeded; only the next one may be slower for it (the JSON has it as cache.error).
  if (result.cache?.error && !cmd.json) io.stderr.write(`warning: ${result.cache.error}; the next update of this device sends the full image\n`);
}

/** --base: an image file whose first byte is an ESP image's (0xE9); anything else is a mistake in the command line. */
async function readBase(file: string, signal?: AbortSignal): Promise<Buffer> {
  const data = await readImage(file, signal, '--base');
  if (data[0] !== ESP_IMAGE_MAGIC) {
    throw new UsageError(
      `--base ${file} is not an ESP32 app image (its first byte is 0x${data[0].toString(16).padStart(2, '0')}, not 0xE9): give the .bin the device runs now, as idf.py build wrote it, or leave --base out`,
      'upload',
    );
  }
  return data;
}

/**
 * The fleet secret: from --secret-file, else ESP32_BLE_OTA_SECRET. A
 * malformed one is refused here, naming where it came from: the client's
 * own message could not say which of the two (or a virtual device's
 * BLE_OTA_VIRTUAL_SECRET) to correct.
 */
async function readSecret(file: string | undefined, signal?: AbortSignal): Promise<string | undefined> {
  let text: string;
  let from: string;
  if (file !== undefined) {
    const tooLarge = (size: string) => new BleOtaError('INVALID_ARGUMENT', `--secret-file ${file} is ${size}: it should hold the fleet secret, 64 hex digits.`);
    const give = 'give the file holding the fleet secret (a pipe such as /dev/stdin will do), or the secret itself in ESP32_BLE_OTA_SECRET';
    text = (await readFileOrFail(file, { what: `--secret-file ${file}`, give, limit: SMALL_FILE_LIMIT, tooLarge }, signal)).toString('utf8').trim();
    if (text === '') throw new BleOtaError('INVALID_ARGUMENT', `--secret-file ${file} is empty: it should hold the fleet secret, 64 hex digits.`);
    from = `--secret-file ${file}`;
  } else {
    text = process.env.ESP32_BLE_OTA_SECRET?.trim() ?? '';
    if (text === '') return undefined;
    from = 'ESP32_BLE_OTA_SECRET';
  }
  try {
    parseSecret(text);
  } catch (err) {
    // parseSecret's message never repeats the value.
    throw new BleOtaError('INVALID_ARGUMENT', `${from}: ${(err as Error).message}`);
  }
  return text;
}

/** What a cancellation leaves on the device depends on how far the update got. */
function cancelledMessage(phase: Phase | undefined): string {
  if (phase === 'restarting' || phase === 'confirming') {
    return 'the update was cancelled after the upload: the device may run the new image unconfirmed, and returns to the old one unless it is confirmed';
  }
  return 'the update was cancelled; the device keeps its old firmware';
}

// ---------------------------------------------------------------------------
// Signing keys and signed images (lib/image/signature.ts)

function keygen(cmd: Extract<Run, { kind: 'keygen' }>, io: Io): void {
  // Checked before the key is made (RSA takes a moment); the write below refuses too.
  if (existsSync(cmd.out)) throw existsError(cmd.out);
  const pem = generateSigningKey(cmd.scheme);
  try {
    writeFileSync(cmd.out, pem, { flag: 'wx', mode: 0o600 });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') throw existsError(cmd.out);
    throw unwritable(cmd.out, err);
  }
  const view: KeygenView = { file: cmd.out, scheme: cmd.scheme, keyDigest: signingKeyDigest(pem).toString('hex') };
  io.stdout.write(cmd.json ? JSON.stringify(view) + '\n' : formatKeygen(view));
}

function existsError(file: string): CliError {
  return new CliError('FILE_EXISTS', `${file} already exists; keygen never replaces a key (devices that trust it would take no more updates). Choose another file name.`);
}

async function sign(cmd: Extract<Run, { kind: 'sign' }>, io: Io): Promise<void> {
  refuseSharedPipe([[cmd.file, cmd.file], ...cmd.keys.map((k): [string, string] => [`--key ${k}`, k])], 'sign');
  const image = await readImage(cmd.file, io.signal);
  const parsed = checkImage(cmd.file, image);
  refuseToOverwrite(cmd.out, [cmd.file, ...cmd.keys]);
  const keys: string[] = [];
  for (const file of cmd.keys) {
    const pem = await readKey(file, io.signal);
    if (!keyInfo(file, pem).isPrivate) throw new BleOtaError('INVALID_ARGUMENT', `${file}: this is a public key; signing needs the private key.`);
    keys.push(pem);
  }

  // Where the device looks for the signatures: the blocks must land there.
  const sectorAt = signatureSectorOffset(parsed.imageLength);
  const existing = parsed.signature;
  if (existing !== undefined && !cmd.append) {
    throw new BleOtaError(
      'INVALID_ARGUMENT',
      `${cmd.file} is already signed (${existing.blockCount} signature block(s)). Add --append to add a signature to it, or sign the unsigned image.`,
    );
  }
  const end = existing !== undefined ? sectorAt + SIGNATURE_SECTOR_SIZE : sectorAt;
  if (image.length > end) {
    throw new BleOtaError(
      'INVALID_ARGUMENT',
      `${cmd.file} has ${image.length - end} byte(s) after ${existing ? 'its signature sector' : 'the image and its padding to 4 KiB'}, ` +
        `so the new signature would not be at 0x${sectorAt.toString(16)}, where the device looks for it. Sign the .bin that idf.py build wrote.`,
    );
  }

  const signed = signImage(image, keys, { append: cmd.append });
  const sector = readSignatureSector(signed, parsed.imageLength);
  const kept = existing?.blockCount ?? 0;
  // A signed image that does not verify is a bug here, never something to write.
  if (sector.offset !== sectorAt || sector.blocks.length !== kept + keys.length || parseEspImage(signed).imageLength !== parsed.imageLength) {
    throw new Error(`sign: the signature sector came out wrong (${sector.blocks.length} block(s) at 0x${sector.offset.toString(16)})`);
  }
  keys.forEach((pem, i) => {
    const check = verifyImageSignature(signed, parsed.imageLength, { publicKeyPem: pem }, { anyBlock: true });
    if (!check.ok) throw new Error(`sign: key ${i + 1} does not verify on the signed image: ${check.message}`);
  });

  try {
    writeFileSync(cmd.out, signed);
  } catch (err) {
    throw unwritable(cmd.out, err);
  }
  const view: SignView = {
    file: cmd.out,
    image: cmd.file,
    size: signed.length,
    sectorOffset: sector.offset,
    blocks: sector.blocks.map((b) => ({ index: b.index, scheme: b.scheme, keyDigest: b.keyDigest.toString('hex'), added: b.index >= kept })),
  };
  io.stdout.write(cmd.json ? JSON.stringify(view) + '\n' : formatSigned(view));
}

/** verify's error code for each way an image fails to verify. */
const VERIFY_CODES: Record<SignatureFailure, string> = {
  unsigned: 'IMAGE_NOT_SIGNED',
  untrusted: 'SIGNATURE_UNTRUSTED',
  'digest-mismatch': 'SIGNATURE_DIGEST_MISMATCH',
  'bad-signature': 'SIGNATURE_INVALID',
};

async function verify(cmd: Extract<Run, { kind: 'verify' }>, io: Io): Promise<void> {
  refuseSharedPipe(
    [
      [cmd.file, cmd.file],
      [`--public-key ${cmd.publicKey}`, cmd.publicKey],
    ],
    'verify',
  );
  const image = await readImage(cmd.file, io.signal);
  const parsed = checkImage(cmd.file, image);
  const pem = await readKey(cmd.publicKey, io.signal);
  keyInfo(cmd.publicKey, pem);
  const result = verifyImageSignature(image, parsed.imageLength, { publicKeyPem: pem });
  if (!result.ok) throw new CliError(VERIFY_CODES[result.reason], `${cmd.file}: ${result.message}`);
  const view: VerifyView = { file: cmd.file, verified: true, block: result.index, scheme: result.scheme, keyDigest: result.keyDigest.toString('hex') };
  io.stdout.write(cmd.json ? JSON.stringify(view) + '\n' : formatVerified(view, cmd.publicKey));
}

async function pubkey(cmd: Extract<Run, { kind: 'pubkey' }>, io: Io): Promise<void> {
  const pem = await readKey(cmd.key, io.signal);
  const info = keyInfo(cmd.key, pem);
  const publicKey = publicKeyPem(pem);
  const keyDigest = info.keyDigest.toString('hex');
  if (cmd.out !== undefined) {
    refuseToOverwrite(cmd.out, [cmd.key]);
    try {
      writeFileSync(cmd.out, publicKey);
    } catch (err) {
      throw unwritable(cmd.out, err);
    }
  }
  if (cmd.json) {
    const view: PubkeyView = { scheme: info.scheme, keyDigest, publicKey, file: cmd.out ?? null };
    io.stdout.write(JSON.stringify(view) + '\n');
  } else if (cmd.out !== undefined) {
    io.stdout.write(`wrote the ${schemeName(info.scheme)} public key of ${cmd.key} to ${cmd.out}\npublic key digest: ${keyDigest}\n`);
  } else {
    // stdout carries the PEM alone, so that it can be redirected to a file.
    io.stdout.write(publicKey);
    io.stderr.write(`public key digest: ${keyDigest}\n`);
  }
}

// ---------------------------------------------------------------------------
// Fleet secret and device provisioning (lib/client/session.ts)

function secret(cmd: Extract<Run, { kind: 'secret' }>, io: Io): void {
  const hex = newSecret().toString('hex');
  try {
    writeFileSync(cmd.out, `${hex}\n`, { flag: 'wx', mode: 0o600 });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') {
      throw new CliError('FILE_EXISTS', `${cmd.out} already exists; secret never replaces one (the devices provisioned from it would no longer answer). Choose another file name.`);
    }
    throw unwritable(cmd.out, err);
  }
  const next = `Give it to the Node-RED device node (Fleet secret) and to ${'esp32-ble-ota'} upload --secret-file, and provision each device with it: esp32-ble-ota provision --secret-file ${cmd.out} --device-id MAC --out key.bin`;
  io.stdout.write(cmd.json ? JSON.stringify({ file: cmd.out }) + '\n' : `wrote a new fleet secret to ${cmd.out} (readable by you only)\n${next}\n`);
}

async function provision(cmd: Extract<Run, { kind: 'provision' }>, io: Io): Promise<void> {
  const text = await readSecret(cmd.secretFile, io.signal);
  if (text === undefined) {
    throw new BleOtaError('INVALID_ARGUMENT', 'provision needs the fleet secret: --secret-file PATH, or ESP32_BLE_OTA_SECRET (esp32-ble-ota secret makes one).');
  }
  const id = parseDeviceId(cmd.deviceId);
  const part = keyPartition(parseSecret(text), id);
  refuseToOverwrite(cmd.out, cmd.secretFile ? [cmd.secretFile] : []);
  try {
    writeFileSync(cmd.out, part, { flag: 'wx', mode: 0o600 });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') {
      throw new CliError(
        'FILE_EXISTS',
        `${cmd.out} already exists; provision never replaces a file (it may be another device's key, or something else entirely). Choose another file name, or delete the old key file once it is flashed.`,
      );
    }
    throw unwritable(cmd.out, err);
  }
  const offset = `0x${KEY_PARTITION_OFFSET.toString(16)}`;
  const esptool = `esptool.py${cmd.chip ? ` --chip ${cmd.chip}` : ''} write_flash ${offset} ${cmd.out}`;
  const deviceId = [...id].map((b) => b.toString(16).padStart(2, '0')).join(':');
  if (cmd.json) {
    io.stdout.write(JSON.stringify({ file: cmd.out, deviceId, offset: KEY_PARTITION_OFFSET, esptool }) + '\n');
    return;
  }
  io.stdout.write(
    `wrote the key partition of device ${deviceId} to ${cmd.out} (readable by you only)\n` +
      `flash it once over USB, into the "ble_ota_key" partition of firmware/partitions.csv:\n  ${esptool}\n` +
      `(with flash encryption on, add --encrypt). Then delete ${cmd.out}: the device holds the key, and the secret derives it again.\n`,
  );
}

/** A key file's text; key files are small, so anything large is not one. */
async function readKey(file: string, signal?: AbortSignal): Promise<string> {
  const tooLarge = (size: string) => new BleOtaError('INVALID_ARGUMENT', `${file}: ${size} is too large for a PEM key.`);
  return (await readFileOrFail(file, { what: file, give: 'give the PEM key file', limit: SMALL_FILE_LIMIT, tooLarge }, signal)).toString('utf8');
}

/** The key's scheme and digest; a file that is no usable key is named in the message (never its contents). */
function keyInfo(file: string, pem: string): SigningKeyInfo {
  try {
    return signingKeyInfo(pem);
  } catch (err) {
    if (err instanceof BleOtaError) throw new BleOtaError(err.code, `${file}: ${err.message}`, { cause: err });
    throw err;
  }
}

/** Writing the output over an input (the image, a key) would destroy it. */
function refuseToOverwrite(out: string, inputs: readonly string[]): void {
  for (const input of inputs) {
    if (sameFile(out, input)) {
      throw new BleOtaError('INVALID_ARGUMENT', `--out ${out} is ${input}, an input; write to another file.`);
    }
  }
}

function sameFile(a: string, b: string): boolean {
  if (resolve(a) === resolve(b)) return true;
  try {
    const sa = statSync(a);
    const sb = statSync(b);
    return sa.dev === sb.dev && sa.ino === sb.ino;
  } catch {
    return false;
  }
}

function unwritable(file: string, err: unknown): CliError {
  const code = (err as NodeJS.ErrnoException).code;
  const why = code === 'ENOENT' ? 'its folder does not exist' : code === 'EISDIR' ? 'it is a directory' : code === 'EACCES' ? 'permission denied' : (err as Error).message;
  return new CliError('FILE_UNWRITABLE', `cannot write ${file}: ${why}`);
}

// ---------------------------------------------------------------------------
// Sample images (lib/image/sample-image.ts)

function sample(cmd: Extract<Run, { kind: 'sample-image' }>, io: Io): void {
  const image = sampleImage({ projectName: cmd.projectName, version: cmd.version, chip: cmd.chip, size: cmd.size });
  const summary = imageSummary(parseEspImage(image));
  const view: SampleView = {
    file: cmd.out,
    project: summary.project,
    version: summary.version,
    chip: summary.chip,
    size: image.length,
    sha256: createHash('sha256').update(image).digest('hex'),
  };
  if (cmd.out === '-') {
    if (io.stdout.isTTY) throw new CliError('FILE_UNWRITABLE', 'standard output is a terminal: redirect it to a file or pipe it on (--out - | curl --data-binary @- ...).');
    io.stdout.write(image);
    io.stderr.write(formatSample(view));
    return;
  }
  if (existsSync(cmd.out) && statSync(cmd.out).isDirectory()) {
    throw new UsageError(`--out ${cmd.out} is a directory: give a file name, e.g. --out ${join(cmd.out, 'app.bin')}`, 'sample-image');
  }
  // Replacing an earlier sample is what a second run means; replacing anything else (a build's
  // .bin, a key) would lose it.
  if (existsSync(cmd.out) && !(statSync(cmd.out).isFile() && isSampleImage(readFileSync(cmd.out)))) {
    throw new CliError('FILE_EXISTS', `${cmd.out} already exists and is not a sample image; sample-image replaces only its own. Choose another file name.`);
  }
  try {
    writeFileSync(cmd.out, image);
  } catch (err) {
    throw unwritable(cmd.out, err);
  }
  io.stdout.write(cmd.json ? JSON.stringify(view) + '\n' : formatSample(view));
}

// ---------------------------------------------------------------------------
// Files

/** The client validates again; checking here names the file and fails before any radio starts. */
function checkImage(file: string, image: Buffer) {
  try {
    return validateImage(image);
  } catch (err) {
    if (err instanceof ImageError) throw new ImageError(err.code, `${file}: ${err.message}`, { cause: err });
    throw err;
  }
}

/** An image file: a regular file no larger than an app partition can be, checked before it is read. */
async function readImage(file: string, signal?: AbortSignal, option = ''): Promise<Buffer> {
  const what = option ? `${option} ${file}` : file;
  const tooLarge = (size: string) =>
    new ImageError('IMAGE_TOO_LARGE', `${what} is ${size}: no ESP32 app image is larger than the 16 MB of the largest app partition. Give the app image (build/<project>.bin).`);
  const data = await readFileOrFail(file, { what, give: option ? 'give the image the device runs' : 'give the app image file', limit: MAX_APP_SIZE, tooLarge }, signal);
  // An empty image is refused by the image checks with their own words; an empty base would pass unnoticed.
  if (option && data.length === 0) throw new CliError('FILE_UNREADABLE', `${what} is empty: give the image the device runs.`);
  return data;
}

/**
 * A pipe gives its bytes once: named twice (the image and --base as one FIFO,
 * /dev/stdin for two options), the second read would find it empty, or wait
 * for a writer no one means to start. Refused before anything is read.
 */
function refuseSharedPipe(files: ReadonlyArray<readonly [what: string, file: string | undefined]>, topic: 'upload' | 'sign' | 'verify'): void {
  const pipes = new Map<string, string>();
  for (const [what, file] of files) {
    if (file === undefined) continue;
    let s: Stats;
    try {
      s = statSync(file);
    } catch {
      continue; // the read says why
    }
    if (!s.isFIFO()) continue;
    const first = pipes.get(`${s.dev}:${s.ino}`);
    if (first !== undefined) throw new UsageError(`${what} is the same pipe as ${first}, and a pipe can be read only once: give each its own file or pipe`, topic);
    pipes.set(`${s.dev}:${s.ino}`, what);
  }
}

/** Key and secret files are small: anything larger is not one, and is not read. */
const SMALL_FILE_LIMIT = 64 * 1024;

interface ReadRule {
  /** How messages name the file (with its option). */
  what: string;
  /** What to give instead, for a file that cannot be one. */
  give: string;
  limit: number;
  /** The error for a file over the limit, given its size ("N bytes", "more than N bytes"). */
  tooLarge: (size: string) => Error;
}

/**
 * A file the user named: a regular file of at most `limit` bytes, or a pipe
 * (`--secret-file /dev/stdin`, a shell's `<(...)`, a FIFO), read to its end
 * but never past `limit`. Devices and sockets are refused before they are
 * opened: /dev/zero reads without end, and opening a device may act on it.
 * A pipe waits for its writer as any tool reading one does, but never past
 * a cancel (Ctrl-C, SIGTERM).
 */
async function readFileOrFail(file: string, rule: ReadRule, signal?: AbortSignal): Promise<Buffer> {
  const unreadable = (err: unknown) => {
    const code = (err as NodeJS.ErrnoException).code;
    const why = code === 'ENOENT' ? 'no such file' : code === 'EACCES' || code === 'EPERM' ? 'permission denied' : (err as Error).message;
    return new CliError('FILE_UNREADABLE', `cannot read ${file}: ${why}`);
  };
  const check = (s: Stats) => {
    if (s.isDirectory()) throw new CliError('FILE_UNREADABLE', `cannot read ${file}: it is a directory`);
    if (!s.isFile() && !s.isFIFO()) throw new CliError('FILE_UNREADABLE', notFileOrPipe(file, s, rule));
    if (s.size > rule.limit) throw rule.tooLarge(`${s.size} bytes`);
  };
  let seen: Stats;
  try {
    seen = statSync(file);
  } catch (err) {
    throw unreadable(err);
  }
  check(seen);
  if (seen.isFIFO()) return readPipe(file, seen, rule, unreadable, signal);
  try {
    return readRegularFileSync(file, (s) => {
      check(s);
      if (!s.isFile()) throw new CliError('FILE_UNREADABLE', `${rule.what} changed while it was read: ${rule.give}.`);
    });
  } catch (err) {
    throw err instanceof CliError || err instanceof BleOtaError ? err : unreadable(err);
  }
}

/**
 * Why a file that is neither a regular file nor a pipe is refused. Standard
 * input named (/dev/stdin) is said as such: it is a terminal when nothing
 * was piped in, and a socket when Node's spawn gave it (stdio 'pipe').
 */
function notFileOrPipe(file: string, s: Stats, rule: ReadRule): string {
  const kind = s.isSocket() ? 'a socket' : isatty(0) && s.isCharacterDevice() ? 'a terminal' : 'a device';
  let stdin: Stats | undefined;
  try {
    stdin = fstatSync(0);
  } catch {
    // no standard input at all
  }
  const named = ['/dev/stdin', '/dev/fd/0', '/proc/self/fd/0'].includes(resolve(file));
  if (!named || stdin === undefined || stdin.dev !== s.dev || stdin.ino !== s.ino) return `${rule.what} is a device or a socket, not a file or a pipe: ${rule.give}.`;
  const how = s.isSocket() ? ", as Node's spawn makes it with stdio 'pipe'; a socket cannot be opened by its name" : '';
  return `${rule.what} is standard input, which is ${kind} here${how}: pipe it in ("producer | esp32-ble-ota ..."), or ${rule.give}.`;
}

/**
 * A pipe, read to its end through Node's event loop, at most `rule.limit`
 * bytes. Opened without waiting and read as Node reads its own stdin, so a
 * cancel ends the wait for its writer or its data at once, and nothing is
 * left for the tool's exit to wait on (a read in Node's thread pool would
 * hold the exit until a writer came). Linux reports the end of a FIFO
 * only once a writer has come and gone, so a writer may come late; other
 * systems may report it at once (the pipe is then empty).
 */
async function readPipe(file: string, seen: Stats, rule: ReadRule, unreadable: (err: unknown) => Error, signal?: AbortSignal): Promise<Buffer> {
  if (signal?.aborted) throw new CancelledError(`cancelled before ${rule.what} was read`);
  let fd: number;
  try {
    fd = openSync(file, constants.O_RDONLY | constants.O_NONBLOCK);
  } catch (err) {
    throw unreadable(err);
  }
  try {
    const opened = fstatSync(fd);
    // Another file in the pipe's place since it was looked at: not read.
    if (!opened.isFIFO() || opened.dev !== seen.dev || opened.ino !== seen.ino) throw new CliError('FILE_UNREADABLE', `${rule.what} changed while it was opened: ${rule.give}.`);
  } catch (err) {
    closeSync(fd);
    throw err instanceof CliError ? err : unreadable(err);
  }
  const pipe = new Socket({ fd, readable: true, writable: false });
  return new Promise<Buffer>((resolve, reject) => {
    const parts: Buffer[] = [];
    let got = 0;
    let done = false;
    const finish = (err: Error | undefined) => {
      if (done) return;
      done = true;
      signal?.removeEventListener('abort', cancel);
      pipe.destroy(); // closes the descriptor
      if (err) reject(err);
      else resolve(Buffer.concat(parts, got));
    };
    const cancel = () => finish(new CancelledError(`cancelled while waiting for ${rule.what} to be written`));
    signal?.addEventListener('abort', cancel, { once: true });
    pipe.on('data', (data: Buffer) => {
      got += data.length;
      if (got > rule.limit) finish(rule.tooLarge(`more than ${rule.limit} bytes`));
      else parts.push(data);
    });
    pipe.on('end', () => finish(undefined));
    pipe.on('error', (err) => finish(unreadable(err)));
  });
}
