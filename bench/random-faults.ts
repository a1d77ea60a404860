/**
 * Seeded random faults against v2 updates: random fault kinds,
 * rates and moments, each update retried as a caller would (up to 3 more
 * calls with the same image), and after every call the invariants:
 *
 * - a success leaves the new image running, confirmed;
 * - a failure is a BleOtaError whose err.device says what the device really
 *   runs ('unknown' only after a restart during the call, a CONFIRM whose
 *   answer never reached the client, or a call that could not read OTA Info);
 * - after a power cycle the device boots the old image or the new one,
 *   never anything else;
 * - no connection, no noble listener is left behind;
 * - after the retries, every fault that does not persist ends in success.
 *
 * Over the whole run: no unhandled rejection, no timers left, heap about flat.
 * About a fifth of the plans are delta updates: the device runs the old build
 * of a one-function change, the client sends the patch (and a success by the
 * full image instead is a violation).
 *
 * This module is the engine of test/random-faults.test.ts (a few hundred
 * updates) and, run as a script, the long run: thousands of updates, a table
 * of success within 0..3 retries per fault kind, and every invariant
 * violation with the seed that reproduces its fault plan.
 *
 * Environment: RANDOM_FAULTS_SEED (the run's seed), RANDOM_FAULTS_SEQUENCES
 * (updates, each with its retries), RANDOM_FAULTS_CONCURRENCY (devices at
 * once), RANDOM_FAULTS_ONLY (one sequence's seed, as a violation prints it),
 * RANDOM_FAULTS_BOOT_CHECK (the share of failed calls followed by a power
 * cycle, 0..1; default 0.5, so that retries also meet the states a failed
 * call leaves).
 *
 * The fault plan of a sequence follows from its seed; what the client makes
 * of it also depends on timing (timeouts, the client's backoff jitter), so a
 * seed reproduces the faults and their moments, usually the outcome.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BleOtaClient, UpdateResult } from '../lib/client/ota-client';
import type { NoblePeripheral } from '../lib/client/noble-types';
import { BleOtaError, DeviceOutcome } from '../lib/errors';
import { parseEspImage } from '../lib/image/esp-image';
import { ANSWER, Command, OTA_COMMAND_UUID, OTA_INFO_UUID, OTA_STREAM_UUID } from '../lib/protocol/constants';
import { encodedLength, worthDeflating } from '../lib/protocol/deflate-chunks';
import { peripheralId, VirtualBindings } from '../lib/virtual/bindings';
import type { VirtualEsp32 } from '../lib/virtual/virtual-device';
import { VirtualRadio } from '../lib/virtual/virtual-radio';
import { computePatch } from '../lib/delta/diff';
import { oneFunctionChanged } from '../test/support/code-images';
import { OWNER, ownedDevice, signedImage } from '../test/support/owner';
import { mulberry32, Random } from '../test/support/prng';

// --- a seeded PRNG -------------------------------------------------------------

const int = (rnd: Random, lo: number, hi: number) => lo + Math.floor(rnd() * (hi - lo + 1));
const pick = <T>(rnd: Random, items: readonly T[]): T => items[Math.floor(rnd() * items.length)];

// --- fault plans -----------------------------------------------------------------

export const KINDS = [
  'none',
  'drop-link',
  'no-answer',
  'drop-notify',
  'flash-write-fail',
  'flash-fails-always',
  'power-cut',
  'power-loss-in-flash',
  'second-central',
  'cancel',
] as const;
export type Kind = (typeof KINDS)[number];

/** Faults that stay: the update may end in its specific error. */
export const PERSISTENT: ReadonlySet<Kind> = new Set<Kind>(['flash-fails-always']);

const COMMANDS = ['HELLO', 'INFO', 'BEGIN', 'END', 'RESTART', 'CONFIRM'] as const;
type CommandName = (typeof COMMANDS)[number];

/** When a fault fires: the k-th such event (counted from when it is armed). */
type Moment =
  | { at: 'connect'; k: number }
  | { at: 'reconnect-after-restart' }
  | { at: 'discover'; k: number }
  | { at: 'info-read'; k: number }
  | { at: 'command'; command: CommandName; k: number }
  | { at: 'data'; fraction: number };

interface Firing {
  moment: Moment;
  /** Inject in the event itself (before the operation reaches the device), or just after. */
  sync: boolean;
  /** A count: notifications lost, the n-th flash write or operation, connection attempts held. */
  n: number;
  /** A choice within the kind (which request goes unanswered). */
  variant: number;
}

export interface Plan {
  kind: Kind;
  firings: Firing[];
  imageSize: number;
  compressible: boolean;
  /** A delta update: the device runs the old build of a one-function change, the client sends the new one as a patch against it. */
  patched: boolean;
}

function randomMoment(rnd: Random): Moment {
  const r = rnd();
  if (r < 0.2) return { at: 'connect', k: int(rnd, 1, 3) };
  if (r < 0.27) return { at: 'reconnect-after-restart' };
  if (r < 0.34) return { at: 'discover', k: int(rnd, 1, 2) };
  if (r < 0.41) return { at: 'info-read', k: int(rnd, 1, 2) };
  if (r < 0.7) {
    const command = pick(rnd, COMMANDS);
    return { at: 'command', command, k: command === 'HELLO' || command === 'INFO' ? int(rnd, 1, 3) : 1 };
  }
  return { at: 'data', fraction: rnd() };
}

export function makePlan(seed: number): Plan {
  const rnd = mulberry32(seed);
  const r = rnd();
  // 'none' is a control: a few percent.
  const kind: Kind = r < 0.04 ? 'none' : KINDS[1 + Math.floor(((r - 0.04) / 0.96) * (KINDS.length - 1))];
  // One firing that persists; one hold of the second central (n connection attempts, at most 3: the retries).
  const count = kind === 'none' ? 0 : kind === 'flash-fails-always' || kind === 'second-central' ? 1 : int(rnd, 1, 3);
  const firings: Firing[] = [];
  for (let i = 0; i < count; i++) {
    firings.push({ moment: randomMoment(rnd), sync: rnd() < 0.5, n: int(rnd, 1, kind === 'power-loss-in-flash' ? 4 : 3), variant: int(rnd, 0, 3) });
  }
  const imageSize = pick(rnd, [8, 12, 16, 24]) * 1024;
  const compressible = rnd() < 0.3;
  // Drawn last, so that a seed's other choices are what they were before patches.
  return { kind, firings, imageSize, compressible, patched: !compressible && rnd() < 0.3 };
}

function describeMoment(m: Moment): string {
  switch (m.at) {
    case 'connect':
    case 'discover':
    case 'info-read':
      return `${m.at}#${m.k}`;
    case 'reconnect-after-restart':
      return m.at;
    case 'command':
      return `${m.command}#${m.k}`;
    case 'data':
      return `data@${Math.round(m.fraction * 100)}%`;
  }
}

export function describePlan(plan: Plan): string {
  const firings = plan.firings.map((f) => `${describeMoment(f.moment)}${f.sync ? '' : '+'} n${f.n} v${f.variant}`).join(', ');
  return `${plan.kind}${firings ? ` [${firings}]` : ''} image ${plan.imageSize / 1024} KB${plan.compressible ? ' compressible' : ''}${plan.patched ? ' patched' : ''}`;
}

// --- results ---------------------------------------------------------------------

export interface Violation {
  seed: number;
  kind: Kind;
  plan: string;
  attempt: number;
  message: string;
}

export interface CallRecord {
  attempt: number;
  ok: boolean;
  code?: string;
  device?: DeviceOutcome;
  message?: string;
  resumes?: number;
  /** What the device ran once the call had ended. */
  runs: Runs;
  slotState: string;
}

export interface SequenceReport {
  seed: number;
  kind: Kind;
  plan: string;
  calls: CallRecord[];
  /** Retries until success (0..3), or undefined. */
  successAfter: number | undefined;
  finalCode?: string;
  firingsPlanned: number;
  firingsFired: number;
  violations: Violation[];
}

export interface RunReport {
  seed: number;
  sequences: SequenceReport[];
  violations: Violation[];
  unhandledRejections: string[];
  warnings: string[];
  timersBefore: number;
  timersAfter: number;
  heapBefore: number;
  heapAfter: number;
  gc: boolean;
  ms: number;
}

type Runs = 'old' | 'new' | 'other' | 'none';

// --- one sequence: an update and its retries ---------------------------------------

const TIMEOUTS = { scanMs: 1500, connectMs: 500, gattMs: 400, verifyMs: 800, restartMs: 800 };
const RETRIES = 3;
/** A call that takes longer hangs (every wait of the client is bounded far below). */
const HUNG_MS = 60_000;

interface SequenceOptions {
  /** The share of failed calls followed by a power cycle (and the boot check). */
  bootCheck: number;
}

/** The second central: another radio's bindings on the same device, connecting and holding it. */
class Holder {
  private readonly bindings = new VirtualBindings();
  private readonly id: string;
  private state: 'idle' | 'connecting' | 'holding' | 'releasing' = 'idle';
  private attemptsLeft = 0;
  private releaseWanted = false;
  private readonly waiters: Array<() => void> = [];
  grabs = 0;
  holds = 0;

  constructor(private readonly device: VirtualEsp32) {
    this.id = peripheralId(device.address);
    this.bindings.addDevice(device);
    this.bindings.on('connect', (id: string, err: Error | null) => {
      if (id !== this.id || this.state !== 'connecting') return;
      if (err) return this.idle(); // the device had a central already
      this.state = 'holding';
      this.holds++;
      if (this.releaseWanted) this.release();
    });
    this.bindings.on('disconnect', (id: string) => {
      if (id === this.id && (this.state === 'holding' || this.state === 'releasing')) this.idle();
    });
  }

  get busy(): boolean {
    return this.state !== 'idle';
  }

  /** Connects (the request goes to the device now) and holds until the client tried `attempts` more connections. */
  grab(attempts: number): void {
    if (this.state !== 'idle') return;
    this.grabs++;
    this.state = 'connecting';
    this.attemptsLeft = attempts;
    this.releaseWanted = false;
    this.bindings.connect(this.id);
  }

  /** The client starts a connection attempt: counted, and on the last one the device is let go first. */
  clientConnects(): void {
    if (this.state !== 'connecting' && this.state !== 'holding') return;
    if (--this.attemptsLeft <= 0) this.release();
  }

  private release(): void {
    if (this.state === 'connecting') {
      this.releaseWanted = true;
    } else if (this.state === 'holding') {
      this.state = 'releasing';
      this.bindings.disconnect(this.id); // the disconnect request reaches the device before the client's connect
    }
  }

  private idle(): void {
    this.state = 'idle';
    for (const w of this.waiters.splice(0)) w();
  }

  /** Lets the device go and waits until it has. */
  async end(): Promise<void> {
    if (this.state === 'idle') return;
    const done = new Promise<void>((resolve) => this.waiters.push(resolve));
    this.release();
    await done;
  }

  dispose(): void {
    this.bindings.removeDevice(this.device);
    this.bindings.removeAllListeners();
  }
}

async function whatRuns(device: VirtualEsp32, images: { old: Buffer; new: Buffer }): Promise<{ runs: Runs; slotState: string; boot: string }> {
  const st = await device.state();
  if (st.running !== 'ota_0' && st.running !== 'ota_1') return { runs: 'none', slotState: '', boot: st.boot };
  const slot = st.slots[st.running];
  const bytes = await device.readFlash(st.running, 0, Math.max(images.old.length, images.new.length));
  const is = (img: Buffer) => slot.size === img.length && bytes.subarray(0, img.length).equals(img);
  return { runs: is(images.old) ? 'old' : is(images.new) ? 'new' : 'other', slotState: slot.state, boot: st.boot };
}

const settle = () => new Promise<void>((resolve) => setImmediate(resolve));

export async function runSequence(seed: number, options: SequenceOptions): Promise<SequenceReport> {
  const plan = makePlan(seed);
  const planText = describePlan(plan);
  const rnd = mulberry32(seed ^ 0x5eed);
  const report: SequenceReport = {
    seed,
    kind: plan.kind,
    plan: planText,
    calls: [],
    successAfter: undefined,
    firingsPlanned: plan.firings.length,
    firingsFired: 0,
    violations: [],
  };
  let attempt = 0;
  const violate = (message: string) => report.violations.push({ seed, kind: plan.kind, plan: planText, attempt, message });

  const radio = new VirtualRadio();
  const name = `rf-${(seed >>> 0).toString(36)}`;
  let holder: Holder | undefined;
  const cleanups: Array<() => void> = [];
  try {
    // A patched plan: the device was flashed with the old build (over USB, as a factory does).
    const pair = plan.patched ? oneFunctionChanged(plan.imageSize, seed >>> 0 || 1, { projectName: 'virtual-esp32', signingKeys: OWNER.signingKey }) : undefined;
    let firstImage: string | undefined;
    if (pair) {
      const dir = mkdtempSync(join(tmpdir(), 'ble-ota-rf-'));
      cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
      firstImage = join(dir, 'first.bin');
      writeFileSync(firstImage, pair.old);
    }
    const device = await radio.addDevice(ownedDevice({ name, restartDelayMs: 10, window: 4096, ...(firstImage ? { image: firstImage } : {}) }));
    const start = await device.state();
    const old = await device.readFlash(start.running, 0, start.slots[start.running].size);
    const drawn = `2.${int(rnd, 0, 99)}.${int(rnd, 0, 99)}`;
    const fill = plan.compressible ? Buffer.from(Array.from({ length: 4096 }, (_, i) => (i * 7) % 16)) : undefined;
    const image = pair ? pair.new : signedImage({ size: plan.imageSize, projectName: 'virtual-esp32', version: drawn, seed: seed >>> 0 || 1, fill });
    const version = parseEspImage(image).appDesc.version;
    const images = { old, new: image };
    const versionOf = { old: parseEspImage(old).appDesc.version, new: version };
    // What the stream carries: the patch's DEFLATE chunks, or the image's (deflated where that pays).
    const streamLength = pair ? encodedLength(computePatch(pair.old, image)) : worthDeflating(image) ? encodedLength(image) : image.length;
    if (plan.kind === 'second-central') holder = new Holder(device);

    // --- the noble side: the peripheral objects, and the listeners they carry
    const peripherals = new Set<NoblePeripheral>();
    const onDiscover = (p: NoblePeripheral) => peripherals.add(p);
    radio.noble.on('discover', onDiscover);
    cleanups.push(() => radio.noble.off('discover', onDiscover));
    const nobleListeners = () => new Map(radio.noble.eventNames().map((e) => [String(e), radio.noble.listenerCount(e)]));
    const nobleBaseline = nobleListeners();

    // --- what a call does, as the air shows it
    const mine = (address: string) => address === device.address;
    /** A RESTART went out, the device booted, the last CONFIRM's answer never reached the central. */
    let call = { restart: false, booted: false, confirmOpen: false, confirmWritten: false, controller: new AbortController() };
    const onBoot = () => (call.booted = true);
    device.on('boot', onBoot);
    cleanups.push(() => device.off('boot', onBoot));

    // --- injection: work started by a fault, awaited before the call's checks
    const pending = new Set<Promise<unknown>>();
    let deferred = 0;
    const track = (p: Promise<unknown>) => {
      const q = p.catch(() => undefined);
      pending.add(q);
      void q.finally(() => pending.delete(q));
    };
    const later = (fn: () => void) => {
      deferred++;
      setImmediate(() => {
        deferred--;
        fn();
      });
    };
    const drain = async () => {
      for (let i = 0; i < 100 && (deferred > 0 || pending.size > 0); i++) {
        await Promise.all([...pending]);
        await settle();
      }
    };
    /** Listeners a fault leaves for the connection being made; gone at the end of the call. */
    const callListeners: Array<() => void> = [];
    const onceConnected = (fn: () => void) => {
      const listener = (id: string, err: Error | null) => {
        if (id !== peripheralId(device.address)) return;
        radio.bindings.off('connect', listener);
        if (!err) fn();
      };
      radio.bindings.on('connect', listener);
      callListeners.push(() => radio.bindings.off('connect', listener));
    };
    let flashFailsAlways = false;
    const armFlashFailure = () => track(device.fault({ kind: 'flash-write-fail', after: 1 }));

    const inject = (firing: Firing) => {
      report.firingsFired++;
      const m = firing.moment;
      const linkMoment = m.at === 'connect' || m.at === 'reconnect-after-restart';
      const act = (fn: () => void) => (firing.sync ? fn() : later(fn));
      switch (plan.kind) {
        case 'none':
          return;
        case 'drop-link':
          return linkMoment ? onceConnected(() => radio.bindings.dropLink(device)) : act(() => radio.bindings.dropLink(device));
        case 'no-answer':
          // In the event itself: the operation that caused it is the one lost.
          if (linkMoment) {
            const what = (['connect', 'mtu', 'discover-services', 'discover-characteristics'] as const)[firing.variant];
            if (what === 'connect') track(device.fault({ kind: 'no-answer', request: 'connect', count: 1 }));
            else radio.bindings.stall(device, what);
          } else if (m.at === 'discover') {
            radio.bindings.stall(device, firing.variant % 2 ? 'discover-characteristics' : 'discover-services');
          } else if (m.at === 'info-read') {
            track(device.fault({ kind: 'no-answer', request: 'read', count: 1 }));
          } else if (m.at === 'command') {
            track(device.fault({ kind: 'no-answer', request: firing.variant === 3 ? 'subscribe' : 'write', count: 1 }));
          } else {
            track(device.fault({ kind: 'no-answer', request: 'write-cmd', count: firing.n }));
          }
          return;
        case 'drop-notify':
          return act(() => track(device.fault({ kind: 'drop-notify', count: firing.n })));
        case 'flash-write-fail':
          return act(() => track(device.fault({ kind: 'flash-write-fail', after: firing.n })));
        case 'flash-fails-always':
          flashFailsAlways = true;
          return armFlashFailure();
        case 'power-cut':
          if (linkMoment) {
            return onceConnected(() => {
              radio.bindings.dropLink(device);
              track(device.powerCycle());
            });
          }
          return act(() => {
            if (m.at === 'discover') radio.bindings.dropLink(device);
            track(device.powerCycle());
          });
        case 'power-loss-in-flash':
          return act(() => track(device.fault({ kind: 'power-loss-after', flashOps: firing.n })));
        case 'second-central':
          // At a connection attempt, in the event itself: the other central's request goes first.
          return (linkMoment ? (fn: () => void) => fn() : act)(() => {
            // A link up is broken first; then the other central gets in before the client's next attempt.
            if (radio.bindings.isConnected(device)) radio.bindings.dropLink(device);
            holder!.grab(firing.n);
          });
        case 'cancel':
          return act(() => call.controller.abort());
      }
    };

    // --- the moments
    let armed = 0;
    let seen = 0;
    let restartSeen = false;
    const occur = (matches: (m: Moment) => boolean | 'count') => {
      const firing = plan.firings[armed];
      if (!firing) return;
      const r = matches(firing.moment);
      if (!r) return;
      if (r === 'count') {
        const k = (firing.moment as { k: number }).k;
        if (++seen < k) return;
      }
      armed++;
      seen = 0;
      restartSeen = false;
      inject(firing);
    };
    const onAirConnect = (address: string) => {
      if (!mine(address)) return;
      holder?.clientConnects();
      if (flashFailsAlways) armFlashFailure();
      occur((m) => (m.at === 'connect' ? 'count' : m.at === 'reconnect-after-restart' && restartSeen));
    };
    const onAirDiscover = (address: string, what: string) => {
      if (mine(address) && what === 'services') occur((m) => m.at === 'discover' && 'count');
    };
    const onAirRead = (address: string, uuid: string) => {
      if (mine(address) && uuid === OTA_INFO_UUID) occur((m) => m.at === 'info-read' && 'count');
    };
    const onAirWrite = (address: string, uuid: string, data: Buffer) => {
      if (!mine(address)) return;
      if (flashFailsAlways) armFlashFailure();
      if (uuid === OTA_COMMAND_UUID) {
        if (data[0] === Command.RESTART) {
          call.restart = true;
          restartSeen = true;
        }
        if (data[0] === Command.CONFIRM) {
          call.confirmOpen = true;
          call.confirmWritten = true;
        }
        occur((m) => m.at === 'command' && data[0] === Command[m.command] && 'count');
      } else if (uuid === OTA_STREAM_UUID && data.length >= 4) {
        const offset = data.readUInt32LE(0);
        occur((m) => m.at === 'data' && offset + data.length - 4 > m.fraction * streamLength);
      }
    };
    const onAirNotify = (address: string, uuid: string, data: Buffer) => {
      if (mine(address) && uuid === OTA_COMMAND_UUID && data[0] === (ANSWER | Command.CONFIRM)) call.confirmOpen = false;
    };
    const air: Array<[string, (...args: never[]) => void]> = [
      ['air-notify', onAirNotify],
      ['air-connect', onAirConnect],
      ['air-discover', onAirDiscover],
      ['air-read', onAirRead],
      ['air-write', onAirWrite],
    ];
    for (const [event, fn] of air) radio.bindings.on(event, fn as (...args: unknown[]) => void);
    cleanups.push(() => {
      for (const [event, fn] of air) radio.bindings.off(event, fn as (...args: unknown[]) => void);
    });

    const client = new BleOtaClient({ noble: radio.noble, timeouts: TIMEOUTS });
    for (attempt = 0; attempt <= RETRIES; attempt++) {
      call = { restart: false, booted: false, confirmOpen: false, confirmWritten: false, controller: new AbortController() };
      if (flashFailsAlways) armFlashFailure();
      let result: UpdateResult | undefined;
      let error: unknown;
      let hung: NodeJS.Timeout | undefined;
      try {
        result = await Promise.race([
          client.update({ target: { name }, image, secret: OWNER.secret, signal: call.controller.signal, ...(pair ? { baseImage: pair.old } : {}) }),
          new Promise<never>((_, reject) => {
            hung = setTimeout(() => reject(new Error(`the call hung for ${HUNG_MS} ms`)), HUNG_MS);
          }),
        ]);
      } catch (err) {
        error = err;
      } finally {
        clearTimeout(hung);
      }
      if (error instanceof Error && /the call hung/.test(error.message)) {
        violate(error.message);
        break;
      }

      // What the call left: no connection, no listener on noble's objects.
      if (radio.bindings.isConnected(device)) violate('a connection stays open after the call');
      for (const p of peripherals) {
        for (const event of ['connect', 'disconnect']) {
          const n = p.listenerCount(event);
          if (n > 0) violate(`${n} '${event}' listener(s) left on the noble peripheral`);
        }
      }
      for (const [event, n] of nobleListeners()) {
        if (n > (nobleBaseline.get(event) ?? 0)) violate(`noble has ${n} '${event}' listener(s), ${nobleBaseline.get(event) ?? 0} before`);
      }

      // The faults' own work done, then what the device runs.
      await drain();
      for (const off of callListeners.splice(0)) off();
      await device.fault({ kind: 'clear' });
      const now = await whatRuns(device, images);
      const record: CallRecord = { attempt, ok: result !== undefined, runs: now.runs, slotState: now.slotState };
      report.calls.push(record);

      if (result) {
        record.resumes = result.resumes;
        if (!result.confirmed) violate('success without a confirmed image');
        if (result.runningVersion !== version) violate(`success, running version ${result.runningVersion}, not ${version}`);
        if (now.runs !== 'new' || now.slotState !== 'valid') violate(`success, but the device runs ${now.runs} (${now.slotState})`);
        // No fault here is one the full image would get past and the patch not: a fallback means the device failed the patch.
        if (pair && result.delivery?.method === 'full') violate(`success of a patched plan, but by the full image (${result.delivery.reason})`);
      } else if (!(error instanceof BleOtaError)) {
        record.code = `not a BleOtaError: ${String(error)}`;
        violate(`failure that is not a BleOtaError: ${String(error)}`);
      } else {
        record.code = error.code;
        record.device = error.device;
        record.message = error.message;
        const said = error.device;
        const actual = `${now.runs} (${now.slotState})`;
        const mismatch = (what: string) => violate(`${error.code}: err.device says ${what}, the device runs ${actual}: ${error.message}`);
        if (said?.runs === 'old') {
          if (now.runs !== 'old') mismatch('old');
          else if (said.version !== undefined && said.version !== versionOf.old) mismatch(`old ${said.version}`);
        } else if (said?.runs === 'new-unconfirmed') {
          if (now.runs !== 'new' || now.slotState !== 'pending-verify') mismatch('new-unconfirmed');
        } else if (said?.runs === 'new-confirmed') {
          if (now.runs !== 'new' || now.slotState !== 'valid') mismatch('new-confirmed');
        } else if (said?.runs === 'unknown') {
          // Allowed where the client cannot know: after a restart, a CONFIRM whose answer never came,
          // or a call that could not read the device at all (an earlier call may have left anything).
          const unread = /Nothing was sent in this call, and what the device runs could not be read/.test(error.message);
          // A cancel may end the wait for CONFIRM's answer before it reaches the client, even if it was on air.
          const cancelledConfirm = error.code === 'CANCELLED' && call.confirmWritten;
          if (!call.restart && !call.booted && !call.confirmOpen && !unread && !cancelledConfirm) {
            mismatch('unknown, with no restart, no CONFIRM left unanswered or cancelled, and OTA Info read during the call');
          }
        }
      }

      // Power off and on: the device boots the old image or the new one.
      if (result || rnd() < options.bootCheck || attempt === RETRIES) {
        await holder?.end();
        await device.powerCycle();
        const after = await whatRuns(device, images);
        if (after.runs !== 'old' && after.runs !== 'new') violate(`after a power cycle the device boots ${after.runs} (slot ${after.slotState})`);
        else if (after.slotState !== 'valid' && after.slotState !== 'pending-verify') violate(`after a power cycle the running slot is ${after.slotState}`);
        if (now.runs === 'new' && now.slotState === 'valid' && after.runs !== 'new') violate(`the confirmed new image did not survive a power cycle (boots ${after.runs})`);
      }

      if (result) {
        report.successAfter = attempt;
        break;
      }
      report.finalCode = record.code;
    }

    if (report.successAfter === undefined && !PERSISTENT.has(plan.kind) && !report.violations.some((v) => /hung/.test(v.message))) {
      const last = report.calls[report.calls.length - 1];
      violate(`no success after ${RETRIES} retries: ${report.calls.map((c) => c.code ?? 'ok').join(', ')}; the last: ${last?.message ?? '?'}`);
    }
    return report;
  } catch (err) {
    violate(`the harness failed: ${err instanceof Error ? err.stack : String(err)}`);
    return report;
  } finally {
    for (const off of cleanups) off();
    await holder?.end().catch(() => undefined);
    holder?.dispose();
    await radio.stopAll();
  }
}

// --- a run ---------------------------------------------------------------------------

export interface RunOptions {
  seed: number;
  sequences: number;
  concurrency: number;
  /** Run only this sequence seed. */
  only?: number;
  bootCheck?: number;
  onSequence?: (report: SequenceReport, done: number, total: number) => void;
}

function activeTimers(): number {
  return process.getActiveResourcesInfo().filter((r) => r === 'Timeout').length;
}

function collectGarbage(): boolean {
  const gc = (globalThis as { gc?: () => void }).gc;
  if (!gc) return false;
  gc();
  gc();
  return true;
}

/** The sequence seeds of a run: its seed's PRNG, in order. */
export function sequenceSeeds(seed: number, count: number): number[] {
  const rnd = mulberry32(seed);
  return Array.from({ length: count }, () => Math.floor(rnd() * 2 ** 32) >>> 0);
}

export async function runRandomFaults(options: RunOptions): Promise<RunReport> {
  const started = Date.now();
  const unhandledRejections: string[] = [];
  const warnings: string[] = [];
  const onUnhandled = (reason: unknown) => unhandledRejections.push(reason instanceof Error ? (reason.stack ?? reason.message) : String(reason));
  const onWarning = (w: Error) => warnings.push(`${w.name}: ${w.message}`);
  process.on('unhandledRejection', onUnhandled);
  process.on('warning', onWarning);
  try {
    const seeds = options.only !== undefined ? [options.only >>> 0] : sequenceSeeds(options.seed, options.sequences);
    const gc = collectGarbage();
    const heapBefore = process.memoryUsage().heapUsed;
    const timersBefore = activeTimers();
    const sequences: SequenceReport[] = new Array(seeds.length);
    let next = 0;
    let done = 0;
    await Promise.all(
      Array.from({ length: Math.min(options.concurrency, seeds.length) }, async () => {
        while (next < seeds.length) {
          const i = next++;
          sequences[i] = await runSequence(seeds[i], { bootCheck: options.bootCheck ?? 0.5 });
          options.onSequence?.(sequences[i], ++done, seeds.length);
        }
      }),
    );
    await settle();
    const timersAfter = activeTimers();
    collectGarbage();
    const heapAfter = process.memoryUsage().heapUsed;
    return {
      seed: options.seed,
      sequences,
      violations: sequences.flatMap((s) => s.violations),
      unhandledRejections,
      warnings,
      timersBefore,
      timersAfter,
      heapBefore,
      heapAfter,
      gc,
      ms: Date.now() - started,
    };
  } finally {
    process.off('unhandledRejection', onUnhandled);
    process.off('warning', onWarning);
  }
}

// --- reporting -----------------------------------------------------------------------

const pct = (n: number, of: number) => (of ? `${((n * 100) / of).toFixed(1)} %` : '-');

/** Success within 0, 1, 2 and 3 retries per fault kind, and the codes of the failures left. */
export function table(report: RunReport): string {
  const lines: string[] = [];
  const head = `${'fault kind'.padEnd(20)} ${'updates'.padStart(7)} ${'calls'.padStart(6)} ${'fired'.padStart(6)} ${'ok+0'.padStart(8)} ${'ok<=1'.padStart(8)} ${'ok<=2'.padStart(8)} ${'ok<=3'.padStart(8)}  failed in the end (codes)`;
  lines.push(head, '-'.repeat(head.length));
  const rows: Array<Kind | 'all'> = [...KINDS, 'all'];
  for (const kind of rows) {
    const seqs = report.sequences.filter((s) => s && (kind === 'all' || s.kind === kind));
    if (!seqs.length) continue;
    const within = (r: number) => seqs.filter((s) => s.successAfter !== undefined && s.successAfter <= r).length;
    const calls = seqs.reduce((n, s) => n + s.calls.length, 0);
    const fired = seqs.filter((s) => s.firingsFired > 0).length;
    const codes = new Map<string, number>();
    for (const s of seqs.filter((x) => x.successAfter === undefined)) codes.set(s.finalCode ?? '?', (codes.get(s.finalCode ?? '?') ?? 0) + 1);
    lines.push(
      `${kind.padEnd(20)} ${String(seqs.length).padStart(7)} ${String(calls).padStart(6)} ${String(fired).padStart(6)} ${pct(within(0), seqs.length).padStart(8)} ${pct(within(1), seqs.length).padStart(8)} ${pct(within(2), seqs.length).padStart(8)} ${pct(within(3), seqs.length).padStart(8)}  ${[...codes].map(([c, n]) => `${c} ${n}`).join(', ')}`,
    );
  }
  return lines.join('\n');
}

/** The failure codes of all calls, and what err.device said with them. */
export function codeSummary(report: RunReport): string {
  const counts = new Map<string, number>();
  for (const s of report.sequences) {
    for (const c of s?.calls ?? []) {
      if (c.ok) continue;
      const key = `${c.code} / ${c.device?.runs ?? 'no err.device'}`;
      counts.set(key, (counts.get(key) ?? 0) + 1);
    }
  }
  return [...counts]
    .sort((a, b) => b[1] - a[1])
    .map(([k, n]) => `${String(n).padStart(6)}  ${k}`)
    .join('\n');
}

export function violationSummary(report: RunReport, limit = 40): string {
  const byMessage = new Map<string, Violation[]>();
  for (const v of report.violations) {
    const key = `${v.kind}: ${v.message.replace(/\d+(\.\d+)*/g, 'N').slice(0, 120)}`;
    byMessage.set(key, [...(byMessage.get(key) ?? []), v]);
  }
  const lines = [`invariant violations: ${report.violations.length} (${byMessage.size} kinds)`];
  for (const [key, vs] of [...byMessage].sort((a, b) => b[1].length - a[1].length).slice(0, limit)) {
    lines.push(`  ${vs.length} x ${key}`);
    for (const v of vs.slice(0, 3)) lines.push(`      seed ${v.seed} call ${v.attempt}: ${v.plan}\n        ${v.message}`);
  }
  return lines.join('\n');
}

export function envOptions(defaults: { sequences: number; concurrency: number; seed?: number }): RunOptions {
  const env = process.env;
  const num = (v: string | undefined) => (v === undefined || v === '' ? undefined : Number(v));
  const seed = num(env.RANDOM_FAULTS_SEED) ?? defaults.seed ?? Math.floor(Math.random() * 2 ** 32);
  return {
    seed: seed >>> 0,
    sequences: num(env.RANDOM_FAULTS_SEQUENCES) ?? defaults.sequences,
    concurrency: num(env.RANDOM_FAULTS_CONCURRENCY) ?? defaults.concurrency,
    only: num(env.RANDOM_FAULTS_ONLY),
    bootCheck: num(env.RANDOM_FAULTS_BOOT_CHECK) ?? 0.5,
  };
}

async function main(): Promise<void> {
  const options = envOptions({ sequences: 2000, concurrency: 4 });
  console.log(
    `random faults: seed ${options.seed}, ${options.only !== undefined ? `only sequence ${options.only}` : `${options.sequences} updates`}, ${options.concurrency} devices at once`,
  );
  let calls = 0;
  const report = await runRandomFaults({
    ...options,
    onSequence: (s, done, total) => {
      calls += s.calls.length;
      for (const v of s.violations) console.log(`  VIOLATION seed ${v.seed} call ${v.attempt}: ${v.message} (${v.plan})`);
      if (done % 100 === 0 || done === total) console.log(`  ${done}/${total} updates, ${calls} calls`);
    },
  });
  console.log(`\n${table(report)}\n`);
  console.log(`failed calls by code / err.device:\n${codeSummary(report)}\n`);
  console.log(violationSummary(report));
  console.log(`unhandled rejections: ${report.unhandledRejections.length}`);
  for (const r of report.unhandledRejections.slice(0, 5)) console.log(`  ${r.split('\n')[0]}`);
  console.log(`process warnings: ${report.warnings.length}`);
  for (const w of [...new Set(report.warnings)].slice(0, 5)) console.log(`  ${w}`);
  console.log(`timers: ${report.timersBefore} before, ${report.timersAfter} after`);
  console.log(
    `heap: ${(report.heapBefore / 1048576).toFixed(1)} MB before, ${(report.heapAfter / 1048576).toFixed(1)} MB after${report.gc ? ' (after gc)' : ' (no gc: run with --expose-gc)'}`,
  );
  console.log(`${calls} calls in ${(report.ms / 1000).toFixed(1)} s; seed ${options.seed}`);
}

if (require.main === module) {
  main().catch((err: unknown) => {
    console.error(err);
    process.exit(1);
  });
}
