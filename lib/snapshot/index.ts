/**
 * The snapshot lifecycle: prepare, snapshot, status, watch, drop.
 */
export { prepare, release, openOrigin, listOrigins, withSnapshot, type PrepareOptions } from './open';
export { Origin, type SnapshotOptions, type OriginStatus } from './origin';
export { Snapshot, type SnapshotStatusReport, type SnapshotState, type SnapshotMount, type WatchOptions, type SnapshotInfo } from './snapshot';
export { type LifecycleOptions } from './context';
export { DEFAULT_LOCK_DIR, DEFAULT_LOCK_TIMEOUT_MS, type LockOptions } from '../system/lock';
export { UUID_PREFIX, parseTag, type Tag, type DeviceRole } from './tags';
export { detectFilesystem, type FilesystemType } from './filesystem';
export { recover, type RecoveryAction, type RecoveryActionKind, type RecoverOptions } from './recover';
export type { Step, SnapshotStep, DropStep } from './steps';
