/**
 * What the tool prints: the JSON shapes of --json and their readable forms.
 * The JSON shapes are the stable interface (docs/CLI.md); OTA Info's numbers
 * are decoded into names here so that a script needs no protocol table.
 */
import { PATCH_SHARE } from '../client/delivery';
import type { FullReason, UpdateResult } from '../client/ota-client';
import type { SeenDevice } from '../client/scanner';
import type { DeviceInfoView } from '../device-info';
import type { PhyName } from '../protocol/v2-codec';
import { BleOtaError } from '../errors';
import type { EspImageSummary } from '../image/esp-image';
import type { KeyScheme, SignatureScheme } from '../image/signature';

/** One device of scan --json. */
export interface ScanView {
  /** null for a device that advertises no name. */
  name: string | null;
  /** '' where the system hides addresses (macOS). */
  address: string;
  /** noble's id of the device, which --device takes on every system (on Linux, the address without colons). */
  id: string;
  /** In dBm; null when the adapter measured none (it reported 127, not available). */
  rssi: number | null;
  advertisesOta: boolean;
}

export function scanView(d: SeenDevice): ScanView {
  return { name: d.name ?? null, address: d.address, id: d.id, rssi: d.rssi ?? null, advertisesOta: d.advertisesOta };
}

/** info --json: the device-info view the status node sends too (lib/device-info.ts). */
export { deviceInfoView as infoView, type DeviceInfoView as InfoView } from '../device-info';

/** A link as the result (undefined: not reported) or --json (null) has it. */
interface LinkLike {
  intervalMs?: number | null;
  latency?: number | null;
  supervisionTimeoutMs?: number | null;
  phy?: { toDevice?: PhyName | null; fromDevice?: PhyName | null } | null;
  dataLength?: { toDevice?: number | null; fromDevice?: number | null } | null;
  mtu?: number | null;
  requested?: 'none' | 'transfer' | 'idle';
}

/**
 * "interval 7.5 ms, latency 0, supervision timeout 5 s, PHY 2M, data
 * length 251 octets to the device (27 back), MTU 256": the parts a device
 * reports, so users see why a transfer is slow. Directions are named only
 * where they differ.
 */
export function formatLink(link: LinkLike): string {
  const both = <T>(to: T | undefined | null, from: T | undefined | null, unit: string): string =>
    to === from || from == null ? `${to ?? '?'}${unit}` : `${to ?? '?'}${unit} to the device (${from}${unit} back)`;
  const parts: string[] = [];
  if (link.intervalMs != null) parts.push(`interval ${link.intervalMs} ms`);
  if (link.latency != null) parts.push(`latency ${link.latency}`);
  if (link.supervisionTimeoutMs != null) parts.push(`supervision timeout ${link.supervisionTimeoutMs / 1000} s`);
  if (link.phy) parts.push(`PHY ${both(link.phy.toDevice, link.phy.fromDevice, '')}`);
  if (link.dataLength) parts.push(`data length ${both(link.dataLength.toDevice, link.dataLength.fromDevice, ' octets')}`);
  if (link.mtu != null) parts.push(`MTU ${link.mtu}`);
  if (link.requested === 'transfer') parts.push('the device asked for transfer parameters');
  if (link.requested === 'idle') parts.push('the device asked for idle parameters');
  return parts.join(', ');
}

export function formatInfo(view: DeviceInfoView): string {
  const rows: Array<[string, string]> = [
    ['device', `${view.name ?? '(no name)'} (${view.address}), ${formatRssi(view.rssi)}, MTU ${view.mtu}`],
    ['protocol', view.protocolVersion !== null ? `v2 (protocol version ${view.protocolVersion})` : 'seed (the device has no OTA Info)'],
  ];
  // Present together: the device has OTA Info.
  const { project, version, idfVersion, secureVersion, build, chip, slotSize, window, maxPacket, transfer } = view;
  if (project !== null && version !== null && build && chip && slotSize !== null && transfer) {
    rows.push(
      ['project', project],
      ['version', version + (secureVersion ? ` (secure version ${secureVersion})` : '')],
      ['ESP-IDF', idfVersion ?? ''],
      ['built', `${build.date} ${build.time}, ELF SHA-256 ${build.elfSha256.slice(0, 16)}…`],
      ['chip', `${chip.name}, revision ${chip.revision}`],
      ['running', view.runningState === 'pending-verify' ? 'pending-verify (waits for confirmation)' : view.runningState],
      ['image', view.runningImage ? `${view.runningImage.size} bytes, SHA-256 ${view.runningImage.sha256.slice(0, 16)}…` : '(not reported)'],
      ['slot size', `${formatBytes(slotSize)} (${slotSize} bytes)`],
      ['window', `${window} bytes, packets up to ${maxPacket} bytes`],
      ['features', view.capabilities.join(', ') || 'none'],
      ['transfer', transfer.state === 'idle' ? 'idle' : `${transfer.state} at byte ${transfer.offset}`],
      ['last status', view.lastStatus ?? 'none since boot'],
      ['device id', view.deviceId ?? '(not reported)'],
      [
        'signing key',
        view.signingKey
          ? `${view.signingKey.slice(0, 16)}… (only images signed with it are installed)`
          : view.capabilities.includes('signed')
            ? // OTA Info cannot tell these apart; our default builds are the first.
              'none named: with our default build, every image is refused until a signed build is flashed over USB (its app carries no signature that signs it); with hardware Secure Boot (keys in eFuse) or Secure Boot v1, the device checks each image with keys it does not name'
            : 'none: unsigned images are installed',
      ],
      ['link', view.link ? formatLink(view.link) : '(not reported: firmware older than OTA Info version 3)'],
      ['proven', view.authenticated ? 'yes: the device proved it holds its key' : 'no: nothing proves these values came from your device'],
    );
  }
  rows.push(['firmware rev.', view.firmwareRevision ?? '(none: no Device Information firmware revision)']);
  return table(rows);
}

/** "RSSI -48 dBm", or "RSSI unknown" where the adapter measured none. */
function formatRssi(rssi: number | null): string {
  return rssi === null ? 'RSSI unknown' : `RSSI ${rssi} dBm`;
}

/**
 * The scan as a table. Where the system hides a device's address (macOS),
 * its id stands in the address column, and the column says so: the id is
 * what --device then takes, the one way to tell devices of one name apart.
 */
export function formatScan(devices: SeenDevice[], durationMs: number): string {
  if (devices.length === 0) return `no devices found in ${durationMs / 1000} s\n`;
  const rows = devices.map((d) => [d.name ?? '(no name)', d.address || d.id, d.rssi === undefined ? 'unknown' : String(d.rssi), d.advertisesOta ? 'yes' : 'no']);
  const all = [['NAME', devices.some((d) => !d.address) ? 'ADDRESS OR ID' : 'ADDRESS', 'RSSI', 'OTA'], ...rows];
  const widths = all[0].map((_, i) => Math.max(...all.map((r) => r[i].length)));
  return all.map((r) => r.map((cell, i) => (i === r.length - 1 ? cell : cell.padEnd(widths[i]))).join('  ')).join('\n') + '\n';
}

export function formatImage(file: string, image: EspImageSummary): string {
  return `${file}: ${image.chip} app "${image.project}" ${image.version} (ESP-IDF ${image.idfVersion}), ${formatBytes(image.size)}\n`;
}

export function formatResult(r: UpdateResult): string {
  const device = `${r.device.name ?? '(no name)'} (${r.device.address}${r.device.id ? `, device id ${r.device.id}` : ''})`;
  if (r.skipped) return `${device} already runs ${r.image.project} ${r.image.version}: nothing sent${r.authenticated ? '' : ' (not authenticated)'}\n`;
  let outcome: string;
  if (r.protocol === 'v2') {
    const was = r.previousVersion !== undefined ? ` (was ${r.previousVersion})` : '';
    outcome = r.confirmed
      ? `updated ${device} to ${r.runningVersion ?? r.image.version}${was}, confirmed`
      : `updated ${device} to ${r.runningVersion ?? r.image.version}${was}; the device confirms it after its self-test`;
  } else {
    // The seed protocol reports no version after the restart: say what is known, no more.
    outcome = r.restarted
      ? `uploaded ${r.image.version} to ${device} (seed protocol); the device accepted it and restarted`
      : `uploaded ${r.image.version} to ${device} (seed protocol); the device accepted it but did not restart yet`;
  }
  const seconds = `${(r.durationMs / 1000).toFixed(1)} s`;
  // bytesSent counts image bytes, with a patch those the device rebuilt from it (the delivery line says what crossed the air).
  const patched = r.delivery?.method === 'patch';
  const how = patched ? ' rebuilt from a patch' : '';
  const details =
    r.bytesSent === 0
      ? [`protocol ${r.protocol}`, `nothing left to send: the device already held all ${formatBytes(r.bytes)} from an earlier call`, seconds]
      : [
          `protocol ${r.protocol}`,
          r.bytesSent < r.bytes
            ? `${formatBytes(r.bytesSent)} of ${formatBytes(r.bytes)}${how} in ${seconds} (the device held the rest)`
            : `${formatBytes(r.bytes)}${how} in ${seconds}`,
          `${formatRate(r.bytesPerSecond)}${patched ? ' of image' : ''}`,
          `MTU ${r.mtu}`,
          `${r.packets} packet${r.packets === 1 ? '' : 's'} of up to ${r.packetSize} bytes`,
        ];
  if (r.resumes) details.push(`${r.resumes} resumed after a lost link`);
  details.push(r.authenticated ? 'the device proved it holds its key' : 'not authenticated: nothing proves it was your device');
  // The link the device reported (firmware with OTA Info version 3): why the rate is what it is. What it
  // asked for last is left out here: right after the transfer that is already its idle parameters.
  const link = r.link.intervalMs !== undefined || r.link.phy || r.link.dataLength ? formatLink({ ...r.link, mtu: undefined, requested: undefined }) : '';
  const delivery = formatDelivery(r);
  return `${outcome}\n  ${details.join(', ')}\n${delivery ? `  ${delivery}\n` : ''}${link ? `  link: ${link}\n` : ''}`;
}

/** Why the full image went, where a patch was possible or tried. */
const FULL_REASONS: Record<FullReason, string> = {
  'delta-off': 'delta updates are off',
  'device-no-delta': 'the device does not apply delta patches',
  'device-no-base': 'the device does not report the image it runs',
  'base-not-running': 'the --base image is not the image the device runs, and no image cache used holds that one',
  'base-unknown': 'the image the device runs is not in the image cache (give it with --base)',
  'base-damaged': "the image cache's file of the image the device runs was damaged (its content no longer has its SHA-256) and is removed: check the disk it is on",
  'patch-not-smaller': `a patch would not be clearly smaller (at most ${Math.round(PATCH_SHARE * 100)} % of the full image)`,
  'wrong-base': 'the device refused the patch: it runs another image than the one the patch was made for',
  'patch-not-computed': 'the patch could not be computed on this machine (out of memory, or its worker thread did not start)',
  'patch-not-applied':
    'the device could not rebuild the image from the patch: the image it runs may differ from the one it reports (a flipped bit in its flash), or the patch did not arrive as sent (if it recurs on this device, check its flash)',
};

/**
 * Reasons worth a line: a patch was given a base, or tried, and did not go. Not the usual
 * case of a device whose image this tool never installed (base-unknown: the JSON says it).
 */
const TOLD: FullReason[] = ['base-not-running', 'base-damaged', 'patch-not-smaller', 'wrong-base', 'patch-not-computed', 'patch-not-applied'];

/** The delivery line: patch or full image, and what crossed the air; empty when there is nothing to tell. */
export function formatDelivery(r: UpdateResult): string {
  const d = r.delivery;
  if (!d || d.method === 'none') return '';
  if (d.method === 'patch') {
    const from = d.baseSource === 'cache' ? 'the image cache' : d.baseSource === 'image' ? 'the image itself, which the device runs' : '--base';
    const share = d.fullBytes ? `, ${formatShare(d.bytesOverAir / d.fullBytes)} of the ${formatBytes(d.fullBytes)} the full image takes` : '';
    return `delta patch against the image the device ran (${d.baseSha256?.slice(0, 12)}…, from ${from}): ${formatBytes(d.bytesOverAir)} over the air${share}`;
  }
  if (!d.reason || !TOLD.includes(d.reason)) return '';
  return `full image, ${formatBytes(d.bytesOverAir)} over the air: ${FULL_REASONS[d.reason]}`;
}

/** "8.0 %", "42 %"; "<0.1 %" for a share above 0 that would round to 0.0 (a patch of a few hundred bytes). */
export function formatShare(share: number): string {
  const percent = share * 100;
  if (percent > 0 && percent < 0.05) return '<0.1 %';
  return `${percent < 10 ? percent.toFixed(1) : percent.toFixed(0)} %`;
}

/** keygen --json. */
export interface KeygenView {
  file: string;
  scheme: KeyScheme;
  keyDigest: string;
}

/** sample-image --json: what was written. */
export interface SampleView {
  /** The file, or "-" for standard output. */
  file: string;
  project: string;
  version: string;
  chip: string;
  size: number;
  sha256: string;
}

/** sign --json: the signed file and every block of its signature sector. */
export interface SignView {
  file: string;
  image: string;
  size: number;
  sectorOffset: number;
  blocks: Array<{ index: number; scheme: SignatureScheme; keyDigest: string; added: boolean }>;
}

/** verify --json, when the image verifies (otherwise the error object). */
export interface VerifyView {
  file: string;
  verified: true;
  block: number;
  scheme: SignatureScheme;
  keyDigest: string;
}

/** pubkey --json. */
export interface PubkeyView {
  scheme: SignatureScheme;
  keyDigest: string;
  publicKey: string;
  /** --out, null when the key went to stdout. */
  file: string | null;
}

const SCHEME_NAMES: Record<SignatureScheme, string> = {
  rsa3072: 'RSA-3072',
  ecdsa192: 'ECDSA P-192',
  ecdsa256: 'ECDSA P-256',
  ecdsa384: 'ECDSA P-384',
};

export function schemeName(scheme: SignatureScheme): string {
  return SCHEME_NAMES[scheme];
}

export function formatSample(v: SampleView): string {
  const where = v.file === '-' ? 'standard output' : v.file;
  return `wrote a sample app image to ${where}: ${v.chip} app "${v.project}" ${v.version}, ${formatBytes(v.size)}
It is valid but its code is filler: for virtual devices (upload --virtual, the Node-RED
nodes' Virtual ESP32), never a real one. Virtual devices run 1.0.0 until updated.
`;
}

export function formatKeygen(v: KeygenView): string {
  const menu = v.scheme === 'rsa3072' ? 'RSA' : 'ECDSA (V2)';
  return `wrote a new ${schemeName(v.scheme)} signing key to ${v.file} (readable by you only)
public key digest: ${v.keyDigest}

Next:
  - In the firmware, set CONFIG_SECURE_BOOT_SIGNING_KEY to this file's path (idf.py menuconfig,
    Security features, app signing scheme ${menu}) so that idf.py build signs the app; or sign
    builds with: esp32-ble-ota sign --key ${v.file} --out app-signed.bin app.bin
  - Keep this file off the Node-RED machine, and back it up: a device that runs an app signed
    with it accepts no update signed with another key. To check images on that machine, give
    it the public key: esp32-ble-ota pubkey --key ${v.file} --out public.pem
`;
}

export function formatSigned(v: SignView): string {
  const rows = v.blocks.map((b) => `  block ${b.index}  ${schemeName(b.scheme).padEnd(11)}  key digest ${b.keyDigest}${b.added ? '' : '  (kept)'}`);
  return `wrote ${v.file}: ${v.image} signed, ${formatBytes(v.size)}, signature sector at 0x${v.sectorOffset.toString(16)}\n${rows.join('\n')}\n`;
}

export function formatVerified(v: VerifyView, keyFile: string): string {
  return `${v.file}: signature block ${v.block} (${schemeName(v.scheme)}) verifies with ${keyFile}\n  key digest ${v.keyDigest}\n`;
}

/** KB and MB of 1024, as ESP-IDF's tools count flash. */
export function formatBytes(bytes: number): string {
  if (bytes < 1024) return `${bytes} bytes`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(1)} KB`;
  return `${(bytes / 1024 / 1024).toFixed(2)} MB`;
}

export function formatRate(bytesPerSecond: number): string {
  return `${(bytesPerSecond / 1024).toFixed(1)} KB/s`;
}

/** The code a failure reports: the client's, or UNEXPECTED for a bug's exception. */
export function errorCode(err: unknown): string {
  return err instanceof BleOtaError ? err.code : 'UNEXPECTED';
}

export function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

export function jsonError(code: string, message: string): string {
  return JSON.stringify({ error: { code, message } }) + '\n';
}

function table(rows: Array<[string, string]>): string {
  const width = Math.max(...rows.map(([k]) => k.length));
  return rows.map(([k, v]) => `${k.padEnd(width)}  ${v}`).join('\n') + '\n';
}
