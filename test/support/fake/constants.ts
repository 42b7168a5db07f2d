/**
 * The numbers of <linux/dm-ioctl.h> (interface 4.47.0, Linux 6.1) that the addon exports
 * as `constants`, so the fake kernel needs no compiled addon. test/unit/fake-constants.test.ts
 * checks them against the addon whenever one is built.
 */
export const DM_CONSTANTS: Readonly<Record<string, number>> = Object.freeze({
  DM_VERSION_MAJOR: 4,
  DM_VERSION_MINOR: 47,
  DM_VERSION_PATCHLEVEL: 0,
  DM_MAX_TYPE_NAME: 16,
  DM_NAME_LEN: 128,
  DM_UUID_LEN: 129,
  DM_READONLY_FLAG: 1 << 0,
  DM_SUSPEND_FLAG: 1 << 1,
  DM_PERSISTENT_DEV_FLAG: 1 << 3,
  DM_STATUS_TABLE_FLAG: 1 << 4,
  DM_ACTIVE_PRESENT_FLAG: 1 << 5,
  DM_INACTIVE_PRESENT_FLAG: 1 << 6,
  DM_BUFFER_FULL_FLAG: 1 << 8,
  DM_SKIP_BDGET_FLAG: 1 << 9,
  DM_SKIP_LOCKFS_FLAG: 1 << 10,
  DM_NOFLUSH_FLAG: 1 << 11,
  DM_QUERY_INACTIVE_TABLE_FLAG: 1 << 12,
  DM_UEVENT_GENERATED_FLAG: 1 << 13,
  DM_UUID_FLAG: 1 << 14,
  DM_SECURE_DATA_FLAG: 1 << 15,
  DM_DATA_OUT_FLAG: 1 << 16,
  DM_DEFERRED_REMOVE: 1 << 17,
  DM_INTERNAL_SUSPEND_FLAG: 1 << 18,
  DM_NAME_LIST_FLAG_HAS_UUID: 1,
  DM_NAME_LIST_FLAG_DOESNT_HAVE_UUID: 2,
});

function flag(name: string): number {
  const value = DM_CONSTANTS[name];
  if (typeof value !== 'number') throw new Error(`the fake's constants do not define ${name}`);
  return value;
}

export const READONLY = flag('DM_READONLY_FLAG');
export const SUSPEND = flag('DM_SUSPEND_FLAG');
export const PERSISTENT_DEV = flag('DM_PERSISTENT_DEV_FLAG');
export const STATUS_TABLE = flag('DM_STATUS_TABLE_FLAG');
export const ACTIVE_PRESENT = flag('DM_ACTIVE_PRESENT_FLAG');
export const INACTIVE_PRESENT = flag('DM_INACTIVE_PRESENT_FLAG');
export const BUFFER_FULL = flag('DM_BUFFER_FULL_FLAG');
export const QUERY_INACTIVE = flag('DM_QUERY_INACTIVE_TABLE_FLAG');
export const UEVENT_GENERATED = flag('DM_UEVENT_GENERATED_FLAG');
export const UUID_FLAG = flag('DM_UUID_FLAG');
export const SECURE_DATA = flag('DM_SECURE_DATA_FLAG');
export const DATA_OUT = flag('DM_DATA_OUT_FLAG');
export const DEFERRED_REMOVE = flag('DM_DEFERRED_REMOVE');
export const INTERNAL_SUSPEND = flag('DM_INTERNAL_SUSPEND_FLAG');
export const NAME_LEN = flag('DM_NAME_LEN');
export const UUID_LEN = flag('DM_UUID_LEN');
export const MAX_TYPE_NAME = flag('DM_MAX_TYPE_NAME');

/** The numbers of <linux/loop.h> the addon exports as `loopConstants`. */
export const LOOP_CONSTANTS: Readonly<Record<string, number>> = Object.freeze({
  LO_FLAGS_READ_ONLY: 1,
  LO_FLAGS_AUTOCLEAR: 4,
  LO_FLAGS_PARTSCAN: 8,
  LO_FLAGS_DIRECT_IO: 16,
  LO_NAME_SIZE: 64,
});

/** The device number of the filesystem FakeSystem.files live on. */
export const FAKE_FILES_DEV = { major: 0, minor: 42 };

/** The errno values the fake kernel fails with. */
export const EPERM = 1;
export const ENOENT = 2;
export const ENXIO = 6;
export const EBADF = 9;
export const ECHILD = 10;
export const EAGAIN = 11;
export const EACCES = 13;
export const ENOTBLK = 15;
export const EBUSY = 16;
export const EEXIST = 17;
export const ENODEV = 19;
export const EISDIR = 21;
export const EINVAL = 22;
export const ELOOP = 40;
export const EIDRM = 43;
export const EOVERFLOW = 75;
export const ESTALE = 116;

/** The dynamic major the kernel gives device-mapper on Debian. */
export const DM_MAJOR = 254;
export const LOOP_MAJOR = 7;
export const MINOR_BITS = 20;

/** Modes a table opens its devices with. */
export const MODE_READ = 1;
export const MODE_WRITE = 2;
