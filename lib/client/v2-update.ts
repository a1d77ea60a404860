/**
 * An update in protocol v2, as a state machine: on every connection the
 * client reads where the device is (its proven OTA Info) and takes the one
 * step that leads from there to the goal, the new image running and
 * confirmed:
 *
 *   runs the new image, confirmed        -> done
 *   runs the new image, pending verify   -> CONFIRM (or wait for the device's own)
 *   the new image complete, not started  -> RESTART, then reconnect
 *   anything else                        -> BEGIN (resumes what the device has), stream, END
 *
 * A lost link or an operation nothing answered ends the step; the client
 * reconnects (within resumeAttempts) and reads the state again, so a call
 * finishes what an interrupted one left, whatever state it left. Every
 * failure says what the device runs (docs/PROTOCOL.md, docs/CLIENT.md).
 */
import { createHash } from 'node:crypto';
import { BleOtaError, CancelledError, DeviceError, DeviceOutcome, ImageError, ProtocolError, UpdateRefusedError } from '../errors';
import { chipName } from '../image/esp-chips';
import type { EspImage } from '../image/esp-image';
import { verifyImageSignature } from '../image/signature';
import { compareVersions } from '../image/version';
import { BeginFlag, Command, Feature, RESTART_DELAY_MS, RunningState, Status, TransferState } from '../protocol/constants';
import { DELTA_BLOCK, HeaderOffset } from '../delta/format';
import { DeflatedStream } from '../protocol/deflate-chunks';
import type { DeviceInfoV2, DeviceLink } from '../protocol/v2-codec';
import type { OtaConnection } from './connection';
import type { LinkReport, Timeouts, UpdateOptions } from './types';
import { checkBaseImage, Delivery, FullReason, fullDeflated, PatchPlan, planDelivery } from './delivery';
import { CommandRefused, refusalError } from './refusal';
import { streamValueSize } from './v2-session';

/** How often CONFIRM is sent again while the device's self-test has not passed. */
const SELF_TEST_POLL_MS = 250;

export interface V2Result {
  mtu: number;
  packetSize: number;
  packets: number;
  transferMs: number;
  /** Image bytes the device stored in this call, as sent or rebuilt from a patch (it held the rest from an earlier call). */
  imageBytesSent: number;
  restarted: boolean;
  confirmed: boolean;
  runningVersion: string | undefined;
  resumes: number;
  skipped: boolean;
  /** Undefined when an earlier call had already restarted the device into this image. */
  previousVersion: string | undefined;
  /** The device proved it holds its key, on every answer the result rests on. */
  authenticated: boolean;
  /** The device's id, the same on every connection of the update (absent on info_version 1). */
  deviceId: Buffer | undefined;
  /** The link the device reported after the image was sent, else at the last look (undefined before info_version 3). */
  link: DeviceLink | undefined;
  /** How the image went: whole or as a patch, and the stream bytes sent. */
  delivery: Delivery;
  /** The SHA-256 of the image the device runs at the end, as it reports it (info_version 4; undefined when it does not know). */
  runningSha256: Buffer | undefined;
  /** Its size, as the device reports it (undefined as runningSha256). */
  runningSize: number | undefined;
}

/** Opens a new connection to the device the update started with. */
export type Reconnect = (policy: { deviceId: Buffer | undefined; requireSession: boolean }) => Promise<OtaConnection>;

/** Where the device is, for the image being installed. */
export type Stage = 'confirmed' | 'pending' | 'complete' | 'partial' | 'other';

/** The stage of the update the device's OTA Info shows, for this image and its SHA-256. */
export function stageOf(info: DeviceInfoV2, image: EspImage, sha256: Buffer): Stage {
  if (runsImage(info, image)) {
    // UNKNOWN: a device without rollback, whose image cannot be confirmed or rolled back (the result says confirmed: false).
    return info.runningState === RunningState.PENDING_VERIFY ? 'pending' : 'confirmed';
  }
  if (info.transferSha256.equals(sha256)) {
    if (info.transferState === TransferState.COMPLETE) return 'complete';
    if (info.transferState === TransferState.RECEIVING || info.transferState === TransferState.SUSPENDED) return 'partial';
  }
  return 'other';
}

function runsImage(info: DeviceInfoV2, image: EspImage): boolean {
  return info.app.projectName === image.appDesc.projectName && info.app.version === image.appDesc.version && info.app.elfSha256.equals(image.appDesc.appElfSha256);
}

/** What the device runs, as a failure reports it. */
export function outcomeOf(info: DeviceInfoV2 | undefined, image: EspImage): DeviceOutcome {
  if (!info) return { runs: 'unknown' };
  if (!runsImage(info, image)) return { runs: 'old', version: info.app.version };
  return { runs: info.runningState === RunningState.VALID ? 'new-confirmed' : 'new-unconfirmed', version: info.app.version };
}

/** `reconnected`: the new connections the first one took (a link lost while it was being made). */
export function updateV2(first: OtaConnection, image: EspImage, options: UpdateOptions, timeouts: Timeouts, reconnect: Reconnect, reconnected = 0): Promise<V2Result> {
  return new V2Update(first, image, options, timeouts, reconnect, reconnected).run();
}

class V2Update {
  private conn: OtaConnection;
  private readonly opened: OtaConnection[] = [];
  private readonly data: Buffer;
  private readonly sha256: Buffer;
  private readonly onProgress: NonNullable<UpdateOptions['onProgress']>;
  private readonly attempts: number;
  /** The device's proven OTA Info, as last read. */
  private info: DeviceInfoV2 | undefined;
  /** Every connection must reach the device the first one proved, and prove itself if it did. */
  private pinned: Buffer | undefined;
  private proven: boolean;
  private authenticatedAll = true;
  /** Reconnections after a lost link or an operation nothing answered, once OTA Info was read (each step's attempts). */
  private resumes = 0;
  /** Reconnections before that: while the first connection was made, and for the first OTA Info. */
  private reconnectedFirst: number;
  /** RESTARTs sent: after one, a device back on its old image either rolled back or never restarted. */
  private restarts = 0;
  private awaitingRestart = false;
  /** RESTART answered OK: the device selected the image, and restarts into it. */
  private restartAnswered = false;
  /** Transfers started again after a RESTART the device never acted on. */
  private sentAgain = 0;
  /** CONFIRM sent (its answer may be lost): whether it took effect is the device's to say. */
  private confirmSent = false;
  /** CONFIRM answered OK for the image the device runs: it is confirmed, whatever an older look said. */
  private confirmAnswered = false;
  /** The new image was seen running after a RESTART of this call. */
  private restarted = false;
  /** The device ran this very build already and skipIfRunning is off: send it and restart into it all the same. */
  private sendAnyway = false;
  private checked = false;
  private compress = false;
  /** The patch chosen (undefined: the full image), once planned. */
  private patch: PatchPlan | undefined;
  private planned = false;
  /** Why the full image goes, when the device could take a patch or one was tried. */
  private fullReason: FullReason | undefined;
  /** Stream bytes sent by this call, resends included. */
  private bytesOverAir = 0;
  /** A stream went in this call. */
  private streamed = false;
  private readonly baseImage: Buffer | undefined;
  private packets = 0;
  private packetSize = 0;
  private transferStarted = 0;
  private transferMs = 0;
  /**
   * Where and when this call's stream of what it sends (the image, or the
   * patch) started: the progress rate counts what moved since, not what the
   * device held from an earlier call.
   */
  private rateFrom: { bytes: number; at: number } | undefined;
  /** Image bytes the device stored in this call: counted once the whole stream is stored. */
  private imageBytesSent = 0;
  /** Image bytes the device held before this call's first BEGIN of what is sent (the image, or the patch). */
  private heldBefore: number | undefined;
  /** The next look follows a transfer: the link it reports is the one the image went over. */
  private lookAfterTransfer = false;
  private transferLink: DeviceLink | undefined;

  constructor(
    first: OtaConnection,
    private readonly image: EspImage,
    private readonly options: UpdateOptions,
    private readonly timeouts: Timeouts,
    private readonly reconnectTo: Reconnect,
    reconnected: number,
  ) {
    this.conn = first;
    this.reconnectedFirst = reconnected;
    this.data = options.image;
    this.sha256 = createHash('sha256').update(this.data).digest();
    this.onProgress = options.onProgress ?? (() => undefined);
    this.attempts = options.resumeAttempts ?? 3;
    this.pinned = first.policy.deviceId;
    this.proven = first.policy.requireSession === true;
    this.baseImage = checkBaseImage(options.baseImage);
  }

  async run(): Promise<V2Result> {
    try {
      await this.readFirst();
      const first = this.info!;
      const firstStage = stageOf(first, this.image, this.sha256);
      // A device already running this image, unconfirmed, was restarted by an earlier call: what it ran before is unknown.
      const previousVersion = firstStage === 'pending' ? undefined : first.app.version;
      if (firstStage === 'confirmed') {
        if (this.options.skipIfRunning) return this.result({ skipped: true, previousVersion });
        this.sendAnyway = true; // the same build again, as asked
      }
      // A step that completes must move the device on: the same stage after
      // it, again and again, is a device that answers OK and does nothing.
      let repeats = 0;
      for (;;) {
        const stage = this.stage();
        if (stage === 'confirmed') {
          this.settleRestart();
          return this.result({ skipped: false, previousVersion });
        }
        const completed = await this.step(stage);
        if (completed && this.stage() === stage) {
          if (++repeats > this.attempts) {
            throw new ProtocolError('PROTOCOL_ERROR', `the device answered every step as done, yet stays at the same stage (${stage}) after ${repeats} tries`);
          }
        } else {
          repeats = 0;
        }
      }
    } catch (err) {
      throw this.explained(err);
    } finally {
      for (const c of this.opened) await c.close();
    }
  }

  /**
   * The stage. When the device ran this very build before and it is sent
   * anyway, its running the build counts only once it has restarted into
   * the copy sent (RESTART answered): the transfer's own state first.
   */
  private stage(): Stage {
    const stage = stageOf(this.info!, this.image, this.sha256);
    if (!this.sendAnyway) return stage;
    const info = this.info!;
    if (info.transferSha256.equals(this.sha256)) {
      if (info.transferState === TransferState.COMPLETE) return 'complete';
      if (info.transferState === TransferState.RECEIVING || info.transferState === TransferState.SUSPENDED) return 'partial';
    }
    return this.restartAnswered || this.restarted ? stage : 'other';
  }

  /**
   * One step from the stage the device is at; a lost link or a silent
   * device ends it with a new connection and a fresh look. True when the
   * step itself completed.
   */
  private async step(stage: Stage): Promise<boolean> {
    try {
      switch (stage) {
        case 'confirmed':
          return true;
        case 'pending':
          this.settleRestart();
          await this.confirm();
          break;
        case 'complete':
          await this.restart();
          return true; // restart() reads the state on its new connection
        case 'partial':
        case 'other':
          this.checkRestartOutcome();
          if (this.info!.runningState === RunningState.PENDING_VERIFY) {
            await this.confirmOther();
            break;
          }
          await this.transfer();
          break;
      }
      await this.look();
      return true;
    } catch (err) {
      await this.recover(err);
      return false;
    }
  }

  /**
   * The first OTA Info: on a new connection (backing off, within the
   * attempts allowed) when it fails before anything was sent.
   */
  private async readFirst(): Promise<void> {
    for (let tries = 0; ; tries++) {
      try {
        await this.look();
        this.pinned = this.info!.deviceId;
        this.proven ||= this.conn.v2!.authenticated;
        return;
      } catch (err) {
        // A read nothing answered, a link lost, or an MTU exchange that never completed (CONNECT_FAILED).
        const lost = err instanceof BleOtaError && (err.code === 'DISCONNECTED' || err.code === 'GATT_TIMEOUT' || err.code === 'CONNECT_FAILED');
        if (!lost || tries >= this.attempts || this.options.signal?.aborted) throw err;
        await this.conn.close();
        await backoff(tries, this.options.signal);
        this.reconnectedFirst++;
        await this.openRetrying();
      }
    }
  }

  /** Reads the device's proven OTA Info on the current connection. */
  private async look(): Promise<void> {
    const { info, authenticated } = await this.conn.v2!.provenInfo(this.timeouts.gattMs);
    this.info = info;
    if (this.lookAfterTransfer && info.link) this.transferLink = info.link;
    this.lookAfterTransfer = false;
    if (!authenticated) this.authenticatedAll = false;
  }

  private async open(): Promise<void> {
    this.conn = await this.reconnectTo({ deviceId: this.pinned, requireSession: this.proven });
    this.opened.push(this.conn);
    if (!this.conn.v2) throw new ProtocolError('PROTOCOL_ERROR', 'after reconnecting, the device no longer offers protocol v2');
  }

  /**
   * After a lost link or an operation nothing answered: a new connection
   * (within the attempts allowed) and a fresh look at the device.
   */
  private async recover(err: unknown): Promise<void> {
    const lost = err instanceof BleOtaError && (err.code === 'DISCONNECTED' || err.code === 'GATT_TIMEOUT');
    // BEGIN refused as BAD_STATE: the device has an image selected for its next boot (another
    // call's RESTART, answered moments ago, or a rollback) and restarts within its restart delay.
    const restarting = err instanceof CommandRefused && err.opcode === Command.BEGIN && err.status === Status.BAD_STATE;
    if (!(lost || restarting) || this.resumes >= this.attempts || this.options.signal?.aborted) throw err;
    this.resumes++;
    this.progress('resuming', 0);
    if (restarting) {
      this.conn.link.expectDisconnect();
      await this.conn.link.awaitDisconnect(this.timeouts.restartMs + RESTART_DELAY_MS);
    }
    await this.conn.close();
    if (this.resumes > 1) await backoff(this.resumes - 2, this.options.signal);
    await this.connectAgain();
  }

  /** A new connection, retried with backoff: a restarting device, or one another central holds, may not answer at once. */
  private async openRetrying(): Promise<void> {
    for (let attempt = 0; ; attempt++) {
      try {
        await this.open();
        return;
      } catch (err) {
        // NOT_OTA_DEVICE too: this device served the OTA service on this call's first connection,
        // so none now is a link that failed (or a GATT table not up yet), unless it persists.
        const retry =
          err instanceof BleOtaError &&
          (err.code === 'DEVICE_NOT_FOUND' || err.code === 'CONNECT_FAILED' || err.code === 'DISCONNECTED' || err.code === 'GATT_TIMEOUT' || err.code === 'NOT_OTA_DEVICE');
        if (!retry || attempt >= this.attempts || this.options.signal?.aborted) throw err;
        await backoff(attempt, this.options.signal);
      }
    }
  }

  /** Connects again and looks. */
  private async connectAgain(): Promise<void> {
    await this.openRetrying();
    try {
      await this.look();
    } catch (err) {
      await this.recover(err);
    }
  }

  /**
   * BEGIN (the device resumes what it has), the rest of the image or the
   * patch, END. A patch the device refuses at BEGIN (it runs another image
   * than the base) gives way to the full image at once, on the same
   * connection; one it could not apply, to the full image on the next step.
   */
  private async transfer(): Promise<void> {
    this.checkBeforeSending();
    await this.plan();
    const v2 = this.conn.v2!;
    if (this.transferStarted === 0) this.transferStarted = Date.now();
    await v2.subscribe();
    const begin = () => {
      const patch = this.patch;
      return v2.begin(
        {
          size: this.data.length,
          sha256: this.sha256,
          chipId: this.image.chipId,
          flags: (this.options.confirm === 'device' ? 0 : BeginFlag.CLIENT_CONFIRM) | (this.compress || patch ? BeginFlag.DEFLATE : 0) | (patch ? BeginFlag.PATCH : 0),
          ...(patch ? { base: patch.base } : {}),
        },
        this.timeouts.gattMs,
      );
    };
    let answer;
    try {
      answer = await begin();
    } catch (err) {
      if (!(this.patch && err instanceof CommandRefused && err.status === Status.WRONG_BASE)) throw err;
      // The device runs another image than the one the patch was made for: nothing changed on it.
      this.dropPatch('wrong-base');
      answer = await begin();
    }
    this.packetSize = streamValueSize(Math.min(answer.maxPacket, this.conn.mtu - 3)) - 4;
    const patch = this.patch;
    const report = (bytes: number) => this.progress('uploading', bytes);
    let stats;
    this.streamed = true;
    const sentBefore = v2.streamBytes;
    const source = patch ? patch.patch : this.data;
    const from = patch || this.compress ? (answer.imageOffset ?? 0) : Math.min(answer.offset, this.data.length);
    // What the device held of this image (or this patch) before this call's first BEGIN for it:
    // the call's figure is counted from there once the whole stream is stored, whatever links
    // dropped between (a device stores packets whose ACKs a lost link never brought).
    // The least of its answers: a device that dropped its suspended transfer (its abandon timeout, a reboot) starts again lower.
    this.heldBefore = Math.min(this.heldBefore ?? Number.POSITIVE_INFINITY, imageStoredAt(patch, from));
    this.rateFrom ??= { bytes: from, at: Date.now() };
    try {
      if (patch || this.compress) {
        // With DEFLATE, progress counts bytes of what is deflated (the image, or the patch), in proportion within each encoded chunk.
        const rest = new DeflatedStream(source, from);
        const onAck = ({ acked }: { acked: number }) => report(rest.imageOffsetAt(acked));
        stats = await v2.stream(rest, 0, answer.window, answer.maxPacket, this.timeouts.gattMs, onAck, answer.offset);
      } else {
        const onAck = ({ acked }: { acked: number }) => report(acked);
        stats = await v2.stream(this.data, from, answer.window, answer.maxPacket, this.timeouts.gattMs, onAck);
      }
      this.imageBytesSent = Math.max(0, this.data.length - this.heldBefore);
      this.packets += stats.packets;
      this.progress('verifying', this.streamLength());
      await v2.command(Command.END, this.timeouts.verifyMs);
    } catch (err) {
      // The device could not rebuild the image from the patch (an applier verdict, or the
      // rebuilt image's SHA-256): its transfer ended; the next step sends the full image.
      if (patch && err instanceof CommandRefused && (err.status === Status.BAD_DATA || err.status === Status.HASH_MISMATCH)) {
        this.dropPatch('patch-not-applied');
        return;
      }
      throw err;
    } finally {
      // What went before a lost link counts too: it crossed the air.
      this.bytesOverAir += v2.streamBytes - sentBefore;
    }
    this.transferMs = Date.now() - this.transferStarted;
    this.lookAfterTransfer = true;
  }

  /** The full image from now on. */
  private dropPatch(reason: FullReason): void {
    this.patch = undefined;
    // Nothing rebuilt from the patch counts: the full image starts over.
    this.heldBefore = undefined;
    this.imageBytesSent = 0;
    this.rateFrom = undefined;
    this.fullReason = reason;
  }

  /**
   * Patch or full image, once per call (the same inputs give the same
   * choice on the next call, so a transfer an earlier call left resumes).
   */
  private async plan(): Promise<void> {
    if (this.planned) return;
    const info = this.info!;
    const delta = (info.features & Feature.DELTA) !== 0 && (info.features & Feature.DEFLATE) !== 0;
    const allowed = this.options.delta !== false && this.options.compress !== false;
    // Computing a patch takes a moment (seconds for megabytes): the progress says the update is preparing, not connecting.
    if (allowed && delta && info.runningSha256) this.progress('preparing', 0);
    // A cancel does not wait for the patch (seconds for a large image), and its computation stops.
    const plan = await untilAborted(
      planDelivery({
        image: this.data,
        deviceTakesPatch: !allowed ? 'delta-off' : !delta ? 'device-no-delta' : true,
        runningSha256: info.runningSha256,
        runningSize: info.runningSize,
        fullDeflated: this.compress,
        baseImage: this.baseImage,
        cache: this.options.cache,
        signal: this.options.signal,
      }),
      this.options.signal,
    );
    if ('reason' in plan) this.fullReason = plan.reason;
    else this.patch = plan;
    this.planned = true;
  }

  /** Bytes of what the stream carries: the patch, or the image. */
  private streamLength(): number {
    return this.patch ? this.patch.patch.length : this.data.length;
  }

  /**
   * RESTART, and a new connection to the restarted device. The request or
   * its answer may be lost, and a link that drops right after it is most
   * likely the restart itself: in every case the new connection tells.
   */
  private async restart(): Promise<void> {
    if (this.restarts >= this.attempts) {
      // Only what is known: the last RESTART may have worked after all, on a link that dropped before the client saw it.
      throw new DeviceError(
        'CONFIRM_FAILED',
        `the client asked the device to restart into the new image ${this.attempts} times without seeing it run there (the new image was complete on the device; the link kept dropping)`,
      );
    }
    this.restarts++;
    this.awaitingRestart = true;
    this.progress('restarting', this.data.length);
    try {
      // verifyMs: the boot selection validates the image again (esp_ota_set_boot_partition).
      await this.conn.v2!.command(Command.RESTART, this.timeouts.verifyMs);
      this.restartAnswered = true;
      this.conn.link.expectDisconnect();
      await this.conn.link.awaitDisconnect(this.timeouts.restartMs + RESTART_DELAY_MS);
    } catch (err) {
      if (err instanceof CommandRefused) this.awaitingRestart = false; // refused: the device did not restart
      const lost = err instanceof BleOtaError && (err.code === 'DISCONNECTED' || err.code === 'GATT_TIMEOUT');
      if (!lost || this.options.signal?.aborted) throw err;
    }
    await this.conn.close();
    this.progress('confirming', this.data.length);
    await this.connectAgain();
  }

  /** The device runs the new image: the restart happened. */
  private settleRestart(): void {
    if (this.awaitingRestart) this.restarted = true;
    this.awaitingRestart = false;
  }

  /**
   * After a RESTART, the device is back without the new image running:
   * either it ran it and rolled back (OTA Info says so), or it never
   * restarted into it (a power cut before the image was selected), and the
   * transfer goes on from where the device is.
   */
  private checkRestartOutcome(): void {
    if (!this.awaitingRestart && !this.restarted) return;
    this.awaitingRestart = false;
    const info = this.info!;
    // Selected (RESTART answered), seen running, or said rolled back: it ran and
    // was rolled back. Otherwise the RESTART may never have reached the device:
    // send again, once.
    if (info.updateSlotRolledBack || this.restarted || this.restartAnswered || this.sentAgain > 0) {
      throw new DeviceError(
        'ROLLED_BACK',
        `after its restart the device runs ${info.app.projectName} ${info.app.version} (${runningStateName(info.runningState)}), not the new ${this.image.appDesc.projectName} ${this.image.appDesc.version}: ${
          info.updateSlotRolledBack || this.restarted
            ? 'the new image ran, did not become valid (its self-test failed, or it restarted before it was confirmed) and was rolled back'
            : 'the new image did not start, or started and was rolled back (the device does not say which)'
        }`,
      );
    }
    this.sentAgain++;
  }

  /**
   * The device runs another image pending confirmation (an update
   * interrupted between its restart and its CONFIRM): no new transfer
   * starts until it is settled. CONFIRM settles it, and is what it waited
   * for: its self-test passed (the device refuses CONFIRM before), and
   * this client reaches it over BLE.
   */
  private async confirmOther(): Promise<void> {
    const v2 = this.conn.v2!;
    await v2.subscribe();
    await this.confirmOnceTested();
    this.confirmAnswered = false; // that was another image's confirmation
  }

  /**
   * CONFIRM, sent again while the device answers BAD_STATE: the image's
   * self-test has not passed yet (the firmware's checks, then the
   * application's own health check, which may take seconds), within
   * verifyMs. A self-test that fails rolls the image back and restarts the
   * device: the link drops and the next look tells. The device's confirm
   * window starts only once the self-test passed: an image whose self-test
   * outlasts verifyMs then still waits for a CONFIRM (the same image sent
   * again), which the error says with what the device runs.
   */
  private async confirmOnceTested(): Promise<void> {
    const deadline = Date.now() + this.timeouts.verifyMs;
    for (;;) {
      try {
        await this.sendConfirm();
        return;
      } catch (err) {
        if (!(err instanceof CommandRefused && err.opcode === Command.CONFIRM && err.status === Status.BAD_STATE)) throw err;
        if (Date.now() >= deadline) {
          throw new DeviceError(
            'CONFIRM_FAILED',
            `the device refused CONFIRM for ${Math.round(this.timeouts.verifyMs / 1000)} s: the self-test of the image it runs (the firmware's checks, then the application's health check) has not passed yet (its log says why). A self-test that fails returns the device to its previous image`,
          );
        }
        await delay(SELF_TEST_POLL_MS, this.options.signal);
      }
    }
  }

  /** CONFIRM; until its answer comes, whether it took effect is the device's to say. */
  private async sendConfirm(): Promise<void> {
    this.confirmSent = true;
    try {
      await this.conn.v2!.command(Command.CONFIRM, this.timeouts.gattMs);
      this.confirmSent = false;
      this.confirmAnswered = true;
    } catch (err) {
      if (err instanceof CommandRefused) this.confirmSent = false; // answered: nothing changed
      throw err;
    }
  }

  /** CONFIRM (client mode), or the device's own confirmation, awaited. */
  private async confirm(): Promise<void> {
    const v2 = this.conn.v2!;
    this.progress('confirming', this.data.length);
    if (this.options.confirm !== 'device') {
      await v2.subscribe();
      await this.confirmOnceTested();
      return;
    }
    // The device confirms itself once its self-test passed: give it the time.
    const deadline = Date.now() + this.timeouts.verifyMs;
    while (Date.now() < deadline) {
      await delay(100, this.options.signal);
      await this.look();
      if (this.info!.runningState !== RunningState.PENDING_VERIFY || !runsImage(this.info!, this.image)) return;
    }
    throw new DeviceError('CONFIRM_FAILED', `the device did not confirm the new image itself within ${Math.round(this.timeouts.verifyMs / 1000)} s (its log says why)`);
  }

  /**
   * What can be refused before anything is sent, once: the chip, the slot
   * size, the signature the device asks for, anti-rollback, downgrades.
   * Then whether to send the image deflated.
   */
  private checkBeforeSending(): void {
    if (this.checked) return;
    const info = this.info!;
    const { image, data } = this;
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
    checkSignedForDevice(info, image, data, this.conn.link.describe());
    if (image.appDesc.secureVersion < info.app.secureVersion) {
      throw new ImageError(
        'SECURE_VERSION_TOO_OLD',
        `The image's secure_version ${image.appDesc.secureVersion} is below the ${info.app.secureVersion} of the firmware the device runs: the device refuses older images (anti-rollback). Nothing was sent; build the update with CONFIG_BOOTLOADER_APP_SECURE_VERSION ${info.app.secureVersion} or higher.`,
      );
    }
    if (this.options.allowDowngrade === false && info.app.projectName === image.appDesc.projectName) {
      const order = compareVersions(image.appDesc.version, info.app.version);
      if (order !== undefined && order < 0) {
        throw new UpdateRefusedError(
          'DOWNGRADE_REFUSED',
          `the image's version ${image.appDesc.version} is older than the ${info.app.version} the device runs; allow downgrades to install it anyway`,
        );
      }
    }
    // Deflated chunks where the device inflates them and a sample says it pays (a tenth less on
    // air at the least): an image that will not shrink is never deflated whole.
    this.compress = fullDeflated(data, (info.features & Feature.DEFLATE) !== 0, this.options.compress);
    this.checked = true;
  }

  /** `bytes` count the stream's content while uploading and verifying (a patch's bytes with a patch), the image's after. */
  private progress(phase: 'preparing' | 'uploading' | 'verifying' | 'restarting' | 'confirming' | 'resuming', bytes: number): void {
    const streaming = phase === 'uploading' || phase === 'verifying';
    const total = streaming ? this.streamLength() : this.data.length;
    this.onProgress({
      phase,
      bytesSent: bytes,
      totalBytes: total,
      percent: Math.floor((bytes * 100) / total),
      bytesPerSecond: this.rate(streaming, bytes),
      ...(this.info?.link ? { link: reportedLink(this.info.link, this.conn.mtu) } : {}),
    });
  }

  /**
   * While the stream goes: its bytes this call moved, per second since it
   * started (a resumed transfer's earlier part is the device's, not this
   * link's). After it: the result's figure, image bytes stored per second of
   * transfer. Nothing sent in this call, or none yet: 0, rather than bytes
   * over no time.
   */
  private rate(streaming: boolean, bytes: number): number {
    if (streaming) {
      const from = this.rateFrom;
      return from ? perSecond(bytes - from.bytes, Date.now() - from.at) : 0;
    }
    return this.transferMs > 0 ? perSecond(this.imageBytesSent, this.transferMs) : 0;
  }

  private result(r: { skipped: boolean; previousVersion: string | undefined }): V2Result {
    const info = this.info!;
    return {
      mtu: this.conn.mtu,
      packetSize: this.packetSize,
      packets: this.packets,
      transferMs: this.transferMs,
      imageBytesSent: this.imageBytesSent,
      restarted: this.restarted,
      confirmed: info.runningState === RunningState.VALID && runsImage(info, this.image),
      runningVersion: info.app.version,
      resumes: this.reconnectedFirst + this.resumes,
      skipped: r.skipped,
      previousVersion: r.previousVersion,
      authenticated: this.authenticatedAll,
      deviceId: this.pinned,
      link: this.transferLink ?? info.link,
      delivery: this.delivery(r.skipped),
      runningSha256: info.runningSha256,
      runningSize: info.runningSize,
    };
  }

  private delivery(skipped: boolean): Delivery {
    const patch = this.patch;
    return {
      method: skipped || !this.streamed ? 'none' : patch ? 'patch' : 'full',
      ...(patch && !skipped ? { baseSha256: patch.base.toString('hex'), baseSource: patch.source, fullBytes: patch.fullStream } : {}),
      ...(!patch && this.fullReason && !skipped ? { reason: this.fullReason } : {}),
      imageBytes: this.data.length,
      bytesOverAir: this.bytesOverAir,
    };
  }

  /** The error as the caller sees it: a typed error, saying what the device runs. */
  private explained(err: unknown): unknown {
    let typed = err instanceof CommandRefused ? refusalError(err, this.data.length) : err;
    // Not an error of the update's own kinds (a fault in this client's code): the caller still learns what the device runs.
    if (!(typed instanceof BleOtaError)) typed = new DeviceError('TRANSFER_FAILED', `the update failed: ${String(typed)}`, { cause: typed });
    // Cancelled: a link our own close ended says so, not DISCONNECTED; and it is the
    // update that was cancelled, whichever of its connections the cancel found.
    if (typed instanceof BleOtaError && (typed.code === 'CANCELLED' || this.options.signal?.aborted)) {
      typed = new CancelledError();
    }
    if (!(typed instanceof BleOtaError) || (typed.code === 'CANCELLED' && this.info === undefined)) return typed;
    if (typed.device !== undefined) return typed;
    if (this.info === undefined) {
      // Nothing was sent in this call; what an earlier one left is not known.
      return typed.withNothingSent();
    }
    // What the device ran when last seen; unknown after a RESTART nobody saw
    // come back, or a CONFIRM whose answer never came.
    let seen = outcomeOf(this.info, this.image);
    if (this.confirmAnswered && seen.runs === 'new-unconfirmed') seen = { ...seen, runs: 'new-confirmed' };
    const outcome = this.awaitingRestart || (this.confirmSent && seen.runs === 'new-unconfirmed') ? { runs: 'unknown' as const } : seen;
    return typed.withDevice(outcome, describeOutcome(outcome, this.image));
  }
}

/**
 * The image bytes a device holds when it resumes at `offset` of the stream's
 * content: the image's offset, or with a patch the bytes the patch before it
 * rebuilt, the cursor of the block that starts there (docs/DELTA.md; a
 * device resumes at a block's start), 0 at the start, all at the end.
 */
function imageStoredAt(patch: PatchPlan | undefined, offset: number): number {
  if (!patch) return offset;
  if (offset <= 0) return 0;
  if (offset >= patch.patch.length) return patch.patch.readUInt32LE(HeaderOffset.NEW_SIZE);
  return patch.patch.readUInt32LE(Math.floor(offset / DELTA_BLOCK) * DELTA_BLOCK);
}

/** A sentence on what the device runs after a failure. */
export function describeOutcome(outcome: DeviceOutcome, image: EspImage): string {
  const target = `${image.appDesc.projectName} ${image.appDesc.version}`;
  switch (outcome.runs) {
    case 'old':
      return `The device runs ${outcome.version ?? 'its previous firmware'}, as before.`;
    case 'new-unconfirmed':
      return `The device runs the new ${target}, not confirmed: it returns to its previous firmware at its next restart unless a client confirms it (update again with the same image).`;
    case 'new-confirmed':
      return `The device runs the new ${target}, confirmed.`;
    case 'unknown':
      return `What the device runs now is not known (its last answer never came): the previous firmware, or the new ${target}, confirmed or not; send the same image again to find out and finish.`;
  }
}

/**
 * Waits before reconnection attempt n (from 0): 250 ms, doubling up to 4 s,
 * with a quarter of jitter, so that a client does not hammer a device that
 * is restarting or held by someone else, and two clients do not collide in
 * step. Ends early, with CANCELLED, when the signal aborts.
 */
export function backoff(attempt: number, signal?: AbortSignal): Promise<void> {
  const base = Math.min(250 * 2 ** attempt, 4000);
  return delay(base + Math.floor(Math.random() * base * 0.25), signal);
}

/** The promise's outcome, or CANCELLED as soon as the signal aborts. */
function untilAborted<T>(promise: Promise<T>, signal: AbortSignal | undefined): Promise<T> {
  if (!signal) return promise;
  if (signal.aborted) return Promise.reject(new CancelledError());
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(new CancelledError());
    signal.addEventListener('abort', onAbort, { once: true });
    promise.then(
      (value) => {
        signal.removeEventListener('abort', onAbort);
        resolve(value);
      },
      (err: unknown) => {
        signal.removeEventListener('abort', onAbort);
        reject(err);
      },
    );
  });
}

function perSecond(bytes: number, ms: number): number {
  return bytes > 0 ? Math.round(bytes / Math.max(ms / 1000, 0.001)) : 0;
}

function delay(ms: number, signal?: AbortSignal): Promise<void> {
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

/** A link the device reported, with the MTU this client negotiated where it reported none. */
export function reportedLink(link: DeviceLink | undefined, mtu: number): LinkReport {
  const { mtu: reported, requested, ...rest } = link ?? { requested: undefined };
  return { mtu: reported ?? mtu, ...rest, ...(requested ? { requested } : {}) };
}
