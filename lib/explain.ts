/**
 * Messages for failed system calls: what failed, why, and what to do next.
 */
import { errnoCode, errnoText, type SyscallFailure } from './errors';

const CONTROL_NODE = /\/dev\/mapper\/control$/;

function subject(failure: SyscallFailure): string {
  const target = failure.device ? `device-mapper device "${failure.device}"` : failure.path ?? 'the device';
  if (failure.ioctl) return `${failure.ioctl} on ${target}`;
  return `${failure.syscall} ${target}`;
}

const LOAD_DM_MOD = 'run "modprobe dm-mod" as root';

/** Advice when the device-mapper driver itself is missing: its control node absent, or present without a driver behind it. */
function driverAdvice(failure: SyscallFailure, code: string): string | undefined {
  const onControl = failure.path !== undefined && CONTROL_NODE.test(failure.path) && !failure.ioctl;
  if (!onControl) return undefined;
  if (code === 'ENOENT') {
    return `the device-mapper driver is not loaded: ${LOAD_DM_MOD} (loading it makes the kernel, or udev, create ${failure.path})`;
  }
  if (code === 'ENODEV' || code === 'ENXIO') {
    return `the device-mapper driver is not loaded (${failure.path} exists, but no driver answers it): ${LOAD_DM_MOD}`;
  }
  return undefined;
}

/** Advice for "no such device" (ENODEV, ENXIO): what is missing, and how to bring it. */
function missingDeviceAdvice(failure: SyscallFailure, code: string): string | undefined {
  if (code === 'ENXIO' && failure.device) {
    return `no device-mapper device ${failure.device.startsWith('uuid ') ? 'with ' : 'named '}${failure.device.startsWith('uuid ') ? failure.device : `"${failure.device}"`} exists`;
  }
  if (code === 'ENXIO' && failure.path !== undefined && !failure.ioctl) {
    return `no device is behind ${failure.path} (gone, or its driver not loaded): check it with lsblk`;
  }
  if (code !== 'ENODEV') return undefined;
  if (failure.syscall === 'mount') return 'the kernel has no driver for this filesystem type: load its module (e.g. "modprobe xfs") as root';
  // A device the table names is missing: the table loader says which table.
  if (failure.ioctl === 'DM_TABLE_LOAD') return undefined;
  if (failure.ioctl?.startsWith('DM_')) return `the device-mapper driver or a target module is missing: ${LOAD_DM_MOD}, and "modprobe dm-snapshot" for snapshots`;
  return 'the driver of this device is not loaded, or the device is gone: check dmesg';
}

/** Advice for the user, keyed by what failed; undefined when there is nothing useful to add. */
function advice(failure: SyscallFailure, code: string): string | undefined {
  const driver = driverAdvice(failure, code);
  if (driver) return driver;
  if (code === 'EACCES' || code === 'EPERM') {
    return 'device-mapper and block-device queries need root (CAP_SYS_ADMIN): run as root';
  }
  if (failure.syscall === 'dlopen') {
    return 'dmsnap reads device signatures with libblkid: install it (Debian: libblkid1, part of util-linux)';
  }
  if (code === 'ENOTBLK') return 'name a block device such as /dev/sdb1, /dev/md2 or /dev/loop0';
  if (code === 'ENOENT' && !failure.ioctl) return 'check the path';
  const missing = missingDeviceAdvice(failure, code);
  if (missing) return missing;
  if (code === 'EBUSY') {
    switch (failure.ioctl) {
      case 'DM_DEV_REMOVE':
        return 'the device is in use (mounted, held open, or used by another device-mapper table): unmount it or remove its users first, or remove it deferred';
      case 'DM_DEV_CREATE':
        return 'a device with that name or uuid already exists';
      case 'DM_DEV_RENAME':
        return 'a device with the new name or uuid already exists';
      default:
        return undefined;
    }
  }
  if (code === 'EINVAL' && failure.ioctl === 'DM_DEV_RENAME') {
    return 'the device already has a uuid, and a uuid cannot be changed';
  }
  if ((code === 'ENOTTY' || code === 'EINVAL') && failure.ioctl === 'DM_DEV_ARM_POLL') {
    return 'this kernel has no DM_DEV_ARM_POLL (device-mapper 4.36 or later needed)';
  }
  return undefined;
}

/**
 * The message of a failed system call: what failed, the errno's text and code, and advice
 * when there is some, e.g. 'open /dev/sdx failed: no such file or directory (ENOENT); check the path'.
 */
export function explainFailure(failure: SyscallFailure): string {
  const code = errnoCode(failure.errno);
  const reason = code === 'ENOTBLK' ? 'not a block device' : errnoText(failure.errno);
  const hint = advice(failure, code);
  return `${subject(failure)} failed: ${reason} (${code})${hint ? `; ${hint}` : ''}`;
}

/**
 * Adds what only the caller knows (the table text, the message sent) to an error's
 * message and stack.
 */
export function appendHint(error: Error, hint: string): void {
  const old = error.message;
  error.message = `${old}; ${hint}`;
  if (error.stack?.includes(old)) error.stack = error.stack.replace(old, error.message);
}
