/** Delta updates (docs/DELTA.md): the patch format, its computation and a reference applier. */
export { computePatch } from './diff';
export { applyPatch, PatchApplier } from './apply';
export type { ApplierOptions, Emit, ReadOld } from './apply';
export { decodeHeader, DELTA_BLOCK, DELTA_HEADER_SIZE, DeltaPatchError } from './format';
export type { DeltaFault, DeltaHeader } from './format';
