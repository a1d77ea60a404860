/**
 * One owner per radio. Every node that uses the system's Bluetooth adapter
 * shares one noble instance, and so do the nodes that use the virtual
 * radio; operations on a radio (a scan, an update's connection) run one at
 * a time, in the order they were asked for, so two nodes never fight over
 * scanning or connecting. The line is bounded: beyond MAX_WAITING waiting
 * operations a new one fails at once (BUSY), so no source of requests can
 * pile up work that delays every update behind it without end.
 */
import { BleOtaClient, Timeouts } from '../../lib/client/ota-client';
import type { NobleLike } from '../../lib/client/noble-types';
import { BleOtaError, CancelledError } from '../../lib/errors';
import { loadSystemNoble } from '../../lib/noble-loader';
import { sharedVirtualRadio } from '../../lib/virtual/virtual-radio';

export type Backend = 'bluetooth' | 'virtual';

/** Operations that may wait for a radio: every upload node's queue of 10 and a few scans fit, a flood does not. */
export const MAX_WAITING = 32;

let busyMessage = (limit: number) => `The radio is busy: ${limit} operations are already waiting for it. Try again when some of them are done.`;

/** The BUSY message in the runtime's language (the device node's locales give it). */
export function localiseAdapterBusy(message: (limit: number) => string): void {
  busyMessage = message;
}

interface Waiter {
  start(): void;
  cancel(): void;
}

export class Adapter {
  private busy = false;
  private readonly waiting: Waiter[] = [];

  constructor(
    readonly backend: Backend,
    private readonly nobleSource: () => NobleLike,
    readonly maxWaiting = MAX_WAITING,
  ) {}

  /** The shared noble instance; throws BluetoothUnavailableError when there is none. */
  get noble(): NobleLike {
    return this.nobleSource();
  }

  client(timeouts?: Partial<Timeouts>): BleOtaClient {
    return new BleOtaClient({ noble: () => this.noble, timeouts });
  }

  /** An operation (a flow's scan or update) holds the radio. */
  get inUse(): boolean {
    return this.busy;
  }

  /** Operations waiting for the radio. */
  get queued(): number {
    return this.waiting.length;
  }

  /**
   * Runs job once the radio is free. Aborting signal while the job waits
   * takes it out of the line (CancelledError); once started, the job itself
   * must watch the signal. With maxWaiting operations already waiting,
   * fails at once with BUSY.
   */
  async run<T>(job: () => Promise<T>, signal?: AbortSignal): Promise<T> {
    if (signal?.aborted) throw new CancelledError();
    if (this.busy && this.waiting.length >= this.maxWaiting) throw new BleOtaError('BUSY', busyMessage(this.maxWaiting));
    if (this.busy) {
      await new Promise<void>((resolve, reject) => {
        const waiter: Waiter = {
          start: () => {
            signal?.removeEventListener('abort', onAbort);
            resolve();
          },
          cancel: () => reject(new CancelledError()),
        };
        const onAbort = () => {
          const i = this.waiting.indexOf(waiter);
          if (i >= 0) this.waiting.splice(i, 1);
          waiter.cancel();
        };
        signal?.addEventListener('abort', onAbort, { once: true });
        this.waiting.push(waiter);
      });
    } else {
      this.busy = true;
    }
    try {
      return await job();
    } finally {
      const next = this.waiting.shift();
      if (next) next.start();
      else this.busy = false;
    }
  }
}

const adapters = new Map<Backend, Adapter>();

/** The process-wide adapter of a backend. */
export function adapterFor(backend: Backend): Adapter {
  let adapter = adapters.get(backend);
  if (!adapter) {
    adapter = backend === 'virtual' ? new Adapter('virtual', () => sharedVirtualRadio().noble) : new Adapter('bluetooth', loadSystemNoble);
    adapters.set(backend, adapter);
  }
  return adapter;
}
