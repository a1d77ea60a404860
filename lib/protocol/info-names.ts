/**
 * OTA Info's numbers as names a user reads or a flow tests (docs/PROTOCOL.md,
 * OTA Info): the CLI and ble-ota-status say the same words.
 */
import { Feature, RunningState, TransferState } from './constants';

export type RunningStateName = 'valid' | 'pending-verify' | 'unknown';
export type TransferStateName = 'idle' | 'receiving' | 'suspended' | 'complete' | 'unknown';
export type FeatureName = 'resume' | 'clientConfirm' | 'seed' | 'deflate' | 'auth' | 'signed' | 'delta';

const FEATURES: Array<[number, FeatureName]> = [
  [Feature.RESUME, 'resume'],
  [Feature.CLIENT_CONFIRM, 'clientConfirm'],
  [Feature.SEED, 'seed'],
  [Feature.DEFLATE, 'deflate'],
  [Feature.AUTH, 'auth'],
  [Feature.SIGNED, 'signed'],
  [Feature.DELTA, 'delta'],
];

const RUNNING: Record<number, RunningStateName> = {
  [RunningState.VALID]: 'valid',
  [RunningState.PENDING_VERIFY]: 'pending-verify',
  [RunningState.UNKNOWN]: 'unknown',
};

const TRANSFER: Record<number, TransferStateName> = {
  [TransferState.IDLE]: 'idle',
  [TransferState.RECEIVING]: 'receiving',
  [TransferState.SUSPENDED]: 'suspended',
  [TransferState.COMPLETE]: 'complete',
};

/** The known feature bits that are set, by name. */
export function featureNames(bits: number): FeatureName[] {
  return FEATURES.filter(([bit]) => (bits & bit) !== 0).map(([, name]) => name);
}

/** Set bits this client does not know (a newer firmware's), as hex. */
export function unknownFeatureBits(bits: number): string[] {
  const known = FEATURES.reduce((all, [bit]) => all | bit, 0);
  const out: string[] = [];
  for (let bit = 1; bit <= 0x8000; bit <<= 1) if (bits & bit & ~known) out.push(`0x${bit.toString(16).padStart(4, '0')}`);
  return out;
}

export function runningStateName(value: number): RunningStateName {
  return RUNNING[value] ?? 'unknown';
}

export function transferStateName(value: number): TransferStateName {
  return TRANSFER[value] ?? 'unknown';
}

/** ESP-IDF's form of a chip revision (major × 100 + minor): v3.1. */
export function chipRevisionName(value: number): string {
  return `v${Math.floor(value / 100)}.${value % 100}`;
}
