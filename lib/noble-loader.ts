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

export function loadSystemNoble(): NobleLike {
  if (!cached) {
    try {
      // eslint-disable-next-line @typescript-eslint/no-require-imports
      cached = { noble: require('@abandonware/noble') as NobleLike };
    } catch (err) {
      cached = { error: explainLoadError(err) };
    }
  }
  if (cached.error) throw cached.error;
  return cached.noble as NobleLike;
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

function explainLoadError(err: unknown): BluetoothUnavailableError {
  const code = (err as NodeJS.ErrnoException)?.code ?? '';
  const detail = err instanceof Error ? err.message : String(err);
  let message: string;
  let reason = 'Bluetooth unavailable';
  switch (code) {
    case 'EAFNOSUPPORT':
      reason = 'no Bluetooth support';
      message =
        'Bluetooth is unavailable: this system has no Bluetooth sockets (EAFNOSUPPORT). Use a machine with a Bluetooth adapter and kernel support, or choose the virtual device backend to try flows';
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
