/**
 * The parts of noble's API the client uses, typed structurally so that any
 * noble instance works: @abandonware/noble's default one, or one built with
 * `with-bindings` on other bindings (the virtual ESP32's, a web socket's, ...).
 */
import type { EventEmitter } from 'node:events';

export type Callback<T = void> = (error: Error | string | null | undefined, value?: T) => void;

export interface NobleCharacteristic extends EventEmitter {
  uuid: string;
  properties: string[];
  read(callback: Callback<Buffer>): void;
  write(data: Buffer, withoutResponse: boolean, callback?: Callback): void;
  subscribe(callback: Callback): void;
  unsubscribe(callback: Callback): void;
}

export interface NobleService extends EventEmitter {
  uuid: string;
  discoverCharacteristics(uuids: string[], callback: Callback<NobleCharacteristic[]>): void;
}

/**
 * LE Create Connection parameters in HCI units (1.25 ms intervals, 10 ms
 * timeout): noble's HCI bindings put them in the command
 * (hci-socket/hci.js, createLeConn); other bindings ignore them.
 */
export interface NobleConnectParameters {
  minInterval?: number;
  maxInterval?: number;
  latency?: number;
  timeout?: number;
}

export interface NoblePeripheral extends EventEmitter {
  id: string;
  address: string;
  rssi: number;
  mtu: number | null;
  state: string;
  advertisement: { localName?: string; serviceUuids?: string[] };
  connect(callback: Callback): void;
  connect(parameters: NobleConnectParameters, callback: Callback): void;
  disconnect(callback?: Callback): void;
  /** Without a callback, the answer comes as the 'servicesDiscover' event (noble emits it on the peripheral). */
  discoverServices(uuids: string[], callback?: Callback<NobleService[]>): void;
}

export interface NobleLike extends EventEmitter {
  readonly state: string;
  startScanning(serviceUuids: string[], allowDuplicates: boolean, callback?: Callback): void;
  stopScanning(callback?: () => void): void;
}
