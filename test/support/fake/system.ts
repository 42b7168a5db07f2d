/**
 * What tests see of the fake kernel: the system object createFakeSystem returns, and the
 * read-only views of its devices, tables and uevents.
 */
import type { NativeBinding, NativeBlockDeviceInfo, NativeSignature } from '../../../lib/native';

export interface FakeBlockDevice extends NativeBlockDeviceInfo {}

/** A path of the fake's own filesystem (FakeSystem.files): a regular file, a directory or a symlink. */
export interface FakeFile {
  kind: 'file' | 'directory' | 'symlink';
  /** A regular file's size; change it to grow the file. */
  sizeBytes: number;
  readonly inode: number;
  /** The device of its filesystem: FAKE_FILES_DEV unless it is a host file (see loop.ts). */
  readonly dev?: { major: number; minor: number };
  /** A host file's path: its size is read again on LOOP_SET_CAPACITY. */
  readonly hostPath?: string;
}

/** A uevent the kernel sent for a dm device. `cookie` is the DM_COOKIE value (0: none). */
export interface FakeUevent {
  action: 'add' | 'change' | 'remove';
  name: string;
  minor: number;
  cookie: number;
}

/** One target of a loaded table, as it was loaded. */
export interface FakeTableTarget {
  readonly start: number;
  readonly length: number;
  readonly type: string;
  readonly params: string;
}

export interface FakeTable {
  readonly readOnly: boolean;
  readonly targets: readonly FakeTableTarget[];
}

/** What tests may inspect of a dm device (read-only: change it through the binding). */
export interface FakeMappedDevice {
  readonly name: string;
  readonly uuid: string;
  readonly major: number;
  readonly minor: number;
  readonly eventNr: number;
  readonly suspended: boolean;
  readonly deferredRemove: boolean;
  /** Whether its gendisk exists: the kernel adds it at the first table load. */
  readonly hasDisk: boolean;
  readonly live?: FakeTable;
  readonly inactive?: FakeTable;
}

/**
 * A target's reply to DM_TARGET_MSG: a string (sent back with DM_DATA_OUT_FLAG), null
 * (accepted, no reply) or { errno } to fail the ioctl.
 */
export type FakeMessageHandler = (argv: string[], target: FakeTableTarget) => string | null | { errno: number };

export interface FakeSystem {
  binding: NativeBinding;
  /** Whether /dev/mapper/control "exists" (dm-mod loaded). */
  dmLoaded: boolean;
  /** Pretend the caller is not root: opening the control node and devices, and every ioctl, fail with EACCES. */
  unprivileged: boolean;
  /** DM_VERSION. Below 4.45 (Linux 5.10 has 4.43.0) DM_LIST_DEVICES does not report uuids. */
  driverVersion: [number, number, number];
  blockDevices: Map<string, FakeBlockDevice>;
  /** Other paths that exist but are not block devices. */
  otherFiles: Set<string>;
  /** Files loop devices can be attached to, by path, on a filesystem numbered FAKE_FILES_DEV (0:42). */
  files: Map<string, FakeFile>;
  /** Adds a file (a sparse one of sizeBytes), directory or symlink; returns the record. */
  addFile(path: string, sizeBytes: number, kind?: FakeFile['kind']): FakeFile;
  /** How many times another process takes the free loop number before loopAttach's LOOP_CONFIGURE (EBUSY). */
  loopRaces: number;
  /** Whether the files' filesystem takes LO_FLAGS_DIRECT_IO; the kernel clears the flag where it does not. */
  loopDirectIo: boolean;
  /**
   * What probeSignatures (libblkid) finds, by path: a block device without an entry is
   * blank, but for the DM_snapshot_cow header of persistent snapshot metadata, which is
   * added as the kernel leaves it (and gone once zeroDevice forgets it). A path with an
   * entry but no block device stands for an image file.
   */
  signatures: Map<string, NativeSignature[]>;
  /** Number of control descriptors currently open. */
  openControls: number;

  /** The numbers of <linux/dm-ioctl.h> (DM_*_FLAG, DM_NAME_LEN, …), as the addon exports them. */
  readonly constants: Readonly<Record<string, number>>;
  /** Every dm device by name. */
  readonly devices: ReadonlyMap<string, FakeMappedDevice>;
  /** Every uevent sent for a dm device, oldest first. */
  uevents: FakeUevent[];
  /** When true, udev answers each uevent with a cookie by decrementing its semaphore (95-dm-notify.rules). */
  udevRunning: boolean;
  /** Live SysV semaphores of udev cookies: semid → value. */
  semaphores: Map<number, number>;
  /** Block device nodes made by makeBlockNode. */
  nodes: Map<string, { major: number; minor: number; mode: number }>;
  /** Handlers for DM_TARGET_MSG by target type; types without one refuse messages (EINVAL), as snapshot does. */
  messageHandlers: Map<string, FakeMessageHandler>;
  /**
   * The errno DM_TABLE_LOAD gives when a table names a path that is not a block device.
   * Linux 6.1 turns every failed lookup into ENODEV (19); newer kernels pass on the
   * lookup's own error (ENOENT, ENOTBLK): set null for those.
   */
  tableDeviceLookupErrno: number | null;
  /** The kernel's global device-mapper event counter (what DM_DEV_ARM_POLL waits on). */
  readonly globalEventNr: number;

  /** Adds a loop device (major 7, the next free minor) of the given size; returns its path. */
  addLoopDevice(sizeBytes: number, options?: { logicalSectorSize?: number; readOnly?: boolean }): string;
  /**
   * Writes `sectors` sectors at `startSector` through a snapshot-origin: names either the
   * origin dm device or the device under it. Every active snapshot of that origin copies
   * the chunks it has not copied yet; a snapshot whose COW fills up becomes Invalid and
   * its device gets an event.
   */
  writeOrigin(nameOrPath: string, sectors: number, startSector?: number): void;
  /** Writes to a snapshot device itself (its chunks move to the COW; a full COW invalidates it, or with PO overflows it). */
  writeSnapshot(nameOrPath: string, sectors: number, startSector?: number): void;
  /**
   * Opens a block device as a program would (exclusive: as a mount does); returns the
   * close function. An open dm device cannot be removed (EBUSY).
   */
  openBlockDevice(nameOrPath: string, options?: { exclusive?: boolean }): () => void;
  /** Forgets the snapshot metadata at the start of a device, as zeroing its first chunk does. */
  zeroDevice(nameOrPath: string): void;
  /** Resolves once the fake's deferred work (udev replies, deferred removals) has run. */
  settle(): Promise<void>;
  /** Filesystems "mounted" through the binding: target → source. */
  mounts: Map<string, string>;
  /** Bytes zeroed through an open block device's zeroStart, per path it was opened by. */
  zeroed: Map<string, number>;
  /** Host files preallocated with preallocateFile, and their length. */
  preallocated: Map<string, number>;
  /** Guardians started and not yet finished. */
  guardians: number;
  /** Every guardian started, oldest first: what it watches, and how it was finished. */
  guardianLog: FakeGuardian[];
  /**
   * Exclusive opens made while a guardian was being spawned: a half-spawned child holds
   * copies of every descriptor open then, so the kernel may answer EBUSY to the next one.
   */
  exclusiveOpensDuringSpawn: number;
}

/** A dmsnap-guardian the fake started (it never runs one). */
export interface FakeGuardian {
  pid: number;
  /** The origin it would resume, by uuid. */
  originUuid: string;
  /** The lock it would take before acting, and the DEV:INO it must be. */
  lockPath: string;
  lockId: string;
  /** How it was finished: 'done' (the freeze ended as planned) or 'aborted'; unset while it runs. */
  finished?: 'done' | 'aborted';
}
