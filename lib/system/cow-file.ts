/**
 * COW files: the regular files dmsnap creates to hold a snapshot's copied blocks when no
 * spare device is given. A file is created under a temporary name of dmsnap's own
 * (O_CREAT | O_EXCL | O_NOFOLLOW, mode 0600), sized sparse, made durable, and only then
 * linked to the name the user gave, which must not exist: a file already there is never
 * replaced, and nothing is ever opened through a symlink. A file is deleted only while
 * it is still the very inode dmsnap created (device and inode number compared).
 */
import { closeSync, constants, fstatSync, fsyncSync, ftruncateSync, linkSync, lstatSync, openSync, statfsSync, unlinkSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { DmsnapError } from '../errors';
import { splitDev, type DevNumber } from './stack';

/** Which file a COW file is: its filesystem's device number and its inode ("MAJOR:MINOR:INODE"). */
export type FileIdentity = string;

/** Filesystems that cannot hold a sparse file (f_type of statfs): a COW file there would be written in full. */
const NO_SPARSE_FILES: Record<number, string> = { 0x4d44: 'vfat', 0x2011bab0: 'exfat', 0x5346544e: 'ntfs', 0x4244: 'hfs' };

/** What statfs says of the filesystem a COW file goes on. */
export interface HostFilesystem {
  /** The device number of the directory's filesystem (st_dev). */
  dev: DevNumber;
  /** statfs f_type. */
  type: number;
  /** Bytes an unprivileged writer may still use (f_bavail × f_bsize). */
  availableBytes: number;
  /** Bytes in all (f_blocks × f_bsize). */
  totalBytes: number;
}

const CREATE_FLAGS = constants.O_RDWR | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW | constants.O_NOCTTY;

function identityOf(st: { dev: bigint; ino: bigint }): FileIdentity {
  const { major, minor } = splitDev(st.dev);
  return fileIdentity({ major, minor, inode: Number(st.ino) });
}

/** The identity of the file on device `major:minor` with inode `inode` (as LOOP_GET_STATUS64 reports a backing file). */
export function fileIdentity(file: DevNumber & { inode: number }): FileIdentity {
  return `${file.major}:${file.minor}:${file.inode}`;
}

/** The name a COW file is created under before it gets the user's: hidden, beside it, with the snapshot's id. */
export function temporaryName(path: string, snapId: string): string {
  return join(dirname(path), `.${basename(path)}.dmsnap-${snapId}`);
}

/** statfs and stat of the directory `dir`. */
export function hostFilesystem(dir: string): HostFilesystem {
  const fs = statfsSync(dir);
  const st = lstatSync(dir, { bigint: true });
  return { dev: splitDev(st.dev), type: fs.type, availableBytes: fs.bavail * fs.bsize, totalBytes: fs.blocks * fs.bsize };
}

/** The name of a filesystem type that cannot hold sparse files, or undefined. */
export function noSparseFiles(type: number): string | undefined {
  return NO_SPARSE_FILES[type];
}

/** lstat of `path`, or null when nothing is there. */
export function entryAt(path: string): { identity: FileIdentity; regular: boolean; sizeBytes: number; allocatedBytes: number } | null {
  try {
    const st = lstatSync(path, { bigint: true });
    return { identity: identityOf(st), regular: st.isFile(), sizeBytes: Number(st.size), allocatedBytes: Number(st.blocks) * 512 };
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw error;
  }
}

/**
 * Creates `path` (which must not exist), sparse, `sizeBytes` long, and makes it durable;
 * returns its identity. A filesystem that allocated the whole length (it cannot make
 * holes) is refused and the file removed again.
 */
export function createSparseFile(path: string, sizeBytes: number): FileIdentity {
  const fd = openSync(path, CREATE_FLAGS, 0o600);
  let identity: FileIdentity | undefined;
  try {
    identity = identityOf(fstatSync(fd, { bigint: true }));
    ftruncateSync(fd, sizeBytes);
    fsyncSync(fd);
    const allocated = Number(fstatSync(fd, { bigint: true }).blocks) * 512;
    // A sparse file of any size holds a few blocks at most.
    if (sizeBytes >= 1 << 20 && allocated >= sizeBytes / 2) {
      throw new DmsnapError(
        `the filesystem of ${dirname(path)} cannot create sparse files (${allocated} bytes were allocated at once); put the COW file on ext4, XFS, btrfs or tmpfs`,
        'ERR_DMSNAP_COW_FILE_UNSUITABLE',
      );
    }
  } catch (error) {
    closeSync(fd);
    if (identity) removeOwnFile(path, identity);
    throw error;
  }
  closeSync(fd);
  return identity;
}

/** Opens an existing COW file of ours (never through a symlink) and sets its length; false when it is not that inode. */
export function resizeOwnFile(path: string, identity: FileIdentity, sizeBytes: number): boolean {
  const fd = openSync(path, constants.O_RDWR | constants.O_NOFOLLOW | constants.O_NOCTTY);
  try {
    if (identityOf(fstatSync(fd, { bigint: true })) !== identity) return false;
    ftruncateSync(fd, sizeBytes);
    fsyncSync(fd);
    return true;
  } finally {
    closeSync(fd);
  }
}

/** Gives the file at `from` the name `to` (link: EEXIST if `to` exists, never a replace), then drops `from`. */
export function publishFile(from: string, to: string): void {
  linkSync(from, to);
  unlinkSync(from);
  syncDirectory(dirname(to));
}

/** Deletes `path` if it is still the file `identity` names; whether it did. */
export function removeOwnFile(path: string, identity: FileIdentity): boolean {
  const entry = entryAt(path);
  if (!entry || !entry.regular || entry.identity !== identity) return false;
  unlinkSync(path);
  return true;
}

/** fsync of a directory, so that a name created or removed in it survives a crash. */
export function syncDirectory(dir: string): void {
  const fd = openSync(dir, constants.O_RDONLY | constants.O_DIRECTORY);
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}
