/**
 * When things happen on the virtual radio: when a request reaches a
 * virtual device, and when what the device answered reaches noble.
 * VirtualBindings (bindings.ts) speaks noble's bindings interface and
 * plays the radio's faults; it leaves time to a Scheduler.
 *
 * RealTime, here, is the host's own time: results go to noble as soon as
 * the device gives them, and a device's requests can be held to a slower
 * link's pace (pace(): a device declared `slow`). The benchmark has the
 * other one, virtual time (bench/virtual-time.ts): every result at the
 * moment a modelled link and flash would produce it.
 */
import { boundMs, Preset } from './link-model';
import type { VirtualEsp32 } from './virtual-device';

/** A request to a device, in ATT terms. */
export type RequestKind = 'write' | 'write-cmd' | 'read' | 'subscribe';

/** A request to the device under way. */
export interface PendingRequest {
  /**
   * The device answered (an ATT PDU of responseBytes): respond hands the
   * result to noble (undefined: nothing to hand, e.g. a request lost on air).
   */
  answered(responseBytes: number, respond?: () => void): void;
}

/** A device's time while it is in range. */
export interface DeviceClock {
  /** A connection to the device was made. */
  connected(): void;
  /** Sends a request of attBytes (ATT header included) to the device: send runs when the link has carried it. */
  send(attBytes: number, withResponse: boolean, send: () => void): void;
  /** A request reaches the device now. */
  request(kind: RequestKind, attBytes: number): PendingRequest;
  /** The device notified attBytes: deliver hands it to noble. */
  notification(attBytes: number, deliver: () => void): void;
  /** The device's side of the connection ended: deliver hands noble the disconnect. */
  disconnected(deliver: () => void): void;
  /** Requests go no faster than this preset's link would carry them; undefined: at the scheduler's own pace. */
  pace(preset: Preset | undefined): void;
  /** Removes all that attach() added: listeners on the device, timers. */
  detach(): void;
}

export interface Scheduler {
  /** The clock, in ms: virtual time; 0 in real time. */
  readonly now: number;
  /** The setup being modelled: the bindings answer the device's link requests as its central would (undefined: noble on Linux, an ESP32). */
  readonly preset?: Preset;
  /** The time n request/response round trips of the central's own take. */
  roundTrips(n: number): number;
  /** Runs fn at time t (now at the earliest). */
  at(t: number, fn: () => void): void;
  /** An answer the central's own stack gives (discovery, the MTU exchange): a round trip after `from`. */
  local(fn: () => void, from?: number): void;
  /** A device's answer is under way: nothing is delivered until release() (that answer could come first). */
  hold(): void;
  release(): void;
  /** The device's clock while in range; its detach() removes what this added. */
  attach(device: VirtualEsp32): DeviceClock;
}

/** Answers without timing: the result goes to noble at once. */
const IMMEDIATE: PendingRequest = {
  answered: (_bytes, respond) => respond?.(),
};

/** A device's requests, sent no sooner than a preset's link would carry them. */
class PacedDevice implements DeviceClock {
  private pacing?: {
    msPerByte: number;
    roundTripMs: number;
    /** When (Date.now()) the link has carried all that was sent. */
    freeAt: number;
    queue: Array<{ at: number; fn: () => void }>;
    timer?: NodeJS.Timeout;
  };

  connected(): void {}

  /**
   * A paced request waits for the link: its bytes at the preset's update
   * bound per byte, and a round trip when it has a response.
   */
  send(attBytes: number, withResponse: boolean, send: () => void): void {
    const p = this.pacing;
    if (!p) {
      send();
      return;
    }
    p.freeAt = Math.max(Date.now(), p.freeAt) + attBytes * p.msPerByte + (withResponse ? p.roundTripMs : 0);
    p.queue.push({ at: p.freeAt, fn: send });
    if (!p.timer) p.timer = setTimeout(this.drain, p.queue[0].at - Date.now()).unref();
  }

  private readonly drain = (): void => {
    const p = this.pacing;
    if (!p) return;
    p.timer = undefined;
    while (p.queue.length && p.queue[0].at <= Date.now()) p.queue.shift()!.fn();
    if (p.queue.length) p.timer = setTimeout(this.drain, p.queue[0].at - Date.now()).unref();
  };

  request(): PendingRequest {
    return IMMEDIATE;
  }

  notification(_attBytes: number, deliver: () => void): void {
    deliver();
  }

  disconnected(deliver: () => void): void {
    deliver();
  }

  /** What waits keeps its place under the new pace; without one it goes at once. */
  pace(preset: Preset | undefined): void {
    const old = this.pacing;
    if (!preset) {
      this.detach();
      for (const waiting of old?.queue ?? []) waiting.fn();
      return;
    }
    const sample = 1 << 20;
    this.pacing = {
      msPerByte: boundMs(preset, sample).boundMs / sample,
      roundTripMs: 2 * preset.link.intervalMs,
      freeAt: old?.freeAt ?? 0,
      queue: old?.queue ?? [],
      timer: old?.timer,
    };
  }

  detach(): void {
    clearTimeout(this.pacing?.timer);
    this.pacing = undefined;
  }
}

/** The host's time: results at once, requests paced where pace() asks. */
export class RealTime implements Scheduler {
  readonly now = 0;
  readonly preset = undefined;

  roundTrips(): number {
    return 0;
  }

  at(_t: number, fn: () => void): void {
    fn();
  }

  local(fn: () => void): void {
    setImmediate(fn);
  }

  hold(): void {}
  release(): void {}

  attach(): DeviceClock {
    return new PacedDevice();
  }
}
