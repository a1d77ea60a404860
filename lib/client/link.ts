/**
 * One connection to a peripheral, where every GATT operation has a timeout
 * and fails at once when the link drops or the caller cancels.
 *
 * noble's callbacks never report failure for most operations (a write the
 * device refuses simply never calls back), so every wait here is bounded.
 */
import { CancelledError, DeviceError, GattTimeoutError } from '../errors';
import type { Callback, NobleCharacteristic, NobleConnectParameters, NoblePeripheral, NobleService } from './noble-types';

interface Waiter {
  reject(err: Error): void;
}

/** noble's Peripheral has cancelConnect (LE Create Connection Cancel on HCI); other bindings' may not. */
type Cancellable = NoblePeripheral & { cancelConnect?: () => void };

/**
 * Per peripheral, the guard a closed Link left on a connection attempt it
 * gave up on (see Link.abandonConnect); the next Link on that peripheral
 * removes it, as the connection it makes is that Link's own.
 */
const abandonedConnects = new WeakMap<NoblePeripheral, () => void>();

export class Link {
  private readonly waiters = new Set<Waiter>();
  private lostError: Error | undefined;
  /** This link's connection attempt has not been answered yet (noble's state may say otherwise: see connect()). */
  private connectPending = false;
  private readonly onDisconnect = (reason?: number) => {
    const hex = typeof reason === 'number' ? ` (reason 0x${reason.toString(16).padStart(2, '0')})` : '';
    this.fail(new DeviceError('DISCONNECTED', `the connection to ${this.describe()} was lost${hex}`));
  };
  private readonly onAbort = () => this.fail(new CancelledError());

  constructor(
    readonly peripheral: NoblePeripheral,
    private readonly gattTimeoutMs: number,
    private readonly signal?: AbortSignal,
  ) {
    abandonedConnects.get(peripheral)?.();
    peripheral.on('disconnect', this.onDisconnect);
    signal?.addEventListener('abort', this.onAbort);
    if (signal?.aborted) this.lostError = new CancelledError();
  }

  describe(): string {
    const name = this.peripheral.advertisement?.localName;
    return name ? `${name} (${this.peripheral.address})` : this.peripheral.address;
  }

  get connected(): boolean {
    return !this.lostError && this.peripheral.state === 'connected';
  }

  /** Runs a noble callback-style operation with the link's guards. */
  run<T>(operation: string, start: (cb: Callback<T>) => void, timeoutMs = this.gattTimeoutMs): Promise<T> {
    return this.wait<T>(operation, timeoutMs, (resolve, reject) => start((err, value) => (err ? reject(toError(err, operation)) : resolve(value as T))));
  }

  /**
   * Waits for something that `subscribe` reports, bounded by a timeout, the
   * link and the caller's signal. `subscribe` returns its cleanup.
   */
  wait<T>(operation: string, timeoutMs: number, subscribe: (resolve: (value: T) => void, reject: (err: Error) => void) => (() => void) | void): Promise<T> {
    if (this.lostError) return Promise.reject(this.lostError);
    return new Promise<T>((resolve, reject) => {
      // eslint-disable-next-line prefer-const -- finish() reads it, and subscribe may call finish() before it returns the cleanup
      let cleanup: (() => void) | void;
      const waiter: Waiter = {
        reject: (err) => finish(() => reject(err)),
      };
      const timer = setTimeout(() => waiter.reject(new GattTimeoutError(operation, timeoutMs)), timeoutMs);
      const finish = (settle: () => void) => {
        if (!this.waiters.delete(waiter)) return;
        clearTimeout(timer);
        if (cleanup) cleanup();
        settle();
      };
      this.waiters.add(waiter);
      cleanup = subscribe(
        (value) => finish(() => resolve(value)),
        (err) => waiter.reject(err),
      );
      // Settled synchronously inside subscribe: clean up now.
      if (!this.waiters.has(waiter) && cleanup) cleanup();
    });
  }

  /**
   * Makes the connection. Until noble answers, the attempt is this link's,
   * whatever noble's state says meanwhile: a disconnect event that arrives
   * during it (a late one of the previous link, or one sent twice) sets the
   * state to 'disconnected' while the controller goes on connecting, and
   * close() must end the attempt all the same.
   */
  connect(parameters: NobleConnectParameters, timeoutMs: number): Promise<void> {
    return this.run<void>(
      'connecting',
      (cb) => {
        // Only an attempt noble was asked for (a link already lost or cancelled asks for none).
        this.connectPending = true;
        this.peripheral.connect(parameters, (err) => {
          this.connectPending = false;
          cb(err);
        });
      },
      timeoutMs,
    );
  }

  /**
   * noble keeps a callback's listener on the peripheral (one object per
   * device, for the process's lifetime) until an answer comes, which never
   * does on a link that dropped: listen ourselves, and stop when we give up.
   */
  discoverServices(uuids: string[]): Promise<NobleService[]> {
    return this.wait<NobleService[]>('service discovery', this.gattTimeoutMs, (resolve) => {
      this.peripheral.once('servicesDiscover', resolve);
      this.peripheral.discoverServices(uuids);
      return () => this.peripheral.off('servicesDiscover', resolve);
    });
  }

  discoverCharacteristics(service: NobleService): Promise<NobleCharacteristic[]> {
    return this.run('characteristic discovery', (cb) => service.discoverCharacteristics([], cb));
  }

  read(chr: NobleCharacteristic, what: string): Promise<Buffer> {
    return this.run(`reading ${what}`, (cb) => chr.read(cb));
  }

  write(chr: NobleCharacteristic, data: Buffer, what: string, withoutResponse = false): Promise<void> {
    return this.run(`writing ${what}`, (cb) => chr.write(data, withoutResponse, cb));
  }

  subscribe(chr: NobleCharacteristic, what: string): Promise<void> {
    return this.run(`subscribing to ${what}`, (cb) => chr.subscribe(cb));
  }

  /**
   * Drops the link; resolves when noble reports it, or after a timeout. A
   * connection still being made (closed on a timeout, a cancel, an error) is
   * cancelled, and dropped at once should it be made all the same.
   */
  async close(): Promise<void> {
    this.signal?.removeEventListener('abort', this.onAbort);
    if (this.peripheral.state === 'connecting' || this.connectPending) {
      // What still waits for the connection fails with the link's error, not noble's "connection canceled!".
      this.fail(this.lostError ?? this.closedError());
      await this.abandonConnect();
    } else if (this.peripheral.state === 'connected') {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, this.gattTimeoutMs);
        this.peripheral.disconnect(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
    this.peripheral.off('disconnect', this.onDisconnect);
    if (!this.lostError) this.lostError = this.closedError();
    this.rejectAll(this.lostError);
  }

  /**
   * Ends a connection attempt under way. noble's HCI bindings cannot
   * disconnect it (there is no handle yet: their Disconnect would name
   * handle 0, another device's link or none), and the controller goes on
   * until the device answers, then holds a connection nobody owns: the
   * device stops advertising. So: cancel it (LE Create Connection Cancel),
   * and should it be made anyway (the cancel crossed the Connection
   * Complete, the bindings cannot cancel, or noble no longer calls the
   * peripheral connecting and so sends no cancel), disconnect it at once.
   * Resolves when the attempt has ended, or after the GATT timeout; the
   * guard stays until the attempt ends or another Link takes the peripheral.
   */
  private abandonConnect(): Promise<void> {
    const p = this.peripheral as Cancellable;
    return new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, this.gattTimeoutMs);
      const done = () => {
        clearTimeout(timer);
        resolve();
      };
      const release = () => {
        p.off('connect', onConnect);
        if (abandonedConnects.get(p) === release) abandonedConnects.delete(p);
      };
      const onConnect = () => {
        // noble's cancelConnect reports 'connection canceled!' itself, before
        // the controller answers: the peripheral is still connecting then.
        if (p.state === 'connecting') return;
        release();
        if (p.state === 'connected') p.disconnect(() => done());
        else done();
      };
      p.on('connect', onConnect);
      abandonedConnects.set(p, release);
      p.cancelConnect?.();
    });
  }

  private closedError(): Error {
    return new DeviceError('DISCONNECTED', `the connection to ${this.describe()} was closed`);
  }

  /**
   * Resolves when the device drops the link (e.g. restarts): true, or false
   * after a timeout. Cancelling the caller's signal ends the wait at once
   * (CancelledError).
   */
  awaitDisconnect(timeoutMs: number): Promise<boolean> {
    if (this.peripheral.state !== 'connected') return Promise.resolve(true);
    if (this.signal?.aborted) return Promise.reject(new CancelledError());
    return new Promise((resolve, reject) => {
      const end = (settle: () => void) => {
        clearTimeout(timer);
        this.peripheral.off('disconnect', dropped);
        this.signal?.removeEventListener('abort', cancelled);
        settle();
      };
      const timer = setTimeout(() => end(() => resolve(false)), timeoutMs);
      const dropped = () => end(() => resolve(true));
      const cancelled = () => end(() => reject(new CancelledError()));
      this.peripheral.once('disconnect', dropped);
      this.signal?.addEventListener('abort', cancelled, { once: true });
    });
  }

  /** Marks the link lost (an error the device reported) and rejects every wait. */
  fail(err: Error): void {
    if (!this.lostError) this.lostError = err;
    this.rejectAll(err);
  }

  /** Stops treating a disconnect as an error (the device is expected to restart). */
  expectDisconnect(): void {
    this.peripheral.off('disconnect', this.onDisconnect);
  }

  /** Throws the error that ended the link, if any. */
  check(): void {
    if (this.lostError) throw this.lostError;
  }

  private rejectAll(err: Error): void {
    for (const w of [...this.waiters]) w.reject(err);
  }
}

function toError(err: Error | string, operation: string): Error {
  const message = typeof err === 'string' ? err : err.message;
  return new DeviceError('CONNECT_FAILED', `${operation} failed: ${message}`);
}
