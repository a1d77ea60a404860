/**
 * What a node that uses a ble-ota-device says at deploy when it cannot
 * work: no device node selected, or a radio this machine cannot use (no
 * Bluetooth adapter, adapter off). Said once, at deploy, rather than as a
 * failure at the first message.
 */
import type { DeviceNode } from '../ble-ota-device/device-node';
import type { Node, NodeStatus } from './red';

/**
 * Sets the node's status (a red ring, or none) and warns with the radio's
 * problem. `noDevice`: the node's text for a missing device node, or
 * undefined where the device node is optional. setStatus: the node's own
 * (one that filters repeats), else node.status. Returns whether the node
 * can be used as configured.
 */
export function checkConfigAtDeploy(
  node: Node,
  config: DeviceNode | null,
  noDevice: string | undefined,
  setStatus: (status: NodeStatus) => void = (status) => node.status(status),
): boolean {
  if (!config) {
    if (noDevice === undefined) return true;
    setStatus({ fill: 'red', shape: 'ring', text: noDevice });
    return false;
  }
  const problem = config.problem();
  if (!problem) return true;
  setStatus({ fill: 'red', shape: 'ring', text: problem.reason });
  node.warn(problem.message);
  return false;
}
