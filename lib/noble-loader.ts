/**
 * Loads the system's noble (a real Bluetooth adapter) on first use.
 *
 * `require('@abandonware/noble')` opens an HCI socket at once and throws
 * where that is impossible (no kernel Bluetooth support: EAFNOSUPPORT; no
 * permission: EPERM; native module not built). Loading it lazily keeps such a
 * machine's Node-RED running; the error says what to do.
 */
import { BluetoothUnavailableError } from './errors';
import type { NobleLike } from './client/noble-types';

let cached: { noble?: NobleLike; error?: BluetoothUnavailableError } | undefined;
let released = false;

/**
 * The parts of noble's HCI bindings (`lib/hci-socket`) this module reaches
 * into, where noble has no API for what a library must do: open the adapter
 * now, let the process exit, take the controller's buffer count.
 */
interface NobleHciInternals {
  _bindings?: {
    onSigIntBinded?: () => void;
    _hci?: {
      _userChannel?: unknown;
      _aclBuffers?: unknown;
      readLeBufferSize?: () => void;
      pollIsDevUp?: () => void;
      _socket?: { start?: () => void; stop?: () => void };
    };
  };
}

export function loadSystemNoble(): NobleLike {
  if (!cached) {
    try {
      // eslint-disable-next-line @typescript-eslint/no-require-imports
      const noble = require('@abandonware/noble') as NobleLike;
      openAdapter(noble);
      cached = { noble };
    } catch (err) {
      // Not kept: the adapter may come (a dongle plugged in, a transport installed) later.
      throw explainLoadError(err);
    }
  }
  if (cached.error) throw cached.error;
  if (released) reopen(cached.noble as NobleLike);
  return cached.noble as NobleLike;
}

/**
 * Lets a process that used the system's Bluetooth exit by itself: noble's
 * HCI socket and its once-a-second adapter check otherwise keep the event
 * loop alive for ever. The next loadSystemNoble() opens it again.
 */
export function releaseSystemBluetooth(): void {
  if (!cached?.noble || released) return;
  const hci = (cached.noble as NobleLike & NobleHciInternals)._bindings?._hci;
  if (!hci) return;
  cached.noble.stopScanning();
  hci.pollIsDevUp = () => undefined; // the check already scheduled runs once more, and stops
  hci._socket?.stop?.();
  released = true;
}

function reopen(noble: NobleLike): void {
  const hci = (noble as NobleLike & NobleHciInternals)._bindings?._hci;
  released = false;
  if (!hci) return;
  Reflect.deleteProperty(hci, 'pollIsDevUp'); // noble's own again
  hci._socket?.start?.();
  hci.pollIsDevUp?.();
}

/**
 * Opens the adapter now (noble would on first use), so that a missing or
 * forbidden adapter is reported here, and sets right two things of noble's:
 *
 * - Its SIGINT handler exits the process (code 1) whenever it is the last
 *   one registered, which it is, having come after the application's: Ctrl-C
 *   skipped the CLI's cancel and Node-RED's orderly stop. Moved first, it
 *   exits only a process with no handler of its own.
 * - In HCI user-channel mode (HCI_CHANNEL_USER) it resets the controller and
 *   never asks for the controller's LE buffers, so it never sends ACL data
 *   and every connection's first GATT request times out. Asked here.
 */
function openAdapter(noble: NobleLike): void {
  const before = new Set(process.listeners('SIGINT'));
  void noble.state; // noble's lazy init runs on first read
  for (const listener of process.listeners('SIGINT')) {
    if (before.has(listener)) continue;
    process.off('SIGINT', listener);
    process.prependListener('SIGINT', listener);
  }
  const hci = (noble as NobleLike & NobleHciInternals)._bindings?._hci;
  if (hci?._userChannel && typeof hci.readLeBufferSize === 'function') {
    const askBuffers = (state: string) => {
      if (state !== 'poweredOn') return;
      noble.off('stateChange', askBuffers);
      if (hci._aclBuffers === undefined) hci.readLeBufferSize?.();
    };
    noble.on('stateChange', askBuffers);
  }
}

/** Why the system's Bluetooth cannot be used, or undefined when it can be loaded. */
export function systemBluetoothProblem(): BluetoothUnavailableError | undefined {
  try {
    loadSystemNoble();
    return undefined;
  } catch (err) {
    return err as BluetoothUnavailableError;
  }
}

/** What loading noble failed with, as the error a user reads: the cause and what to do. Exported for the tests. */
export function explainLoadError(err: unknown): BluetoothUnavailableError {
  const code = (err as NodeJS.ErrnoException)?.code ?? '';
  const detail = err instanceof Error ? err.message : String(err);
  let message: string;
  let reason = 'Bluetooth unavailable';
  switch (code) {
    case 'EAFNOSUPPORT':
      reason = 'no Bluetooth support';
      message =
        'Bluetooth is unavailable: this system has no Bluetooth sockets (EAFNOSUPPORT). Use a machine with a Bluetooth adapter and kernel support; to try without one, use a virtual ESP32 (the device node\'s Radio "Virtual ESP32", the command line\'s --virtual, or VirtualRadio in code)';
      break;
    case 'EPERM':
    case 'EACCES':
      reason = 'no Bluetooth permission';
      message = `Bluetooth is unavailable: no permission to open the adapter (${code}). Give Node.js the capabilities: sudo setcap cap_net_raw,cap_net_admin+eip $(eval readlink -f $(which node))`;
      break;
    case 'ENODEV':
      reason = 'no Bluetooth adapter';
      message = 'Bluetooth is unavailable: no Bluetooth adapter found (ENODEV). Plug one in, or set NOBLE_HCI_DEVICE_ID to the adapter to use';
      break;
    case 'MODULE_NOT_FOUND':
      reason = 'noble not installed';
      message = `Bluetooth is unavailable: noble or its native module is not installed (${detail.split('\n')[0]}). Reinstall the package with install scripts allowed (npm rebuild @abandonware/noble)`;
      break;
    default:
      message = `Bluetooth is unavailable: loading noble failed: ${detail}`;
  }
  return new BluetoothUnavailableError(reason, message, { cause: err });
}
