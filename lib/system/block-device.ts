/**
 * Block-device queries: size, sector sizes and device number, straight from the kernel
 * (BLKGETSIZE64, BLKSSZGET, BLKPBSZGET, BLKROGET, stat).
 */
import { callNative, loadBinding, type NativeBinding } from '../native';
import { bytes, bytesToSectors, type Bytes, type Sectors } from '../units';
import { checkPath } from '../validate';

/** A block device's size and geometry, as blockDeviceInfo reads them from the kernel. */
export interface BlockDeviceInfo {
  /** The path as given. */
  path: string;
  /** Size in bytes (BLKGETSIZE64). */
  sizeBytes: Bytes;
  /** Size in 512-byte sectors, the unit of device-mapper tables. */
  sizeSectors: Sectors;
  /** The device's logical block size (BLKSSZGET), e.g. 512 or 4096. */
  logicalSectorSize: number;
  /** The device's physical block size (BLKPBSZGET). */
  physicalSectorSize: number;
  /** Whether the kernel marks the device read-only (BLKROGET). */
  readOnly: boolean;
  major: number;
  minor: number;
}

/** Options of blockDeviceInfo and deviceNumber. */
export interface BlockDeviceOptions {
  /** @internal The native binding to use; tests inject a fake one. */
  binding?: NativeBinding;
}

/**
 * Reads a block device's size and geometry. The device is opened read-only and never
 * written. Fails with code 'ENOTBLK' for anything that is not a block device.
 */
export async function blockDeviceInfo(path: string, options: BlockDeviceOptions = {}): Promise<BlockDeviceInfo> {
  checkPath(path, 'path');
  const binding = options.binding ?? loadBinding();
  const info = await callNative(() => binding.queryBlockDevice(path));
  const sizeBytes = bytes(info.sizeBytes);
  return {
    path,
    sizeBytes,
    // Block devices are whole multiples of 512 bytes; the kernel sizes them in sectors.
    sizeSectors: bytesToSectors(sizeBytes),
    logicalSectorSize: info.logicalSectorSize,
    physicalSectorSize: info.physicalSectorSize,
    readOnly: info.readOnly,
    major: info.major,
    minor: info.minor,
  };
}

/** major:minor of a block device node, e.g. { major: 7, minor: 0 } for /dev/loop0. */
export async function deviceNumber(path: string, options: BlockDeviceOptions = {}): Promise<{ major: number; minor: number }> {
  checkPath(path, 'path');
  const binding = options.binding ?? loadBinding();
  return callNative(() => binding.statBlockDevice(path));
}
