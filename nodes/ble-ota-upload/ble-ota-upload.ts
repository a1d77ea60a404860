/**
 * ble-ota-upload: updates an ESP32 with the image in msg.payload.
 *
 * The image is validated before any connection; updates run one at a time
 * per node, and one at a time per radio (the adapter's line); later messages
 * wait in a bounded queue. Progress shows in the status and goes out of the
 * second output; every state change is published for ble-ota-status nodes;
 * the result leaves the first output and failures go to Catch nodes through
 * done(err). msg.cancel, closing or redeploying cancels, and the device
 * discards what it received.
 */
import type { FullReason, Progress, UpdateResult } from '../../lib/client/ota-client';
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { PATCH_SHARE } from '../../lib/client/delivery';
import { ImageCache } from '../../lib/client/image-cache';
import { BleOtaError, CancelledError, ImageError } from '../../lib/errors';
import { describePayload, imageSummary, type EspImageSummary } from '../../lib/image/esp-image';
import { isSampleImage } from '../../lib/image/sample-image';
import { validateImage } from '../../lib/image/validate';
import { DEVICE_ID_TEXT_LEN, parseDeviceId } from '../../lib/client/session';
import { hideSecretForms, sameTarget, targetOf } from '../../lib/client/target';
import type { DeviceNode } from '../ble-ota-device/device-node';
import { closeWhenSettled } from '../shared/close';
import { checkConfigAtDeploy } from '../shared/deploy';
import { OtaEvent, otaEvents, OtaState } from '../shared/ota-events';
import { nodeConfig, serveMigrations } from '../shared/config';
import { translator } from '../shared/i18n';
import { describeValue, deviceOverride } from '../shared/message';
import type { Node, NodeMessage, NodeStatus, RED } from '../shared/red';
import { StatusFilter, statusForError } from '../shared/status';
import { UploadJob as Job, UploadNodeDef, updateOptions, uploadSettings } from './job';
import { ProgressThrottle, statusForProgress, statusForResult } from './status';
import { UploadQueue } from './upload-queue';

/** Files whose streamed parts a node remembers, to report each file once. */
const STREAMS_REMEMBERED = 20;

/** Messages that may wait while an update runs. */
const QUEUE_LIMIT = 10;

/** The folder, in Node-RED's user directory, of the images this package installed: the bases of delta updates. */
const CACHE_FOLDER = 'ble-ota-cache';

/**
 * Full-image reasons a log line tells, and their texts: a patch was given a base, or tried,
 * and did not go. Not the usual case of a device whose image the node never installed
 * (base-unknown: delivery.reason in the result says it).
 */
const TOLD_REASONS: Partial<Record<FullReason, string>> = {
  'base-not-running': 'ble-ota-upload.reasons.baseNotRunning',
  'base-damaged': 'ble-ota-upload.reasons.baseDamaged',
  'patch-not-smaller': 'ble-ota-upload.reasons.patchNotSmaller',
  'wrong-base': 'ble-ota-upload.reasons.wrongBase',
  'patch-not-computed': 'ble-ota-upload.reasons.patchNotComputed',
  'patch-not-applied': 'ble-ota-upload.reasons.patchNotApplied',
};

const PHASE_STATE: Record<Progress['phase'], OtaState> = {
  scanning: 'connecting',
  connecting: 'connecting',
  preparing: 'preparing',
  uploading: 'uploading',
  resuming: 'connecting',
  verifying: 'verifying',
  restarting: 'restarting',
  confirming: 'confirming',
};

export = function register(RED: RED): void {
  const t = translator(RED, __dirname, 'ble-ota-upload');
  serveMigrations(RED);
  const userDir = RED.settings?.userDir;
  // One cache for every upload node of the runtime (and the command line's is another).
  // Its folder is the runtime's, not a flow's: what it holds but cannot use goes to the runtime's log.
  const cache = userDir ? new ImageCache({ dir: join(userDir, CACHE_FOLDER), onWarning: (m) => RED.log.warn(`ble-ota-upload: ${m}`) }) : undefined;

  function BleOtaUploadNode(this: Node, stored: UploadNodeDef) {
    RED.nodes.createNode(this, stored);
    const def = nodeConfig(this, stored, t);
    const node = this;
    const config = RED.nodes.getNode(def.device) as DeviceNode | null;
    const settings = uploadSettings(def);
    /**
     * The highest secure_version this node installed on each device (by the
     * name or address it was asked for), where the device proved it runs it.
     * A device never goes below it (anti-rollback), so an older image is
     * refused before connecting. Kept until the flow is redeployed.
     */
    const installedSecureVersion = new Map<string, number>();
    /** Streamed files (msg.parts.id) already reported: their other parts are dropped quietly. */
    const streamsReported = new Set<string>();
    // Node-RED passes every node.status() on to Status nodes (and a dashboard, or MQTT, behind them): an unchanged status is not sent again.
    const shown = new StatusFilter();
    const setStatus = (status: NodeStatus) => {
      if (shown.accept(status)) node.status(status);
    };

    if (checkConfigAtDeploy(node, config, t('ble-ota-upload.status.noDevice'), setStatus)) setStatus({});
    const showError = (err: unknown) => setStatus(statusForError(t, 'ble-ota-upload.status.', err));
    // A signing key pasted as the public key checks signatures too, but the flow file, every
    // export and every backup then hold what signs images the devices install.
    const privateKeyInFlow = settings.publicKey !== undefined && /-----BEGIN [A-Z ]*PRIVATE KEY-----/.test(settings.publicKey);
    if (privateKeyInFlow) {
      node.error(t('ble-ota-upload.errors.privateKey'));
      showError(new BleOtaError('INVALID_ARGUMENT', ''));
    }

    function publish(job: Pick<Job, 'target' | 'summary'>, state: OtaState, extra: Partial<OtaEvent> = {}, started?: number): void {
      otaEvents.publish({
        source: { id: node.id, type: node.type, name: node.name ?? '' },
        state,
        device: askedFor(job.target),
        ...(job.summary ? { image: job.summary } : {}),
        timestamp: Date.now(),
        ...(started !== undefined ? { durationS: (Date.now() - started) / 1000 } : {}),
        ...extra,
      });
    }

    const queue = new UploadQueue<Job>(
      (job) => (config ? runJob(config, job) : Promise.resolve()),
      QUEUE_LIMIT,
      (err, job) => job.done(err instanceof Error ? err : new Error(String(err))),
    );

    /** Ends a waiting job: a cancel message, or the node closing. */
    const dropped = (reason: string) => (job: Job) => {
      publish(job, 'cancelled', { error: { code: 'CANCELLED', message: reason } });
      job.done(new CancelledError(reason));
    };

    node.on('input', (msg, send, done) => {
      if (msg.cancel === true) {
        // not "false", nor any other truthy value: a cancel ends every waiting update
        queue.cancelAll(dropped(t('ble-ota-upload.errors.cancelledByMsg')));
        done();
        return;
      }
      if (msg.cancel !== undefined && msg.cancel !== null && !Buffer.isBuffer(msg.payload)) {
        // Meant as a cancel ("true" from a Change node set to string), not as an update: said so, and
        // the running update's status stays, as nothing happened to it.
        done(new BleOtaError('INVALID_ARGUMENT', t('ble-ota-upload.errors.badCancel', { value: describeValue(msg.cancel) })));
        return;
      }
      if (!config) {
        done(new BleOtaError('INVALID_ARGUMENT', t('ble-ota-upload.errors.noDevice')));
        return;
      }
      if (privateKeyInFlow) {
        done(new BleOtaError('INVALID_ARGUMENT', t('ble-ota-upload.errors.privateKey')));
        return;
      }
      const part = streamedPart(msg);
      if (part) {
        const first = !streamsReported.has(part.id);
        if (part.last) streamsReported.delete(part.id);
        else if (first) remember(streamsReported, part.id, STREAMS_REMEMBERED);
        if (!first) return done(); // the same file again: reported with its first part
        const error = new ImageError('IMAGE_STREAMED', t('ble-ota-upload.errors.streamed'));
        showError(error);
        publish({ target: undefined, summary: undefined }, 'failed', { error: { code: error.code, message: error.message } });
        done(error);
        return;
      }
      let target: string | undefined;
      let summary: EspImageSummary;
      let deviceId: string | undefined;
      let baseImage: Buffer | undefined;
      try {
        const override = deviceOverride(msg, {
          notString: (value) => t('ble-ota-upload.errors.badDevice', { value }),
          secretForm: t('ble-ota-upload.errors.deviceIsSecret'),
        });
        target = override ?? (config.device || undefined);
        // The configured id belongs to the configured device, not to another one msg.device names.
        const sameDevice = override === undefined || sameTarget(override, config.device);
        deviceId = deviceIdFor(msg, sameDevice ? config.deviceId : undefined);
        summary = imageSummary(validateImage(msg.payload)); // before anything touches the radio
        // A sample's code is filler: a real ESP32 would boot it and crash.
        if (config.backend !== 'virtual' && isSampleImage(msg.payload as Buffer)) throw new ImageError('IMAGE_SAMPLE', t('ble-ota-upload.errors.sample'));
        checkExpected(msg, msg.payload as Buffer);
        checkSecureVersion(target, summary);
        baseImage = baseImageOf(msg);
      } catch (err) {
        const error = err as BleOtaError;
        const httpMessage = httpBodyMessage(msg, error.code);
        if (httpMessage) error.message = httpMessage;
        showError(error);
        publish({ target, summary: undefined }, 'failed', { error: { code: error.code ?? 'FAILED', message: error.message } });
        done(error);
        return;
      }
      if (queue.full) {
        const error = new BleOtaError('BUSY', t('ble-ota-upload.errors.queueFull', { limit: QUEUE_LIMIT }));
        publish({ target, summary }, 'failed', { error: { code: error.code, message: error.message } });
        done(error);
        return;
      }
      const job: Job = { msg, send, done, image: msg.payload as Buffer, summary, target, deviceId, baseImage, abort: new AbortController() };
      publish(job, 'queued'); // before the job may start: 'queued' comes first
      if (queue.add(job) === 'queued') setStatus({ fill: 'yellow', shape: 'ring', text: t('ble-ota-upload.status.queued', { count: queue.length }) });
    });

    /** One update, its outcome reported: status, event, log, output or Catch. */
    async function runJob(config: DeviceNode, job: Job): Promise<void> {
      const started = Date.now();
      try {
        // Another node's update or scan holds the radio: say so, rather than leave the last result showing.
        if (config.adapter.inUse) setStatus({ fill: 'yellow', shape: 'ring', text: t('ble-ota-upload.status.waitingRadio') });
        const result = await config.adapter.run(() => update(config, job, started), job.abort.signal);
        // A fleet secret is set and went unused: the device proved nothing (allowed by the device node's option).
        const secretUnused = config.secret !== undefined && !result.authenticated;
        setStatus(statusForResult(t, result, secretUnused));
        rememberSecureVersion(job.target, result);
        const state: OtaState = result.skipped ? 'skipped' : result.confirmed ? 'confirmed' : 'updated';
        publish(job, state, { result, device: result.device, percent: 100 }, started);
        const facts = {
          device: result.device.name ?? result.device.address,
          id: result.device.id ? t('ble-ota-upload.log.deviceId', { id: result.device.id }) : '',
          project: result.image.project,
          version: result.image.version,
          seconds: (result.durationMs / 1000).toFixed(1),
          protocol: result.protocol,
          confirmed: result.confirmed ? t('ble-ota-upload.log.confirmed') : '',
          authenticated: result.authenticated ? '' : t('ble-ota-upload.log.notAuthenticated'),
          delivery: deliveryLog(result),
        };
        node.log(t(result.skipped ? 'ble-ota-upload.log.skipped' : 'ble-ota-upload.log.updated', facts));
        job.msg.payload = result;
        if (secretUnused) {
          const warning = t('ble-ota-upload.warnings.secretUnused', { device: facts.device });
          job.msg.warning = warning;
          node.warn(warning);
        }
        // The update succeeded; only the next one may be slower for it.
        if (result.cache?.error) node.warn(t('ble-ota-upload.warnings.cacheNotStored', { device: facts.device, error: result.cache.error }));
        // Damage on disk is worth more than a log line: whoever looks after the runtime should check it.
        if (result.delivery?.reason === 'base-damaged' && cache) node.warn(t('ble-ota-upload.warnings.cacheDamaged', { device: facts.device, dir: cache.dir }));
        job.send([job.msg, null]);
        job.done();
      } catch (err) {
        const error = err instanceof Error ? err : new Error(String(err));
        const code = err instanceof BleOtaError ? err.code : 'FAILED';
        // What the device runs now, for the Catch node's flow (Node-RED copies only code and message into msg.error).
        if (err instanceof BleOtaError && err.device) job.msg.deviceState = { ...err.device };
        if (code === 'AUTH_REQUIRED') error.message = `${error.message} ${t('ble-ota-upload.errors.authRequiredHow')}`;
        const hint = code === 'DEVICE_NOT_FOUND' ? config.notFoundHint(job.target) : undefined;
        if (hint) error.message = `${error.message} ${hint}`;
        showError(error);
        publish(job, code === 'CANCELLED' ? 'cancelled' : 'failed', { error: { code, message: error.message } }, started);
        job.done(error);
      }
    }

    async function update(config: DeviceNode, job: Job, started: number): Promise<UpdateResult> {
      // The client's first step is the scan: the status says so from the start (not "connecting", then "scanning").
      setStatus(statusForProgress(t, { phase: 'scanning', bytesSent: 0, totalBytes: 0, percent: 0, bytesPerSecond: 0 }));
      const { client, target } = await config.prepare(job.target);
      // The status, the progress output and the events change together, at most every 500 ms within a phase.
      const throttle = new ProgressThrottle(500);
      return client.update(
        updateOptions(
          settings,
          config,
          job,
          target,
          (p: Progress) => {
            if (!throttle.accept(p)) return;
            setStatus(statusForProgress(t, p));
            job.send([null, { topic: job.msg.topic, device: job.target, payload: { ...p } }]);
            // Scanning and connecting are one state for status nodes: "connecting" is published once.
            const state = PHASE_STATE[p.phase];
            if (job.published?.state === state && (state !== 'uploading' || job.published.percent === p.percent)) return;
            job.published = { state, percent: p.percent };
            publish(job, state, { percent: p.percent, ...(p.bytesPerSecond > 0 ? { bytesPerSecond: p.bytesPerSecond } : {}) }, started);
          },
          cache,
        ),
      );
    }

    /** How the image went, for the log line: a patch and what it saved, or why a patch could not go. */
    function deliveryLog(result: UpdateResult): string {
      const d = result.delivery;
      if (!d || d.method === 'none') return '';
      const kb = (d.bytesOverAir / 1024).toFixed(1);
      if (d.method === 'patch') {
        const percent = d.fullBytes ? (100 * d.bytesOverAir) / d.fullBytes : undefined;
        // A patch of a few hundred bytes is a share above 0 that would round to 0.0.
        const share = percent === undefined ? '?' : percent > 0 && percent < 0.05 ? '<0.1' : percent.toFixed(1);
        const source = d.baseSource === 'cache' ? 'ble-ota-upload.log.fromCache' : d.baseSource === 'image' ? 'ble-ota-upload.log.fromImage' : 'ble-ota-upload.log.fromBaseImage';
        return t('ble-ota-upload.log.patch', { kb, share, source: t(source) });
      }
      const reason = d.reason ? TOLD_REASONS[d.reason] : undefined;
      if (!reason) return '';
      return t('ble-ota-upload.log.full', { kb, reason: t(reason, { share: Math.round(PATCH_SHARE * 100) }) });
    }

    /** One key per device however its address or id is written. */
    function deviceKey(target: string): string {
      const { address, id, name } = targetOf(target);
      return address ?? id ?? name?.toLowerCase() ?? '';
    }

    function checkSecureVersion(target: string | undefined, image: EspImageSummary): void {
      const installed = target ? installedSecureVersion.get(deviceKey(target)) : undefined;
      if (installed !== undefined && image.secureVersion < installed) {
        throw new ImageError('SECURE_VERSION_TOO_OLD', t('ble-ota-upload.errors.secureVersionKnown', { device: target, image: image.secureVersion, installed }));
      }
    }

    /** Only what the device proved it runs: an unproven answer may have come from another device. */
    function rememberSecureVersion(target: string | undefined, result: UpdateResult): void {
      if (!target || !result.authenticated || !(result.confirmed || result.skipped)) return;
      const key = deviceKey(target);
      installedSecureVersion.set(key, Math.max(installedSecureVersion.get(key) ?? 0, result.image.secureVersion));
    }

    node.on('close', (_removed, done) => {
      // Waiting messages end with an error; the running update is cancelled, and the log says so
      // now, while the node is still there to say it.
      const running = queue.current;
      if (running) node.warn(t('ble-ota-upload.warnings.closedRunning', { device: running.target || config?.device || '' }));
      closeWhenSettled([queue.close(dropped(t('ble-ota-upload.errors.closed')))], done, () => setStatus({}));
    });
  }

  /**
   * A piece of a file, not a file: File In set to "a stream of Buffer
   * objects" (or "a stream of lines") sends msg.parts with each piece.
   * Other msg.parts (a Split node's array of files, carried through a File
   * In that reads whole files) hold whole payloads and pass.
   */
  function streamedPart(msg: NodeMessage): { id: string; last: boolean } | undefined {
    const parts = msg.parts as { id?: unknown; type?: unknown; index?: unknown; count?: unknown } | undefined;
    if (typeof parts !== 'object' || parts === null || typeof parts.id !== 'string') return undefined;
    const piece = (parts.type === 'buffer' && (Buffer.isBuffer(msg.payload) || msg.payload === undefined)) || (parts.type === 'string' && typeof msg.payload === 'string');
    if (!piece) return undefined;
    return { id: parts.id, last: typeof parts.count === 'number' && typeof parts.index === 'number' && parts.index + 1 >= parts.count };
  }

  /**
   * For a message from an HTTP In node whose payload is not the image, the message that says why
   * and how to send it instead of the general one. HTTP In reads a body as text or form fields
   * unless it is application/octet-stream, a multipart form as its raw bytes (no image) unless it
   * accepts file uploads, and then puts the files in msg.req.files. Only a media type's form of
   * the Content-Type header is repeated, and no fleet secret's form within it.
   */
  function httpBodyMessage(msg: NodeMessage, code: string | undefined): string | undefined {
    const req = (msg as { req?: unknown }).req;
    if (typeof req !== 'object' || req === null) return undefined;
    const { headers, files } = req as { headers?: unknown; files?: unknown };
    if (typeof headers !== 'object' || headers === null) return undefined;
    const header = (headers as Record<string, unknown>)['content-type'];
    const mediaType = typeof header === 'string' ? /^\s*([\w.+-]+\/[\w.+-]+)/.exec(header)?.[1]?.toLowerCase() : undefined;
    const value = describePayload(msg.payload);
    // An HTTP In node that accepts uploads sets msg.req.files (empty when the form had no file).
    if (code === 'IMAGE_NOT_BUFFER' && Array.isArray(files)) return files.length > 0 ? t('ble-ota-upload.errors.httpFile', { value }) : t('ble-ota-upload.errors.httpNoFile');
    // Without msg.req.files the HTTP In node took no uploads and passed the form's raw bytes on; with them, a Buffer
    // is the form's file (moved by a Change node), whose own image error says what is wrong with it.
    if (mediaType === 'multipart/form-data' && !Array.isArray(files) && (code === 'IMAGE_NOT_BUFFER' || code === 'IMAGE_NOT_AN_IMAGE')) return t('ble-ota-upload.errors.httpForm');
    if (code !== 'IMAGE_NOT_BUFFER') return undefined;
    return t('ble-ota-upload.errors.httpBody', { value, contentType: mediaType ? `Content-Type ${hideSecretForms(mediaType)}` : t('ble-ota-upload.http.noContentType') });
  }

  /** Adds to a set that keeps only its newest `limit` entries. */
  function remember(set: Set<string>, value: string, limit: number): void {
    set.add(value);
    for (const oldest of set) {
      if (set.size <= limit) break;
      set.delete(oldest);
    }
  }

  /**
   * msg.baseImage: the image the device runs, a Buffer (a File In's), or
   * nothing. Another image than the device's is no error (the full image
   * goes, and the result says why); a value that is no image at all is, and
   * so is an empty Buffer (a File In of an empty file, a read cut short), as
   * the CLI's empty --base is: taken for "not set", it would send the full
   * image with no word on the base that went missing.
   */
  function baseImageOf(msg: NodeMessage): Buffer | undefined {
    const value = (msg as { baseImage?: unknown }).baseImage;
    if (value === undefined || value === null) return undefined;
    if (!Buffer.isBuffer(value)) {
      throw new BleOtaError('INVALID_ARGUMENT', t('ble-ota-upload.errors.baseImage', { type: Array.isArray(value) ? 'array' : typeof value }));
    }
    if (value.length === 0) throw new BleOtaError('INVALID_ARGUMENT', t('ble-ota-upload.errors.baseImageEmpty'));
    return value;
  }

  /**
   * The device as events name it: the address, or the text asked for as a
   * name (an id too: events carry no id, whose place in the result is the
   * device id's the device proved).
   */
  function askedFor(target: string | undefined): OtaEvent['device'] {
    const { address, name } = targetOf(target ?? '');
    return address !== undefined ? { address } : name !== undefined ? { name } : {};
  }

  /** msg.deviceId, else the configured one (when the message does not name another device). */
  function deviceIdFor(msg: NodeMessage, configured: string | undefined): string | undefined {
    const value = (msg as { deviceId?: unknown }).deviceId;
    if (value === undefined || value === null || value === '') return configured;
    // A number is never a device id: a MAC is text (hex digits, leading zeros, colons), and String(240012345600) only looks like one.
    if (typeof value !== 'string') throw new BleOtaError('INVALID_ARGUMENT', t('ble-ota-upload.errors.badDeviceIdType', { value: describeValue(value) }));
    const text = value;
    try {
      parseDeviceId(text);
    } catch {
      // Only a value as short as a device id is repeated: a fleet secret pasted here must not reach the debug sidebar.
      const given = text.trim();
      throw new BleOtaError(
        'INVALID_ARGUMENT',
        given.length <= DEVICE_ID_TEXT_LEN ? t('ble-ota-upload.errors.badDeviceId', { value: given }) : t('ble-ota-upload.errors.badDeviceIdLong', { length: given.length }),
      );
    }
    return text.trim();
  }

  /**
   * msg.sha256 and msg.size, when given, name the image the sender means
   * (a fleet job does): anything else is refused before the radio is used.
   */
  function checkExpected(msg: NodeMessage, image: Buffer): void {
    const { sha256, size } = msg as { sha256?: unknown; size?: unknown };
    if (size !== undefined && size !== null) {
      // A count of bytes; as text too (an HTTP header, a query parameter), but only digits.
      const expected = typeof size === 'number' ? size : typeof size === 'string' && /^\s*\d+\s*$/.test(size) ? Number(size) : NaN;
      if (!Number.isSafeInteger(expected) || expected < 0) {
        throw new BleOtaError('INVALID_ARGUMENT', t('ble-ota-upload.errors.badSize', { value: describeValue(size) }));
      }
      if (expected !== image.length) {
        throw new ImageError('IMAGE_MISMATCH', t('ble-ota-upload.errors.sizeMismatch', { expected, actual: image.length }));
      }
    }
    if (sha256 === undefined || sha256 === null) return;
    if (typeof sha256 !== 'string' || !/^[0-9a-f]{64}$/i.test(sha256.trim())) {
      throw new BleOtaError('INVALID_ARGUMENT', t('ble-ota-upload.errors.badSha256', { value: describeValue(sha256) }));
    }
    const actual = createHash('sha256').update(image).digest('hex');
    if (sha256.trim().toLowerCase() !== actual) {
      // Not repeating what msg.sha256 gives: a fleet secret, pasted there by mistake, has the same form.
      throw new ImageError('IMAGE_MISMATCH', t('ble-ota-upload.errors.shaMismatch', { actual }));
    }
  }

  RED.nodes.registerType('ble-ota-upload', BleOtaUploadNode);
};
