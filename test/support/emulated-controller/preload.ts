/**
 * `node --require <this file>`: noble (and bleno) in that process reach
 * btvirt's emulated controllers instead of the kernel's Bluetooth sockets.
 * Everything else runs as for a user, from the system's Bluetooth path.
 */
import { installEmulatedHciTransport } from './hci-transport';

installEmulatedHciTransport();
