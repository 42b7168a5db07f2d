/**
 * dmsnap: consistent block-level snapshots of live Linux filesystems through the
 * kernel's device-mapper, without LVM and without dmsetup.
 */
export {
  DeviceMapper,
  DEFAULT_CONTROL_PATH,
  type DeviceMapperOptions,
  type DriverVersion,
  type DeviceRef,
  type DeviceInfo,
  type DeviceListEntry,
  type TargetVersion,
  type CreateOptions,
  type SuspendOptions,
  type ResumeOptions,
  type RemoveOptions,
  type WaitOptions,
} from './dm/device-mapper';
export type { FreezeOptions, FreezeOutcome, FreezeFailureFacts, FreezeMemberFacts, FreezeStep, GroupFreezeMember, GroupFreezeOutcome } from './dm/freeze';
export { MAX_NAME_LENGTH, MAX_UUID_LENGTH, checkDeviceName, checkDeviceUuid } from './dm/names';
export { UdevFlags, udevIsRunning, DEFAULT_DEV_DIR, DEFAULT_UDEV_TIMEOUT_MS, type UdevBatch } from './dm/udev';
export { parseTable, formatTargetLine, formatTable, checkTable, type TargetLine, type TargetExtent, type SectorCount } from './dm/table';
export * from './targets';
export { blockDeviceInfo, deviceNumber, type BlockDeviceInfo, type BlockDeviceOptions } from './system/block-device';
export type { DevNumber } from './dev-number';
export { DmsnapError, DmError, SyscallError, InvalidArgumentError, DMSNAP_ERROR_CODES, type DmsnapErrorCode, type DmsnapOwnCode, type ErrnoCode, type SyscallFailure } from './errors';
export { SECTOR_BYTES, sectors, bytes, bytesToSectors, sectorsToBytes, type Sectors, type Bytes } from './units';
/** @internal The addon's interface: for tests that inject a fake kernel, not part of the API. */
export type {
  NativeBinding,
  NativeControl,
  NativeBlockDeviceInfo,
  NativeDeviceRef,
  NativeDeviceInfo,
  NativeTarget,
  NativeListEntry,
  NativeTargetVersion,
  NativeUdevCookie,
  NativeSignature,
  NativeFreezeMember,
  NativeFreezeMemberResult,
  NativeFreezeOptions,
  NativeFreezeResult,
} from './native';
export { VERSION } from './version';
export * from './snapshot';
export {
  probeSignatures,
  checkCowIsBlank,
  describeSignatures,
  CowHasDataError,
  type DeviceSignature,
  type SignatureOptions,
  type CheckCowOptions,
} from './safety/signatures';
