/**
 * dmsnap: consistent block-level snapshots of live Linux filesystems through the
 * kernel's device-mapper, without LVM and without dmsetup.
 */
export { DeviceMapper, DEFAULT_CONTROL_PATH, type DeviceMapperOptions, type DriverVersion } from './dm/device-mapper';
export { blockDeviceInfo, deviceNumber, type BlockDeviceInfo, type BlockDeviceOptions } from './block-device';
export { DmsnapError, DmError, SyscallError, InvalidArgumentError, type SyscallFailure } from './errors';
export { SECTOR_BYTES, sectors, bytes, bytesToSectors, sectorsToBytes, type Sectors, type Bytes } from './units';
export type { NativeBinding, NativeControl, NativeBlockDeviceInfo } from './native';
export { VERSION } from './version';
