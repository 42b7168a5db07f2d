/**
 * What the device-mapper client takes and returns: options, device references and the
 * kernel's replies, typed.
 */
import type { NativeBinding } from '../native';
import type { TargetLine } from './table';
import type { NodeSyncOptions, UdevBatch } from './udev';

/** The default path of the device-mapper control node. */
export const DEFAULT_CONTROL_PATH = '/dev/mapper/control';

/** Options of DeviceMapper.open; the udev ones decide how /dev/mapper nodes are kept. */
export interface DeviceMapperOptions extends NodeSyncOptions {
  /** The control node to open; default /dev/mapper/control. */
  controlPath?: string;
  /** @internal The native binding to use; tests inject a fake one. */
  binding?: NativeBinding;
}

/** The kernel's device-mapper ioctl interface version, e.g. 4.47.0. */
export interface DriverVersion {
  major: number;
  minor: number;
  patch: number;
  /** "4.47.0", as `dmsetup version` prints it. */
  text: string;
}

/**
 * Names a device: by name (a plain string or `{ name }`), by uuid, or by device number.
 */
export type DeviceRef = string | { name: string } | { uuid: string } | { major: number; minor: number };

/** What DM_DEV_STATUS (and most other ioctls) report about a device. */
export interface DeviceInfo {
  name: string;
  /** The device's uuid, or null when it has none. */
  uuid: string | null;
  major: number;
  minor: number;
  /** How many openers the device has (mounts, other tables, processes). */
  openCount: number;
  /** The device's event counter; targets raise events (e.g. an invalidated snapshot). */
  eventNr: number;
  /** Targets in the live table (in the inactive one for `info(ref, { inactive: true })`). */
  targetCount: number;
  suspended: boolean;
  readOnly: boolean;
  /** A live table is loaded. */
  liveTable: boolean;
  /** A table waits in the inactive slot for the next resume. */
  inactiveTable: boolean;
  /** Removal is deferred until the last opener closes the device. */
  deferredRemove: boolean;
}

/** One device from `list()`. */
export interface DeviceListEntry {
  name: string;
  major: number;
  minor: number;
  /** Absent where the kernel does not report it. */
  eventNr?: number;
  /** The uuid, null when the device has none. */
  uuid: string | null;
}

/** A target type the kernel knows, from `targets()`. */
export interface TargetVersion {
  name: string;
  version: [number, number, number];
  /** "1.16.0" */
  text: string;
}

/** Options of DeviceMapper.create. */
export interface CreateOptions {
  /** The device's uuid. It never changes once set; a device created without one can get one with setUuid. */
  uuid?: string;
  /** Load this table and resume, as `dmsetup create --table` does. Without it the device has no table. */
  table?: readonly TargetLine[] | string;
  /** Load the table read-only. */
  readOnly?: boolean;
  /** Extra udev flags for the activation (see UdevFlags), e.g. to hide a private layer from blkid. */
  udevFlags?: number;
}

/** Flags of DM_DEV_SUSPEND, for suspend and resume. */
export interface SuspendOptions {
  /** Do not freeze the filesystem on the device (DM_SKIP_LOCKFS_FLAG). Off by default. */
  skipLockfs?: boolean;
  /** Do not flush queued I/O (DM_NOFLUSH_FLAG). Off by default. */
  noFlush?: boolean;
}

/** Options of DeviceMapper.resume. */
export interface ResumeOptions extends SuspendOptions {
  /** Extra udev flags for the resume's uevent (see UdevFlags), e.g. to hide a private layer from blkid. */
  udevFlags?: number;
  /**
   * Share a udev cookie with other calls and wait for udev once, at `batch.finish()`
   * (see `DeviceMapper.udevBatch`). Used where nothing may wait between ioctls.
   */
  batch?: UdevBatch;
}

/** Options of DeviceMapper.remove. */
export interface RemoveOptions {
  /** If the device is in use, remove it when its last user closes it (DM_DEFERRED_REMOVE). */
  deferred?: boolean;
  /**
   * Retry while the kernel answers EBUSY, for up to about 5 seconds: udev and blkid open
   * new devices briefly. Default true.
   */
  retry?: boolean;
  /** Extra udev flags for the remove's uevent (see UdevFlags). */
  udevFlags?: number;
}

/** Options of DeviceMapper.waitEvent. */
export interface WaitOptions {
  /** Cancels the wait: the call rejects with the signal's reason. */
  signal?: AbortSignal;
  /** Give up after this many milliseconds (AbortError with code 'ABORT_ERR'). */
  timeoutMs?: number;
}
