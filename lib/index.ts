/**
 * The OTA client as a library, usable without Node-RED.
 */
export { BleOtaClient, DEFAULT_TIMEOUTS, OtaConnection } from './client/ota-client';
export type { BleOtaClientOptions, Delivery, DeviceInfo, FullReason, Phase, Progress, Timeouts, UpdateOptions, UpdateResult } from './client/ota-client';
export { defaultCacheDir, ImageCache } from './client/image-cache';
export type { CacheLookup, ImageCacheOptions } from './client/image-cache';
export type { SeenDevice, Target } from './client/scanner';
export { isAddress, sameTarget, targetOf } from './client/target';
export { deviceInfoView } from './device-info';
export type { Capability, DeviceInfoView, LinkView } from './device-info';
export type { NobleLike } from './client/noble-types';
export * from './errors';
export { imageSummary, parseEspImage } from './image/esp-image';
export type { EspImage, EspImageSummary } from './image/esp-image';
export { buildAppImage } from './image/app-image-builder';
export type { AppImageOptions } from './image/app-image-builder';
export { validateImage } from './image/validate';
export { loadSystemNoble, releaseSystemBluetooth } from './noble-loader';
export { VirtualBindings } from './virtual/bindings';
export { VirtualEsp32 } from './virtual/virtual-device';
export type { VirtualDeviceOptions, VirtualDeviceState } from './virtual/virtual-device';
export { VirtualRadio } from './virtual/virtual-radio';
