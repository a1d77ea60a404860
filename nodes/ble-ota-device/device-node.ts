/**
 * What other nodes see of a ble-ota-device config node.
 */
import type { BleOtaClient, Timeouts } from '../../lib/client/ota-client';
import type { Target } from '../../lib/client/scanner';
import type { BluetoothUnavailableError } from '../../lib/errors';
import type { Adapter, Backend } from '../shared/adapter';
import type { Node, NodeDef } from '../shared/red';

export type { Backend };

export interface DeviceNodeDef extends NodeDef {
  device: string;
  backend: Backend;
  scanTimeout: string | number;
  operationTimeout: string | number;
  /** Update devices that cannot prove they hold their key, although a fleet secret is set. */
  allowUnauthenticated?: boolean;
  /** The device id (factory MAC) the device must prove; empty: any device of the fleet. */
  deviceId?: string;
  /** Virtual radio only: the virtual devices in range, with options (parseVirtualDevices). */
  virtualDevices?: string;
}

export interface DeviceNode extends Node {
  backend: Backend;
  /** The Device field, trimmed; empty when it holds a fleet secret's form (never shown: prepare refuses). */
  device: string;
  /** The radio this device is reached through, shared with every node that uses it. */
  adapter: Adapter;
  timeouts: Partial<Timeouts>;
  /**
   * The owner's fleet secret, from which each device's key derives (a
   * credential: kept out of the flow file, never logged nor sent in
   * messages), or undefined when none is set.
   */
  secret: string | undefined;
  /** With a secret: still update devices that cannot authenticate. */
  allowUnauthenticated: boolean;
  /** The device id the device must prove, or undefined for any device of the fleet. */
  deviceId: string | undefined;
  /** Why this backend cannot be used right now, if it cannot. */
  problem(): BluetoothUnavailableError | undefined;
  /** A client for this device's backend, and the target to pass it. */
  prepare(deviceOverride?: string): Promise<{ client: BleOtaClient; target: Target }>;
  /**
   * What to add to DEVICE_NOT_FOUND for this device (or the one a message
   * named): on the virtual radio, that a name not declared in range never
   * exists; undefined where nothing more is known.
   */
  notFoundHint(deviceOverride?: string): string | undefined;
}
