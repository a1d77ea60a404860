/**
 * An update in protocol v2: check the device's OTA Info, BEGIN, stream with
 * a window, resume after a lost link, END, RESTART, then reconnect to the
 * restarted device and confirm the new image (docs/PROTOCOL.md).
 */
import { createHash } from 'node:crypto';
import { BleOtaError, CancelledError, DeviceError, ImageError, ProtocolError } from '../errors';
import { chipName } from '../image/esp-chips';
import type { EspImage } from '../image/esp-image';
import { compareVersions } from '../image/version';
import { verifyImageSignature } from '../image/signature';
import { BeginFlag, Command, Feature, RESTART_DELAY_MS, RunningState, Status, statusName, TransferState } from '../protocol/constants';
import { deflateChunks, streamFrom } from '../protocol/deflate-chunks';
import type { DeviceInfoV2 } from '../protocol/v2-codec';
import type { BleOtaClient, OtaConnection, Timeouts, UpdateOptions } from './ota-client';
import { CommandRefused, streamValueSize } from './v2-session';

export interface V2Result {
  mtu: number;
  packetSize: number;
  packets: number;
  transferMs: number;
  restarted: boolean;
  confirmed: boolean;
  runningVersion: string | undefined;
  resumes: number;
  skipped: boolean;
  previousVersion: string;
  /** The device proved it holds its key, on every answer the result rests on. */
  authenticated: boolean;
  /** The device's id, the same on every connection of the update (absent on info_version 1). */
  deviceId: Buffer | undefined;
}

export async function uploadV2(
  client: BleOtaClient,
  first: OtaConnection,
  image: EspImage,
  options: UpdateOptions,
  timeouts: Timeouts,
): Promise<V2Result> {
  const data = options.image;
  const onProgress = options.onProgress ?? (() => undefined);
  const address = first.peripheral.address;
  // Every later connection must reach the device the first one proved: the
  // address and name alone do not tell (another device can advertise them).
  // Once a link proved itself, every later one must too (allowUnauthenticated
  // is for devices that cannot, not for links that do not).
  let pinned = first.policy.deviceId;
  let proven = first.policy.requireSession === true;
  const reconnect = () =>
    client.connect(
      { address },
      {
        signal: options.signal,
        timeouts,
        secret: options.secret,
        allowUnauthenticated: options.allowUnauthenticated,
        deviceId: pinned,
        requireSession: proven,
      },
    );
  let conn = first;
  const opened: OtaConnection[] = [];
  try {
    let info: DeviceInfoV2;
    let authenticated: boolean;
    for (let tries = 0; ; tries++) {
      try {
        ({ info, authenticated } = await conn.v2!.provenInfo(timeouts.gattMs));
        pinned = info.deviceId;
        proven ||= authenticated;
        break;
      } catch (err) {
        // A read nothing answered, a link lost before anything was sent, or an
        // MTU exchange that never completed (CONNECT_FAILED: too small for a
        // session): once more, on a new connection.
        const lost = err instanceof BleOtaError && (err.code === 'DISCONNECTED' || err.code === 'GATT_TIMEOUT' || err.code === 'CONNECT_FAILED');
        if (!lost || tries > 0 || options.signal?.aborted) throw err;
        await conn.close();
        conn = await reconnect();
        opened.push(conn);
        if (!conn.v2) throw new ProtocolError('PROTOCOL_ERROR', 'after reconnecting, the device no longer offers protocol v2');
      }
    }
    if (info.chipId !== image.chipId) {
      throw new ImageError(
        'IMAGE_WRONG_CHIP',
        `the image is built for the ${chipName(image.chipId)}, but the device is an ${chipName(info.chipId)}; build the app for the device's chip (idf.py set-target)`,
      );
    }
    if (data.length > info.slotSize) {
      throw new ImageError(
        'IMAGE_TOO_LARGE',
        `the image (${data.length} bytes) does not fit the device's OTA slot (${info.slotSize} bytes); make the app smaller or give the slots more room in the partition table`,
      );
    }

    const previousVersion = info.app.version;
    const sameBuild =
      info.app.projectName === image.appDesc.projectName &&
      info.app.version === image.appDesc.version &&
      info.app.elfSha256.equals(image.appDesc.appElfSha256);
    if (options.skipIfRunning && sameBuild && info.runningState === RunningState.VALID) {
      return { mtu: conn.mtu, packetSize: 0, packets: 0, transferMs: 0, restarted: false, confirmed: true, runningVersion: previousVersion, resumes: 0, skipped: true, previousVersion, authenticated, deviceId: info.deviceId };
    }
    checkSignedForDevice(info, image, data, conn.link.describe());
    if (image.appDesc.secureVersion < info.app.secureVersion) {
      throw new ImageError(
        'SECURE_VERSION_TOO_OLD',
        `The image's secure_version ${image.appDesc.secureVersion} is below the ${info.app.secureVersion} of the firmware the device runs: the device refuses older images (anti-rollback). Nothing was sent; build the update with CONFIG_BOOTLOADER_APP_SECURE_VERSION ${info.app.secureVersion} or higher.`,
      );
    }
    if (options.allowDowngrade === false && info.app.projectName === image.appDesc.projectName) {
      const order = compareVersions(image.appDesc.version, previousVersion);
      if (order !== undefined && order < 0) {
        throw new ImageError(
          'DOWNGRADE_REFUSED',
          `the image's version ${image.appDesc.version} is older than the ${previousVersion} the device runs; allow downgrades to install it anyway`,
        );
      }
    }

    // Deflated chunks where the device inflates them and it pays (docs/PROTOCOL.md, Compression).
    const deflated = options.compress !== false && (info.features & Feature.DEFLATE) !== 0 ? deflateChunks(data) : undefined;
    // Only when it pays: a tenth less on air at the least (the device's inflate is not free).
    const compress = deflated !== undefined && deflated.length <= data.length * 0.9;
    const begin = {
      size: data.length,
      sha256: createHash('sha256').update(data).digest(),
      chipId: image.chipId,
      flags: (options.confirm === 'device' ? 0 : BeginFlag.CLIENT_CONFIRM) | (compress ? BeginFlag.DEFLATE : 0),
    };
    const attempts = options.resumeAttempts ?? 3;
    let resumes = 0;
    let packets = 0;
    let packetSize = 0;
    const transferStarted = Date.now();
    /**
     * After a lost link or an operation nothing answered (a lost request,
     * answer or notification): reconnect, within the attempts allowed; the
     * caller then asks OTA Info where the device is and goes on from there.
     */
    const recover = async (err: unknown): Promise<void> => {
      const lost = err instanceof BleOtaError && (err.code === 'DISCONNECTED' || err.code === 'GATT_TIMEOUT');
      if (!lost || resumes >= attempts || options.signal?.aborted) throw err;
      resumes++;
      onProgress({ phase: 'resuming', ...done(0, transferStarted), totalBytes: data.length });
      await conn.close();
      if (resumes > 1) await backoff(resumes - 2, options.signal);
      conn = await reconnect();
      opened.push(conn);
      if (!conn.v2) throw new ProtocolError('PROTOCOL_ERROR', 'after reconnecting, the device no longer offers protocol v2');
    };
    /** END answered OK already (its answer may have been lost): the image is selected, a restart pending. */
    const selected = (now: DeviceInfoV2) => now.transferState === TransferState.COMPLETE && now.transferSha256.equals(begin.sha256);

    // The device runs the new image already, awaiting confirmation: power
    // was lost after END, and it booted the selected image.
    const bootedNew = (now: DeviceInfoV2) =>
      now.runningState === RunningState.PENDING_VERIFY &&
      now.app.projectName === image.appDesc.projectName &&
      now.app.version === image.appDesc.version &&
      now.app.elfSha256.equals(image.appDesc.appElfSha256);
    let restartedAlready = false;
    for (;;) {
      const v2 = conn.v2!;
      try {
        if (resumes > 0) {
          const now = (await v2.provenInfo(timeouts.gattMs)).info;
          if (selected(now)) break;
          if (bootedNew(now)) {
            restartedAlready = true;
            break;
          }
        }
        await v2.subscribe();
        const answer = await v2.begin(begin, timeouts.gattMs);
        packetSize = streamValueSize(Math.min(answer.maxPacket, conn.mtu - 3)) - 4;
        // Progress counts image bytes; with DEFLATE, in proportion through the encoded rest.
        const report = (bytes: number) =>
          onProgress({
            phase: 'uploading',
            bytesSent: bytes,
            totalBytes: data.length,
            percent: Math.floor((bytes * 100) / data.length),
            bytesPerSecond: Math.round(bytes / Math.max((Date.now() - transferStarted) / 1000, 0.001)),
          });
        let stats;
        if (compress && deflated) {
          const from = answer.imageOffset ?? 0;
          const rest = streamFrom(deflated, from);
          stats = await v2.stream(rest, 0, answer.window, answer.maxPacket, timeouts.gattMs, ({ acked }) =>
            report(from + Math.floor(((data.length - from) * acked) / Math.max(rest.length, 1))),
            answer.offset,
          );
        } else {
          stats = await v2.stream(data, answer.offset, answer.window, answer.maxPacket, timeouts.gattMs, ({ acked }) => report(acked));
        }
        packets += stats.packets;
        onProgress({ phase: 'verifying', ...done(data.length, transferStarted) });
        await v2.command(Command.END, timeouts.verifyMs);
        break;
      } catch (err) {
        await recover(err);
      }
    }
    const transferMs = Date.now() - transferStarted;

    // RESTART. Its request or answer may be lost, and a link that drops
    // right after it is most likely the restart itself: in every case, the
    // reconnection tells (a device that did not restart still shows the
    // selected transfer, and gets RESTART again).
    let restarted = restartedAlready;
    let after: OtaConnection = conn;
    while (!restartedAlready) {
      onProgress({ phase: 'restarting', ...done(data.length, transferStarted) });
      try {
        await conn.v2!.command(Command.RESTART, timeouts.gattMs);
        conn.link.expectDisconnect();
        restarted = await conn.link.awaitDisconnect(timeouts.restartMs + RESTART_DELAY_MS);
      } catch (err) {
        const lost = err instanceof BleOtaError && (err.code === 'DISCONNECTED' || err.code === 'GATT_TIMEOUT');
        if (!lost || options.signal?.aborted) throw err;
      }
      await conn.close();
      onProgress({ phase: 'confirming', ...done(data.length, transferStarted) });
      after = await reconnectAfterRestart(reconnect, attempts - resumes, options.signal);
      opened.push(after);
      if (!after.v2) throw new ProtocolError('PROTOCOL_ERROR', 'after its restart, the device no longer offers protocol v2');
      let now: DeviceInfoV2;
      try {
        now = (await after.v2.provenInfo(timeouts.gattMs)).info;
      } catch (err) {
        conn = after;
        await recover(err);
        after = conn;
        now = (await after.v2!.provenInfo(timeouts.gattMs)).info;
      }
      if (!selected(now)) break;
      // The device never restarted: RESTART again.
      if (resumes >= attempts) {
        throw new DeviceError('CONFIRM_FAILED', 'the device did not restart after RESTART; restart it to run the new image, which then awaits confirmation');
      }
      resumes++;
      conn = after;
    }

    let confirmed: { ok: boolean; version: string };
    for (;;) {
      try {
        confirmed = await confirmNewImage(after, image, options.confirm ?? 'client', timeouts);
        break;
      } catch (err) {
        // A CONFIRM (or its answer) lost: reconnect and look again.
        conn = after;
        await recover(err);
        after = conn;
      }
    }
    return {
      mtu: conn.mtu,
      packetSize,
      packets,
      transferMs,
      restarted,
      confirmed: confirmed.ok,
      runningVersion: confirmed.version,
      resumes,
      skipped: false,
      previousVersion,
      authenticated: authenticated && (after.v2?.authenticated ?? false),
      deviceId: info.deviceId,
    };
  } catch (err) {
    throw err instanceof CommandRefused ? refusalError(err, data.length) : err;
  } finally {
    for (const c of opened) await c.close();
  }
}

function done(sent: number, started: number) {
  return {
    bytesSent: sent,
    totalBytes: sent,
    percent: 100,
    bytesPerSecond: Math.round(sent / Math.max((Date.now() - started) / 1000, 0.001)),
  };
}

/**
 * Waits before reconnection attempt n (from 0): 250 ms, doubling up to 4 s,
 * with a quarter of jitter, so that a client does not hammer a device that
 * is restarting or held by someone else, and two clients do not collide in
 * step. Ends early, with CANCELLED, when the signal aborts.
 */
export function backoff(attempt: number, signal?: AbortSignal): Promise<void> {
  const base = Math.min(250 * 2 ** attempt, 4000);
  const ms = base + Math.floor(Math.random() * base * 0.25);
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(new CancelledError());
    const onAbort = () => {
      clearTimeout(timer);
      reject(new CancelledError());
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

/** Reconnects to the restarted device, trying again (`retries` more times, backing off) when it does not answer at once. */
async function reconnectAfterRestart(reconnect: () => Promise<OtaConnection>, retries: number, signal?: AbortSignal): Promise<OtaConnection> {
  for (let attempt = 0; ; attempt++) {
    try {
      return await reconnect();
    } catch (err) {
      if (err instanceof BleOtaError && err.code === 'CANCELLED') throw err;
      if (attempt < retries && !signal?.aborted) {
        await backoff(attempt, signal);
        continue;
      }
      throw new DeviceError(
        'CONFIRM_FAILED',
        `the device did not come back after its restart (${(err as Error).message}); unless a client confirms the new image, the device returns to its previous firmware`,
        { cause: err },
      );
    }
  }
}

/** Checks that the device runs the new image, and confirms it (client mode) or waits for the device to. */
async function confirmNewImage(
  conn: OtaConnection,
  image: EspImage,
  mode: 'client' | 'device',
  timeouts: Timeouts,
): Promise<{ ok: boolean; version: string }> {
  if (!conn.v2) throw new ProtocolError('PROTOCOL_ERROR', 'after its restart, the device no longer offers protocol v2');
  const expected = image.appDesc.version;
  let info = (await conn.v2.provenInfo(timeouts.gattMs)).info;
  const runsNew = () =>
    info.app.version === expected &&
    info.app.projectName === image.appDesc.projectName &&
    info.app.elfSha256.equals(image.appDesc.appElfSha256);
  if (mode === 'client') {
    // Confirmed already: a CONFIRM whose answer was lost (with the link, or on air).
    if (runsNew() && info.runningState === RunningState.VALID) return { ok: true, version: info.app.version };
    if (!runsNew() || info.runningState !== RunningState.PENDING_VERIFY) {
      throw new DeviceError(
        'ROLLED_BACK',
        `after its restart the device runs ${info.app.projectName} ${info.app.version} (${runningStateName(info.runningState)}), not the new ${image.appDesc.projectName} ${expected}: the new image did not pass its self-test and was rolled back`,
      );
    }
    await conn.confirm();
    info = (await conn.v2.provenInfo(timeouts.gattMs)).info;
    return { ok: info.runningState === RunningState.VALID, version: info.app.version };
  }
  // The device confirms itself once its self-test passed: give it the time.
  const deadline = Date.now() + timeouts.verifyMs;
  while (info.runningState === RunningState.PENDING_VERIFY && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 100));
    info = (await conn.v2.provenInfo(timeouts.gattMs)).info;
  }
  if (!runsNew()) {
    throw new DeviceError(
      'ROLLED_BACK',
      `after its restart the device runs ${info.app.projectName} ${info.app.version}, not the new ${image.appDesc.projectName} ${expected}: it returned to its previous firmware`,
    );
  }
  return { ok: info.runningState === RunningState.VALID, version: info.app.version };
}

/**
 * A device that takes only signed images names the key (OTA Info): refuse
 * here, before anything is sent, what it would refuse after the whole
 * transfer: an unsigned image, one signed with another key, one changed
 * after it was signed.
 */
function checkSignedForDevice(info: DeviceInfoV2, image: EspImage, data: Buffer, device: string): void {
  if ((info.features & Feature.SIGNED) === 0) return;
  if (image.signature === undefined) {
    throw new ImageError(
      'IMAGE_NOT_SIGNED',
      `${device} accepts only signed images, and this one carries no signature. Nothing was sent. Sign it with your signing key (esp32-ble-ota sign, or build with CONFIG_SECURE_BOOT_BUILD_SIGNED_BINARIES).`,
    );
  }
  if (info.signingKeyDigest === undefined) return; // the device checks with a key it does not name
  const check = verifyImageSignature(data, image.imageLength, { keyDigest: info.signingKeyDigest });
  if (!check.ok) {
    throw new ImageError(
      'IMAGE_SIGNATURE_INVALID',
      `${device} would refuse this image: ${check.message} The device trusts the key with digest ${info.signingKeyDigest.toString('hex').slice(0, 16)}…; nothing was sent.`,
    );
  }
}

function runningStateName(state: number): string {
  return state === RunningState.VALID ? 'confirmed' : state === RunningState.PENDING_VERIFY ? 'pending verify' : 'state unknown';
}

/** The client's error for a status the device answered. */
export function refusalError(err: CommandRefused, size: number): BleOtaError {
  const what = err.message;
  switch (err.status) {
    case Status.TOO_LARGE:
      return new ImageError('IMAGE_TOO_LARGE', `the image (${size} bytes) does not fit the device's OTA slot (${what})`);
    case Status.WRONG_CHIP:
      return new ImageError('IMAGE_WRONG_CHIP', `the device says the image is for another chip (${what}); build it for the device's chip`);
    case Status.PENDING_CONFIRM:
      return new ProtocolError(
        'REQUEST_REFUSED',
        `the device's running image still awaits confirmation (${what}); confirm it, or restart the device to return to the previous image, then update again`,
      );
    case Status.FLASH_ERROR:
      return new ProtocolError('TRANSFER_FAILED', `the device could not write its flash (${what}); the old firmware stays. Retry; if it persists, check the device's flash and partition table`);
    case Status.HASH_MISMATCH:
      return new ProtocolError('DEVICE_REJECTED_IMAGE', `what the device received does not match the image's SHA-256 (${what}); the old firmware stays. Retry the update`);
    case Status.INVALID_IMAGE:
      return new ProtocolError('DEVICE_REJECTED_IMAGE', `the device's validation rejected the image (${what}); the old firmware stays. Check that it was built for this device`);
    case Status.BAD_DATA:
      return new ProtocolError('TRANSFER_FAILED', `the device could not inflate a compressed chunk (${what}); the old firmware stays. Retry, or turn compression off`);
    case Status.AUTH_REQUIRED:
      return new DeviceError('AUTH_REQUIRED', `The device takes updates only from its owner (${what}); give the fleet secret its key was derived from.`);
    case Status.AUTH_FAILED:
      return new DeviceError(
        'AUTH_FAILED',
        `The device refused the key derived from your fleet secret (${what}): it was provisioned with another secret, or for another device. Nothing was changed; check the secret, or provision the device again.`,
      );
    case Status.NOT_PROVISIONED:
      return new DeviceError(
        'NOT_PROVISIONED',
        `The device has no update key yet (${what}), so it takes no update over the air. Provision it once over USB: esp32-ble-ota provision (docs/SECURITY.md).`,
      );
    case Status.BAD_SIGNATURE:
      return new ImageError(
        'IMAGE_SIGNATURE_INVALID',
        `The device refused the image: it is not signed with the key the device trusts (${what}). The old firmware stays. Sign the image with your signing key (esp32-ble-ota sign, or build with signing on).`,
      );
    case Status.OLD_SECURE_VERSION:
      return new ImageError(
        'SECURE_VERSION_TOO_OLD',
        `The device refused the image: its secure_version is below the running firmware's (${what}). The old firmware stays.`,
      );
    case Status.AUTH_LOCKED: {
      const seconds = err.body.length >= 4 ? Math.ceil(err.body.readUInt32LE(0) / 1000) : undefined;
      return new DeviceError(
        'AUTH_LOCKED',
        `the device refuses authentication for ${seconds === undefined ? 'a while' : `${seconds} s`} after repeated failures (${what}); check the key, then try again later`,
      );
    }
    default:
      return new ProtocolError('PROTOCOL_ERROR', `the device refused a step of the update (${what}); status ${statusName(err.status)}`);
  }
}
