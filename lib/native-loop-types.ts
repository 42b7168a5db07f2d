/**
 * The TypeScript shape of the addon's loop-device calls (native-types.ts lists them on
 * NativeBinding): what an attach returns and what LOOP_GET_STATUS64 reports.
 */
import type { NativeBlockDevice } from './native-types';

/** What loopAttach did: the loop device's number, its lo_flags, and the device held open. @hidden */
export interface NativeLoopAttachment {
  /** N of /dev/loopN. */
  number: number;
  /** lo_flags after the attach (LO_FLAGS_AUTOCLEAR, LO_FLAGS_DIRECT_IO, …: see `loopConstants`). */
  flags: number;
  /** /dev/loopN open read-write: with LO_FLAGS_AUTOCLEAR, the loop is detached once this and every other holder let go. */
  device: NativeBlockDevice;
}

/** LOOP_GET_STATUS64 of a loop device. @hidden */
export interface NativeLoopStatus {
  number: number;
  flags: number;
  /** lo_device and lo_inode: the backing file's filesystem and inode. */
  backingMajor: number;
  backingMinor: number;
  backingInode: number;
  /** lo_offset and lo_sizelimit, in bytes (a size limit of 0: the whole file). */
  offset: number;
  sizeLimit: number;
  /** lo_file_name: what the attacher put there (up to LO_NAME_SIZE - 1 bytes). */
  fileName: string;
}
