/**
 * The snapshot lifecycle: prepare, snapshot, status, watch, drop.
 */
export { prepare, release, openOrigin, listOrigins, withSnapshot, type PrepareOptions } from './open';
export { Origin, type SnapshotOptions, type OriginStatus } from './origin';
export { snapshotGroup, type GroupMember, type GroupSnapshotOptions } from './group';
export { FreezeHooks, DEFAULT_HOOK_DIR, DEFAULT_HOOK_TIMEOUT_MS, type FreezeHookOptions, type HookCallback, type HookContext, type HookPhase } from '../system/hooks';
export { Snapshot, type SnapshotStatusReport, type SnapshotState, type StateWithUsage, type CowUsage, type NoCowUsage, type SnapshotMount, type WatchOptions, type SnapshotInfo, type DropOptions, type SnapshotOwner } from './snapshot';
export { type CowFileOptions } from './cow-file';
export { extentsOf, type ChangedExtent } from './changes';
export { type StoreException } from '../targets/exception-store';
export { updateImage, writeDelta, type UpdateOptions, type UpdateResult, type DeltaResult, type IncrementSnapshotOptions } from './incremental';
export { applyDelta } from './apply';
export { readDelta, DELTA_MAGIC, type DeltaHeader } from './delta';
export { readImageIdentity, identityPath, type ImageIdentity } from './image-identity';
export { guardCowFile, hostSpace, DEFAULT_MIN_FREE_PERCENT, DEFAULT_AUTOEXTEND_STEP_PERCENT, type CowFileGuardOptions, type HostSpace } from './cow-guard';
export { monitor, type MonitorOptions, type MonitorEvent } from './monitor';
export { type LifecycleOptions } from './context';
export { DEFAULT_LOCK_DIR, DEFAULT_LOCK_TIMEOUT_MS, type LockOptions } from '../system/lock';
export { UUID_PREFIX, parseTag, type Tag, type DeviceRole } from './tags';
export { detectFilesystem, type FilesystemType } from './filesystem';
export { recover, type RecoveryAction, type RecoveryActionKind, type RecoverOptions } from './recover';
export type { Step, SnapshotStep, DropStep, RollbackStep, DetachStep, UpdateStep } from './steps';
export { type RollbackOptions, type MergeProgress } from './rollback';
export { type RollbackAtBoot } from './rollback-at-boot';
export { type MergeState } from './merge';
export { type DetachReport, type DetachOptions } from './detach';
export { type LabelState } from '../targets/cow-label';
export { type AttachResult } from './reattach';
