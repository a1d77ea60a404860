/**
 * Upload in the seed's protocol (docs/PROTOCOL.md): packet size to
 * OTA Data, REQUEST on OTA Control, every packet written with response, DONE,
 * then the device restarts into the new image.
 *
 * Devices running the seed's own firmware must keep working, so nothing here
 * relies on our firmware's fixes; it only profits from them (a DONE_NAK
 * notified during the transfer ends it at once instead of at DONE).
 */
import { BleOtaError, DeviceError, ProtocolError } from '../errors';
import { Control, MAX_ATTRIBUTE_VALUE } from '../protocol/constants';
import type { Link } from './link';
import type { NobleCharacteristic } from './noble-types';

export interface SeedUploadTimeouts {
  /** Waiting for REQUEST_ACK. */
  requestMs: number;
  /** Waiting for DONE_ACK: the device validates the whole image first. */
  verifyMs: number;
  /** Waiting for the device to drop the link when it restarts. */
  restartMs: number;
}

export type UploadPhase = 'preparing' | 'uploading' | 'verifying' | 'restarting';

export interface UploadProgress {
  phase: UploadPhase;
  bytesSent: number;
  totalBytes: number;
  /** Whole percent of the image sent. */
  percent: number;
  /** Firmware bytes per second since the first packet. */
  bytesPerSecond: number;
}

export interface SeedUploadStats {
  packetSize: number;
  packets: number;
  /** Time from the first packet to DONE_ACK. */
  transferMs: number;
  /** Whether the device dropped the link to restart. */
  restarted: boolean;
}

/** Packet size for an ATT MTU: what one Write Request carries, at most 512 bytes. */
export function seedPacketSize(mtu: number): number {
  return Math.min(mtu - 3, MAX_ATTRIBUTE_VALUE);
}

export async function seedUpload(
  link: Link,
  chars: { control: NobleCharacteristic; data: NobleCharacteristic },
  mtu: number,
  image: Buffer,
  timeouts: SeedUploadTimeouts,
  onProgress: (p: UploadProgress) => void,
): Promise<SeedUploadStats> {
  const packetSize = seedPacketSize(mtu);
  const notifications = new ControlNotifications(link, chars.control);
  // The seed protocol's device switches images only once DONE has come, and not when it answers DONE_NAK.
  let doneSent = false;
  try {
    onProgress({ phase: 'preparing', bytesSent: 0, totalBytes: image.length, percent: 0, bytesPerSecond: 0 });
    await link.subscribe(chars.control, 'OTA Control notifications');
    const size = Buffer.alloc(2);
    size.writeUInt16LE(packetSize);
    await link.write(chars.data, size, 'the packet size');

    const requestAnswer = notifications.next('REQUEST_ACK', timeouts.requestMs);
    // Awaited below; if the write fails first, its error is the one to report.
    requestAnswer.catch(() => undefined);
    await link.write(chars.control, Buffer.from([Control.REQUEST]), 'the OTA request');
    const answer = await requestAnswer;
    if (answer !== Control.REQUEST_ACK) {
      throw new ProtocolError(
        'REQUEST_REFUSED',
        // Our firmware refuses REQUEST while its running image awaits confirmation, and when it trusts no
        // signing key (v2 tells the two apart: PENDING_CONFIRM, DEVICE_TRUSTS_NO_KEY); the seed protocol has one answer for both.
        `the device refused to start an update (control value 0x${hex(answer)}), and the seed protocol does not say why. If its running image awaits confirmation: wait a moment, confirm it or restart the device, then update again. If its running image is unsigned or trusts no signing key: flash a signed build over USB once`,
      );
    }

    // From here a DONE_NAK means the device gave up (our firmware notifies one
    // when it cannot write flash): end the transfer at once.
    notifications.failOn(Control.DONE_NAK, () => new ProtocolError('TRANSFER_FAILED', 'the device stopped the transfer: it could not write the firmware to flash'));
    const started = Date.now();
    let packets = 0;
    const report = progressReporter(image.length, started, onProgress);
    for (let offset = 0; offset < image.length; offset += packetSize) {
      link.check();
      await link.write(chars.data, image.subarray(offset, offset + packetSize), `firmware at offset ${offset}`);
      packets++;
      report(Math.min(offset + packetSize, image.length));
    }

    onProgress({ phase: 'verifying', ...rate(image.length, image.length, started) });
    notifications.failOn(undefined);
    // DONE's answer is DONE_ACK or DONE_NAK: a notification that came before it (a stray
    // one, or one sent twice) is not read as the verdict.
    notifications.clear();
    const doneAnswer = notifications.next('DONE_ACK', timeouts.verifyMs, (v) => v === Control.DONE_ACK || v === Control.DONE_NAK);
    doneAnswer.catch(() => undefined);
    doneSent = true;
    await link.write(chars.control, Buffer.from([Control.DONE]), 'the end of the transfer');
    const done = await doneAnswer;
    if (done !== Control.DONE_ACK) {
      doneSent = false; // DONE_NAK: refused, nothing installed
      throw new ProtocolError(
        'DEVICE_REJECTED_IMAGE',
        `the device rejected the image after receiving it (control value 0x${hex(done)}): its validation failed, so the old firmware stays; check that the image was built for this chip and is complete`,
      );
    }
    const transferMs = Date.now() - started;

    onProgress({ phase: 'restarting', ...rate(image.length, image.length, started) });
    link.expectDisconnect();
    const restarted = await link.awaitDisconnect(timeouts.restartMs);
    return { packetSize, packets, transferMs, restarted };
  } catch (err) {
    throw withSeedOutcome(err, doneSent);
  } finally {
    notifications.dispose();
  }
}

/** A seed update's failure, saying what the device runs: its old image until DONE was sent, unknown after. */
function withSeedOutcome(err: unknown, doneSent: boolean): BleOtaError {
  const typed = err instanceof BleOtaError ? err : new DeviceError('TRANSFER_FAILED', `the update failed: ${String(err)}`, { cause: err });
  if (typed.device) return typed;
  return doneSent
    ? typed.withDevice(
        { runs: 'unknown' },
        'What the device runs now is not known: it may have installed the image and restarted; read its version (a scan with versions) to find out.',
      )
    : typed.withDevice({ runs: 'old' }, 'The device runs its previous firmware: the seed protocol installs nothing before the end of the transfer.');
}

/** Control notifications, awaited one at a time. */
class ControlNotifications {
  private readonly queue: number[] = [];
  private waiting: ((value: number) => void) | undefined;
  private failure: { value: number; error: () => Error } | undefined;
  private readonly onData = (data: Buffer, isNotification: boolean) => {
    if (!isNotification || data.length < 1) return;
    const value = data[0];
    if (this.failure && value === this.failure.value) {
      this.link.fail(this.failure.error());
      return;
    }
    if (this.waiting) this.waiting(value);
    else this.queue.push(value);
  };

  constructor(
    private readonly link: Link,
    private readonly control: NobleCharacteristic,
  ) {
    control.on('data', this.onData);
  }

  /** The next notification `accept`s (any, by default); others are dropped. */
  next(expected: string, timeoutMs: number, accept: (value: number) => boolean = () => true): Promise<number> {
    return this.link.wait<number>(`waiting for ${expected}`, timeoutMs, (resolve) => {
      for (let queued = this.queue.shift(); queued !== undefined; queued = this.queue.shift()) {
        if (accept(queued)) return resolve(queued);
      }
      this.waiting = (value) => {
        if (accept(value)) resolve(value);
      };
      return () => {
        this.waiting = undefined;
      };
    });
  }

  /** Drops the notifications that came and nobody has read. */
  clear(): void {
    this.queue.length = 0;
  }

  failOn(value: number | undefined, error?: () => Error): void {
    this.failure = value === undefined || !error ? undefined : { value, error };
  }

  dispose(): void {
    this.control.off('data', this.onData);
  }
}

function rate(sent: number, total: number, started: number) {
  const seconds = Math.max((Date.now() - started) / 1000, 0.001);
  return {
    bytesSent: sent,
    totalBytes: total,
    percent: Math.floor((sent * 100) / total),
    bytesPerSecond: Math.round(sent / seconds),
  };
}

/** Reports at each whole percent, and at most every 250 ms in between. */
function progressReporter(total: number, started: number, onProgress: (p: UploadProgress) => void) {
  let lastPercent = -1;
  let lastAt = 0;
  return (sent: number) => {
    const r = rate(sent, total, started);
    const now = Date.now();
    if (r.percent !== lastPercent || now - lastAt >= 250) {
      lastPercent = r.percent;
      lastAt = now;
      onProgress({ phase: 'uploading', ...r });
    }
  };
}

function hex(value: number): string {
  return value.toString(16).padStart(2, '0');
}
