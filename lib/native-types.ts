/**
 * The native addon's TypeScript shape: what each call takes and returns. lib/native.ts
 * loads it; tests implement it with a fake kernel.
 */
import type { NativeLoopAttachment, NativeLoopStatus } from './native-loop-types';

export type { NativeLoopAttachment, NativeLoopStatus } from './native-loop-types';

/**
 * Which device a call is about. Exactly one of name, uuid or major+minor is used, in
 * that order of preference, as the kernel's struct dm_ioctl allows.
 * @hidden
 */
export interface NativeDeviceRef {
  name?: string;
  uuid?: string;
  major?: number;
  minor?: number;
}

/**
 * The header of a struct dm_ioctl as the kernel returned it. `flags` is the raw flag
 * word (DM_SUSPEND_FLAG, DM_READONLY_FLAG, DM_ACTIVE_PRESENT_FLAG, …: see `constants`).
 * @hidden
 */
export interface NativeDeviceInfo {
  name: string;
  /** '' when the device has none. */
  uuid: string;
  major: number;
  minor: number;
  openCount: number;
  eventNr: number;
  targetCount: number;
  flags: number;
}

/** One line of a table: sectors, target type and its parameters (or status) text. @hidden */
export interface NativeTarget {
  /** First sector mapped, in 512-byte sectors. */
  start: number;
  /** Sectors mapped (512 bytes each). */
  length: number;
  type: string;
  params: string;
}

/** One device from DM_LIST_DEVICES. eventNr and uuid are absent where the kernel does not report them. @hidden */
export interface NativeListEntry {
  name: string;
  major: number;
  minor: number;
  eventNr?: number;
  /** The uuid, null when the device has none; absent before interface 4.45, which does not say. */
  uuid?: string | null;
}

/** One target type from DM_LIST_VERSIONS. @hidden */
export interface NativeTargetVersion {
  name: string;
  version: [number, number, number];
}

/**
 * One origin of NativeControl.freeze and its new snapshot, positional: origin, its suspend
 * flags, snapshot, its resume flags and udev cookie, the origin's resume flags and udev
 * cookie, and whether the origin's new table waits in its inactive slot (a failed freeze
 * drops it, DM_TABLE_CLEAR, before resuming).
 * @hidden
 */
export type NativeFreezeMember = [
  origin: NativeDeviceRef,
  originSuspendFlags: number,
  snapshot: NativeDeviceRef,
  snapshotResumeFlags: number,
  snapshotEventNr: number,
  originResumeFlags: number,
  originEventNr: number,
  clearOnFailure: boolean,
];

/** Options of NativeControl.freeze. @hidden */
export interface NativeFreezeOptions {
  /** Test seam (only with DMSNAP_TEST_SEAMS=1): right after step 0 (suspend) or 1 (snapshot resume)… */
  seamStep?: 0 | 1;
  /** …of this member (default 0)… */
  seamMember?: number;
  /** …fail as if the next ioctl had failed, or SIGKILL the process. */
  seamAction?: 'fail' | 'kill';
}

/** What became of one member of a freeze. @hidden */
export interface NativeFreezeMemberResult {
  /** The snapshot's resume, when it succeeded. */
  snapshot?: NativeDeviceInfo;
  /** The origin's resume (by the last step, or by the recovery), when it succeeded. */
  origin?: NativeDeviceInfo;
  /** After a failure with this origin suspended: whether its new table was dropped and it was resumed. */
  recovery?: { cleared: boolean; clearErrno?: number; resumed: boolean; resumeErrno?: number };
}

/** What NativeControl.freeze did. It resolves even when a step failed: see `failure` and each member's `recovery`. @hidden */
export interface NativeFreezeResult {
  /** From just before the first suspend to the end of the last origin's resume (CLOCK_MONOTONIC). */
  freezeMs: number;
  /**
   * mlock of what the freeze thread runs on (the addon's and libc's mappings, a window of its stack): 'locked',
   * 'already-locked' (the process had locked memory itself: left as it was) or 'failed' (lockErrno; the freeze ran all the same).
   */
  memoryLock: 'locked' | 'already-locked' | 'failed';
  lockErrno?: number;
  /** One per member, in order. */
  members: NativeFreezeMemberResult[];
  /** The step that failed and on which member: its ioctl's errno (0 when a test seam made it fail). */
  failure?: { step: 'suspend-origin' | 'resume-snapshot' | 'resume-origin'; member: number; errno: number; injected: boolean; ioctl: string; path: string; device: string };
}

/**
 * An open /dev/mapper/control descriptor. Every method is one ioctl (retried with a
 * larger buffer when the kernel sets DM_BUFFER_FULL_FLAG) run on the libuv thread pool;
 * arguments are positional and unchecked: lib/dm validates them first.
 * `flags` arguments are OR-ed into the request's flag word; `eventNr` is the request's
 * event_nr field, which carries the udev cookie for RESUME, REMOVE and RENAME.
 * @hidden
 */
export interface NativeControl {
  /** The control node this descriptor was opened on. */
  readonly path: string;
  /** True once close() was called. */
  readonly closed: boolean;
  /** DM_VERSION: [major, minor, patch] of the kernel's ioctl interface. */
  version(): Promise<[number, number, number]>;
  /** DM_LIST_DEVICES (asks for uuids with DM_UUID_FLAG). */
  listDevices(): Promise<NativeListEntry[]>;
  /** DM_LIST_VERSIONS. */
  listVersions(): Promise<NativeTargetVersion[]>;
  /** DM_DEV_CREATE: a device with no table. */
  create(name: string, uuid: string, flags: number): Promise<NativeDeviceInfo>;
  /** DM_DEV_REMOVE (flags: DM_DEFERRED_REMOVE). */
  remove(ref: NativeDeviceRef, flags: number, eventNr: number): Promise<NativeDeviceInfo>;
  /** DM_DEV_RENAME: a new name, or with DM_UUID_FLAG a uuid for a device that has none. */
  rename(ref: NativeDeviceRef, newNameOrUuid: string, flags: number, eventNr: number): Promise<NativeDeviceInfo>;
  /** DM_DEV_SUSPEND with DM_SUSPEND_FLAG (flags: DM_SKIP_LOCKFS_FLAG, DM_NOFLUSH_FLAG). */
  suspend(ref: NativeDeviceRef, flags: number): Promise<NativeDeviceInfo>;
  /** DM_DEV_SUSPEND without DM_SUSPEND_FLAG: resume, swapping in the inactive table if any. */
  resume(ref: NativeDeviceRef, flags: number, eventNr: number): Promise<NativeDeviceInfo>;
  /**
   * The freeze of one snapshot or a group of them (1 to 16 members), on a thread of its
   * own (never the libuv thread pool), memory locked: suspend every origin in order,
   * resume every snapshot, resume every origin. After a failure it resumes every origin
   * still suspended with its previous table itself.
   */
  freeze(members: NativeFreezeMember[], options: NativeFreezeOptions): Promise<NativeFreezeResult>;
  /** DM_DEV_STATUS (flags: DM_QUERY_INACTIVE_TABLE_FLAG). */
  info(ref: NativeDeviceRef, flags: number): Promise<NativeDeviceInfo>;
  /**
   * DM_DEV_WAIT: blocks a thread-pool thread until the device's event counter differs
   * from eventNr. Only a fallback for kernels without DM_DEV_ARM_POLL.
   */
  waitEvent(ref: NativeDeviceRef, eventNr: number): Promise<NativeDeviceInfo>;
  /** DM_TABLE_LOAD into the inactive slot (flags: DM_READONLY_FLAG). */
  load(ref: NativeDeviceRef, targets: NativeTarget[], flags: number): Promise<NativeDeviceInfo>;
  /** DM_TABLE_CLEAR: drops the inactive table. */
  clear(ref: NativeDeviceRef): Promise<NativeDeviceInfo>;
  /** DM_TABLE_DEPS (flags: DM_QUERY_INACTIVE_TABLE_FLAG): the devices the table uses. */
  deps(ref: NativeDeviceRef, flags: number): Promise<{ info: NativeDeviceInfo; devices: [number, number][] }>;
  /**
   * DM_TABLE_STATUS: each target's status text, or with DM_STATUS_TABLE_FLAG its table
   * parameters (flags also: DM_QUERY_INACTIVE_TABLE_FLAG, DM_NOFLUSH_FLAG).
   */
  tableStatus(ref: NativeDeviceRef, flags: number): Promise<{ info: NativeDeviceInfo; targets: NativeTarget[] }>;
  /** DM_TARGET_MSG: returns the target's reply when it gives one (DM_DATA_OUT_FLAG). */
  message(ref: NativeDeviceRef, sector: number, message: string): Promise<string | null>;
  /** DM_DEV_ARM_POLL: the next device-mapper event makes this descriptor readable. */
  armPoll(): Promise<void>;
  /**
   * Waits on the event loop (no thread) until the descriptor is readable; resolves true
   * then, or false when cancelled by cancelPoll() or close().
   */
  pollReadable(): Promise<boolean>;
  /** Makes every pending pollReadable() resolve false; the descriptor stays open. */
  cancelPoll(): void;
  /** Closes the descriptor once every call in flight has finished. */
  close(): void;
}

/** What queryBlockDevice reads: the size, sector sizes, read-only flag and device number. @hidden */
export interface NativeBlockDeviceInfo {
  /** BLKGETSIZE64, in bytes. */
  sizeBytes: number;
  /** BLKSSZGET, in bytes. */
  logicalSectorSize: number;
  /** BLKPBSZGET, in bytes. */
  physicalSectorSize: number;
  /** BLKROGET. */
  readOnly: boolean;
  major: number;
  minor: number;
}

/**
 * One signature libblkid recognises on a device: a filesystem, RAID or LVM member, LUKS
 * header or partition table. Backup copies (GPT, LUKS2, FAT) are separate entries.
 * @hidden
 */
export interface NativeSignature {
  /** blkid's TYPE or PTTYPE: 'ext4', 'xfs', 'swap', 'crypto_LUKS', 'LVM2_member', 'dos', 'gpt', … */
  type: string;
  /** 'filesystem', 'raid', 'crypto', 'partition_table' or 'other' (swap, bcache, …). */
  usage: string;
  /** The label, or '' when there is none. */
  label: string;
  /** UUID (PTUUID for a partition table), or '' when there is none. */
  uuid: string;
  /** Byte offset of the signature's magic on the device. */
  offset: number;
}

/** A SysV semaphore for the udev cookie protocol of libdevmapper and 95-dm-notify.rules. @hidden */
export interface NativeUdevCookie {
  /** The cookie's low 16 bits plus the DM_COOKIE_MAGIC key; put (flags << 16) | base in event_nr. */
  base: number;
  /** The id of the SysV semaphore (semget) behind the cookie. */
  semid: number;
}

/**
 * An open block device (openBlockDevice): every call reaches the device the path named
 * when it was opened, whatever becomes of the path. close() releases it (and its O_EXCL
 * claim) once no call is running.
 * @hidden
 */
export interface NativeBlockDevice {
  /** The path it was opened by (names it in errors). */
  readonly path: string;
  /** Its device number, from fstat of the open descriptor. */
  readonly major: number;
  readonly minor: number;
  /** True once close() was called. */
  readonly closed: boolean;
  /** BLKGETSIZE64, BLKSSZGET, BLKPBSZGET, BLKROGET of this device. */
  query(): Promise<NativeBlockDeviceInfo>;
  /** probeSignatures of this device. */
  probeSignatures(): Promise<NativeSignature[]>;
  /** Reads up to `length` bytes at `offset` (fewer at its end); `direct` bypasses the page cache (aligned offset and length). */
  read(offset: number, length: number, direct?: boolean): Promise<Buffer>;
  /** Writes lengthBytes zeros at its start, then fdatasync (opened writable only). */
  zeroStart(lengthBytes: number): Promise<void>;
  /** Writes `data` (at most 1 MiB) at `offset`, then fdatasync (opened writable only). */
  writeAt(offset: number, data: Buffer): Promise<void>;
  close(): void;
}

/** The addon's functions. loadBinding() returns the real one; tests inject a fake. @hidden */
export interface NativeBinding {
  /** Numbers from <linux/dm-ioctl.h>: DM_*_FLAG, DM_NAME_LEN, DM_UUID_LEN, DM_MAX_TYPE_NAME, … */
  readonly constants: Readonly<Record<string, number>>;
  /** Opens a device-mapper control node (normally /dev/mapper/control) read-write, close-on-exec. */
  openControl(path: string): Promise<NativeControl>;
  /** BLKGETSIZE64, BLKSSZGET, BLKPBSZGET, BLKROGET and the device number of a block device. */
  queryBlockDevice(path: string): Promise<NativeBlockDeviceInfo>;
  /**
   * Opens a block device, read-only or read-write, with O_EXCL when exclusive (EBUSY
   * while it is mounted or held by device-mapper, md or another exclusive opener),
   * close-on-exec. ENOTBLK for anything but a block device.
   */
  openBlockDevice(path: string, exclusive: boolean, writable: boolean): Promise<NativeBlockDevice>;
  /** major:minor of a block device node (stat only, no open). */
  statBlockDevice(path: string): Promise<{ major: number; minor: number }>;
  /**
   * Every signature libblkid finds on a block device or image file, as wipefs lists them
   * (several filesystems at once included). Opens read-only, never exclusively.
   */
  probeSignatures(path: string): Promise<NativeSignature[]>;
  /**
   * Opens the block device with O_EXCL and closes it: fails with EBUSY while it is
   * mounted or held by device-mapper, md or another exclusive opener.
   */
  checkExclusive(path: string): Promise<void>;
  /** Reads up to `length` bytes at `offset` of a block device or file (fewer at its end). */
  readDeviceBytes(path: string, offset: number, length: number): Promise<Buffer>;
  /**
   * mount(2). flags are MS_* bits; data the filesystem's option string. The target's last
   * component must be a directory, never a symlink (it is opened O_PATH | O_NOFOLLOW first).
   */
  mount(source: string, target: string, fstype: string, flags: number, data: string): Promise<void>;
  /** umount2(2), always with UMOUNT_NOFOLLOW. */
  unmount(target: string, flags: number): Promise<void>;
  /**
   * fallocate(2) of a regular file's first `length` bytes, then fsync; opened O_NOFOLLOW and
   * refused (ESTALE) unless its inode is `inode`.
   */
  preallocateFile(path: string, inode: number, length: number): Promise<void>;
  /** flock(fd, LOCK_EX | LOCK_NB): true when taken, false when someone else holds it. */
  tryLock(fd: number): boolean;
  /** flock(fd, LOCK_UN). */
  unlock(fd: number): void;
  /**
   * Spawns dmsnap-guardian for the origin device originName; resolves once the child runs
   * its own program (descriptors opened later never reach it). It resumes the origin if
   * this process dies before finishGuardian(…, true), once it holds the origin's lock
   * (lockPath, which must still be the file lockId, "DEV:INO", that this process holds).
   */
  spawnGuardian(executable: string, controlPath: string, originUuid: string, lockPath: string, lockId: string): Promise<{ pid: number; fd: number }>;
  /** Waits until the guardian is ready; if it is not within timeoutMs, kills and reaps it and rejects. */
  awaitGuardianReady(pid: number, fd: number, executable: string, timeoutMs: number): Promise<void>;
  /** Ends the guardian: done=true means the freeze ended as planned. Resolves its exit status. */
  finishGuardian(pid: number, fd: number, done: boolean): Promise<number>;
  /** mknod(2) a block device node (the no-udev fallback for /dev/mapper/NAME). */
  makeBlockNode(path: string, major: number, minor: number, mode: number): Promise<void>;
  /** Creates a udev cookie semaphore with value 0. */
  udevCookieCreate(): NativeUdevCookie;
  /** +1 before an ioctl that may send a uevent; -1 if the kernel says it sent none. */
  udevCookieAdd(semid: number, delta: 1 | -1): void;
  /**
   * Waits (on a thread-pool thread, at most timeoutMs) until udev has processed every
   * uevent (the semaphore reaches 0), then removes the semaphore. Resolves false on timeout.
   */
  udevCookieWait(semid: number, timeoutMs: number): Promise<boolean>;
  /** Removes the semaphore without waiting. */
  udevCookieDestroy(semid: number): void;
  /** LO_FLAGS_* and LO_NAME_SIZE from <linux/loop.h>. */
  readonly loopConstants: Readonly<Record<string, number>>;
  /**
   * Attaches a regular file (opened O_RDWR | O_NOFOLLOW | O_CLOEXEC) to a free loop device with
   * LOOP_CONFIGURE: LO_FLAGS_AUTOCLEAR, the tag in lo_file_name, LO_FLAGS_DIRECT_IO when asked and the
   * kernel takes it. Numbers taken by another process first (EBUSY) are skipped, a few times.
   */
  loopAttach(file: string, tag: string, directIo: boolean): Promise<NativeLoopAttachment>;
  /** LOOP_GET_STATUS64 (ENXIO when nothing is attached). */
  loopStatus(device: string): Promise<NativeLoopStatus>;
  /** LOOP_SET_CAPACITY: the device takes its backing file's current size. */
  loopSetCapacity(device: string): Promise<void>;
  /** LOOP_CLR_FD: detaches now if nothing else holds it open, else marks it autoclear (detached at the last close). */
  loopDetach(device: string): Promise<void>;
}
