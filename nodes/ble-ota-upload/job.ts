/**
 * One update as the upload node runs it: the node's settings (read once,
 * at deploy), the job a message becomes, and the client's options made
 * from both. A new option of the upload node is read in uploadSettings and
 * passed on in updateOptions, and nowhere else.
 */
import type { ImageCache } from '../../lib/client/image-cache';
import type { ConfirmMode, Progress, UpdateOptions } from '../../lib/client/ota-client';
import type { Target } from '../../lib/client/scanner';
import type { EspImageSummary } from '../../lib/image/esp-image';
import type { DeviceNode } from '../ble-ota-device/device-node';
import type { OtaState } from '../shared/ota-events';
import type { NodeDef, NodeDone, NodeMessage, NodeSend } from '../shared/red';

/** The upload node's configuration as the flow stores it. */
export interface UploadNodeDef extends NodeDef {
  device: string;
  /** Who confirms the new image: the client after the restart, or the device itself. */
  confirm?: ConfirmMode;
  /** Skip a device that already runs this build. */
  skipSame?: boolean;
  /** Install an image older than the running one. */
  allowDowngrade?: boolean;
  /** Refuse an image not signed with publicKey, before the radio is used. */
  requireSignature?: boolean;
  /** The public key (PEM) images must be signed with. Not a secret. */
  publicKey?: string;
  /** Send a patch where the device applies one and the node has the image it runs. */
  delta?: boolean;
}

/** The node's settings, with their defaults applied. */
export interface UploadSettings {
  confirm: ConfirmMode;
  skipSame: boolean;
  allowDowngrade: boolean;
  requireSignature: boolean;
  publicKey: string | undefined;
  delta: boolean;
}

export function uploadSettings(def: UploadNodeDef): UploadSettings {
  return {
    confirm: def.confirm === 'device' ? 'device' : 'client',
    skipSame: def.skipSame !== false,
    allowDowngrade: def.allowDowngrade === true,
    requireSignature: def.requireSignature === true,
    publicKey: typeof def.publicKey === 'string' ? def.publicKey.trim() || undefined : undefined,
    delta: def.delta !== false,
  };
}

/** A message accepted for an update: checked, waiting or running. */
export interface UploadJob {
  msg: NodeMessage;
  send: NodeSend;
  done: NodeDone;
  image: Buffer;
  summary: EspImageSummary | undefined;
  /** The device as the message or the device node named it (name or address). */
  target: string | undefined;
  /** The device id the device must prove, if one is asked for. */
  deviceId: string | undefined;
  /** msg.baseImage: the image the device runs, the base of a delta patch. */
  baseImage?: Buffer;
  abort: AbortController;
  /** The last state and percent published for this job: a repeat is not published. */
  published?: { state: OtaState; percent: number | undefined };
}

/** The client's options for a job. */
export function updateOptions(settings: UploadSettings, config: DeviceNode, job: UploadJob, target: Target, onProgress: (p: Progress) => void, cache?: ImageCache): UpdateOptions {
  return {
    target,
    image: job.image,
    signal: job.abort.signal,
    confirm: settings.confirm,
    skipIfRunning: settings.skipSame,
    allowDowngrade: settings.allowDowngrade,
    requireSignature: settings.requireSignature,
    publicKey: settings.publicKey,
    secret: config.secret,
    allowUnauthenticated: config.allowUnauthenticated,
    deviceId: job.deviceId,
    delta: settings.delta,
    ...(job.baseImage ? { baseImage: job.baseImage } : {}),
    ...(cache ? { cache } : {}),
    onProgress,
  };
}
