/**
 * Mounting a snapshot for a file-level backup: the filesystem is recognised from its
 * superblock and mounted read-only with what it needs on a frozen copy.
 */
import { open } from 'node:fs/promises';
import { DmsnapError } from '../errors';

/** A filesystem dmsnap recognises on a snapshot (Btrfs only so as to refuse to mount it). */
export type FilesystemType = 'xfs' | 'ext2' | 'ext3' | 'ext4' | 'btrfs';

/** mount(2) flags: read-only, and nothing on a backup view may run or act as a device. */
export const MS_RDONLY = 1;
/** Set-user-ID and set-group-ID bits are ignored. */
export const MS_NOSUID = 2;
/** Device nodes on it cannot be opened. */
export const MS_NODEV = 4;
/** Nothing on it can be executed. */
export const MS_NOEXEC = 8;

const EXT_MAGIC_OFFSET = 1024 + 56;
const EXT_FEATURE_COMPAT = 1024 + 92;
const EXT_FEATURE_INCOMPAT = 1024 + 96;
const BTRFS_MAGIC_OFFSET = 0x10040;
const PROBE_BYTES = 0x10048;

/** Reads the superblocks dmsnap knows and names the filesystem, or undefined. */
export async function detectFilesystem(devicePath: string): Promise<FilesystemType | undefined> {
  const handle = await open(devicePath, 'r');
  try {
    const buffer = Buffer.alloc(PROBE_BYTES);
    const { bytesRead } = await handle.read(buffer, 0, PROBE_BYTES, 0);
    if (bytesRead >= 4 && buffer.toString('latin1', 0, 4) === 'XFSB') return 'xfs';
    if (bytesRead >= EXT_MAGIC_OFFSET + 2 && buffer.readUInt16LE(EXT_MAGIC_OFFSET) === 0xef53) {
      const compat = buffer.readUInt32LE(EXT_FEATURE_COMPAT);
      const incompat = buffer.readUInt32LE(EXT_FEATURE_INCOMPAT);
      const hasJournal = (compat & 0x4) !== 0;
      const ext4Only = (incompat & (0x40 | 0x80 | 0x200 | 0x10000)) !== 0; // extents, 64bit, flex_bg, inline data
      return ext4Only ? 'ext4' : hasJournal ? 'ext3' : 'ext2';
    }
    if (bytesRead >= BTRFS_MAGIC_OFFSET + 8 && buffer.toString('latin1', BTRFS_MAGIC_OFFSET, BTRFS_MAGIC_OFFSET + 8) === '_BHRfS_M') {
      return 'btrfs';
    }
    return undefined;
  } finally {
    await handle.close();
  }
}

/** The mount(2) call for a snapshot. */
export interface MountPlan {
  /** The filesystemtype argument: 'xfs', 'ext2', 'ext3' or 'ext4'. */
  fstype: string;
  /** MS_* bits: always MS_RDONLY, MS_NOSUID, MS_NODEV and MS_NOEXEC. */
  flags: number;
  /** The filesystem's option string: 'nouuid' (XFS), 'noload' (ext3/4) or ''. */
  data: string;
}

/**
 * How to mount a frozen copy read-only. XFS: a second filesystem with the same UUID
 * needs `nouuid`; a frozen XFS leaves its log covered but not clean, and the read-only
 * mount replays it into the snapshot (the COW takes the writes), so the backup and any
 * later xfs_repair see a clean filesystem. ext*: `noload`, since freezing left the
 * journal empty and a read-only copy must not replay one. Btrfs is refused: a
 * block-level copy with the same fsid on the same host confuses the kernel's device scan.
 */
export function mountPlan(type: FilesystemType | undefined, devicePath: string): MountPlan {
  const flags = MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC;
  switch (type) {
    case 'xfs':
      return { fstype: 'xfs', flags, data: 'nouuid' };
    case 'ext3':
    case 'ext4':
      return { fstype: type, flags, data: 'noload' };
    case 'ext2':
      return { fstype: 'ext2', flags, data: '' };
    case 'btrfs':
      throw new DmsnapError(
        `${devicePath} holds a Btrfs filesystem: mounting a block-level copy with the same fsid on the same host is unsafe. ` +
          'Back up the snapshot device as an image (createReadStream, dmsnap image) instead',
        'ERR_DMSNAP_UNSAFE_FILESYSTEM',
      );
    default:
      throw new DmsnapError(
        `${devicePath} holds no filesystem dmsnap can mount (it knows XFS and ext2/3/4); ` +
          'back up the snapshot device as an image instead, or mount it yourself',
        'ERR_DMSNAP_UNKNOWN_FILESYSTEM',
      );
  }
}
