/**
 * Typed builders and parsers for the device-mapper targets dmsnap uses.
 */
export { linear, parseLinearParams, type LinearOptions, type LinearParams } from './linear';
export {
  snapshot,
  parseSnapshotParams,
  parseSnapshotStatus,
  MIN_CHUNK_SECTORS,
  isChunkSize,
  checkChunkSectors,
  MAX_CHUNK_SECTORS,
  persistentCowSectors,
  EXCEPTION_BYTES,
  type SnapshotTargetOptions,
  type SnapshotParams,
  type SnapshotStatus,
  type SnapshotPersistence,
  type SnapshotFeature,
} from './snapshot';
export { snapshotOrigin, parseSnapshotOriginParams, type SnapshotOriginOptions, type SnapshotOriginParams } from './snapshot-origin';
export { snapshotMerge, parseSnapshotMergeParams, parseSnapshotMergeStatus } from './snapshot-merge';
export { errorTarget } from './error';
export { zeroTarget } from './zero';
export { maskTableKeys, maskTargetKeys, tableCarriesKeys, targetCarriesKeys, KEYED_TARGET_TYPES } from './keys';
