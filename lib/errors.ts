/**
 * Errors raised by dmsnap. Every error has a `code` that programs can match on; errors
 * from system calls also carry `errno`, `syscall` and `path`, as Node's own fs errors do.
 */
import { getSystemErrorMap } from 'node:util';

/**
 * The codes of dmsnap's own refusals and failures. The list is part of the API: a code
 * keeps its meaning once released.
 */
export const DMSNAP_ERROR_CODES = [
  'ERR_DMSNAP_ADDON',
  'ERR_DMSNAP_CLOSED',
  'ERR_DMSNAP_COW_FILE_EXISTS',
  'ERR_DMSNAP_COW_FILE_UNSUITABLE',
  'ERR_DMSNAP_COW_HAS_DATA',
  'ERR_DMSNAP_COW_IN_ORIGIN',
  'ERR_DMSNAP_COW_TOO_SMALL',
  'ERR_DMSNAP_GUARDIAN',
  'ERR_DMSNAP_HAS_SNAPSHOTS',
  'ERR_DMSNAP_HOOK_FAILED',
  'ERR_DMSNAP_IMAGE_MISMATCH',
  'ERR_DMSNAP_INCONSISTENT',
  'ERR_DMSNAP_LOCKED',
  'ERR_DMSNAP_MERGE_FAILED',
  'ERR_DMSNAP_MERGING',
  'ERR_DMSNAP_MOUNTED',
  'ERR_DMSNAP_NOT_AN_ORIGIN',
  'ERR_DMSNAP_NOT_FOUND',
  'ERR_DMSNAP_NOT_TRACKED',
  'ERR_DMSNAP_NOT_MOUNTED',
  'ERR_DMSNAP_NOT_PERSISTENT',
  'ERR_DMSNAP_NO_FINGERPRINT',
  'ERR_DMSNAP_NO_SNAPSHOT_TARGET',
  'ERR_DMSNAP_OUTPUT_IN_ORIGIN',
  'ERR_DMSNAP_SNAPSHOT_FAILED',
  'ERR_DMSNAP_SNAPSHOT_INVALID',
  'ERR_DMSNAP_UNKNOWN_FILESYSTEM',
  'ERR_DMSNAP_UNSAFE_CACHE_DIR',
  'ERR_DMSNAP_UNSAFE_COW_FILE',
  'ERR_DMSNAP_UNSAFE_FILESYSTEM',
  'ERR_DMSNAP_UNSAFE_LOCK_DIR',
  'ERR_DMSNAP_UNSAFE_LOCK_FILE',
  'ERR_DMSNAP_UNSAFE_MOUNT_DIR',
  'ERR_INVALID_ARG_TYPE',
  'ERR_INVALID_ARG_VALUE',
] as const;

/** One of dmsnap's own codes. */
export type DmsnapOwnCode = (typeof DMSNAP_ERROR_CODES)[number];

/** The name of an errno value, as Node's errors carry it: 'ENOENT', 'EBUSY', … ('E' and the number when unnamed). */
export type ErrnoCode = `E${string}`;

/** Every `code` a DmsnapError can carry: dmsnap's own, or the errno of a failed system call. */
export type DmsnapErrorCode = DmsnapOwnCode | ErrnoCode;

/** Base class of every error dmsnap raises. */
export class DmsnapError extends Error {
  /** A stable, machine-readable code such as 'EBUSY' or 'ERR_INVALID_ARG_VALUE'. */
  readonly code: DmsnapErrorCode;

  constructor(message: string, code: DmsnapErrorCode, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
    this.code = code;
  }
}

/** An argument failed validation; nothing was sent to the kernel. */
export class InvalidArgumentError extends DmsnapError {
  constructor(message: string, code: 'ERR_INVALID_ARG_VALUE' | 'ERR_INVALID_ARG_TYPE' = 'ERR_INVALID_ARG_VALUE') {
    super(message, code);
  }
}

/** The facts of a failed system call, as the native addon reports them. */
export interface SyscallFailure {
  /** Positive errno value from the kernel. */
  errno: number;
  syscall: string;
  /** The ioctl, when the call was one: e.g. 'DM_DEV_REMOVE' or 'BLKGETSIZE64'. */
  ioctl?: string;
  path?: string;
  /** The device-mapper device the call was about: its name, "uuid UUID" or MAJOR:MINOR. */
  device?: string;
}

/** A system call on a file failed (open, stat, a block-device ioctl, …). */
export class SyscallError extends DmsnapError {
  /** Negative errno, as in Node's own errors (-2 for ENOENT). */
  readonly errno: number;
  readonly syscall: string;
  readonly path?: string;

  constructor(message: string, failure: SyscallFailure) {
    super(message, errnoCode(failure.errno));
    this.errno = -Math.abs(failure.errno);
    this.syscall = failure.syscall;
    if (failure.path !== undefined) this.path = failure.path;
  }
}

/** A device-mapper ioctl on the control node failed. */
export class DmError extends SyscallError {
  /** The ioctl command, e.g. 'DM_DEV_REMOVE'. */
  readonly ioctl: string;
  /** The device-mapper device the call was about, if any. */
  readonly device?: string;

  constructor(message: string, failure: SyscallFailure & { ioctl: string }) {
    super(message, failure);
    this.ioctl = failure.ioctl;
    if (failure.device !== undefined) this.device = failure.device;
  }
}

// Linux errno values that libuv (and so Node) does not name.
const LINUX_ONLY_ERRNO: Record<number, [string, string]> = {
  10: ['ECHILD', 'no child processes'],
  15: ['ENOTBLK', 'block device required'],
  43: ['EIDRM', 'identifier removed'],
  61: ['ENODATA', 'no data available'],
  62: ['ETIME', 'timer expired'],
  77: ['EBADFD', 'file descriptor in bad state'],
  116: ['ESTALE', 'stale file handle'],
  121: ['EREMOTEIO', 'remote I/O error'],
};

function lookup(errno: number): [string, string] | undefined {
  const n = Math.abs(errno);
  return LINUX_ONLY_ERRNO[n] ?? getSystemErrorMap().get(-n);
}

/** 'ENOENT' for 2, as Node names errno values. */
export function errnoCode(errno: number): ErrnoCode {
  return (lookup(errno)?.[0] as ErrnoCode | undefined) ?? `E${Math.abs(errno)}`;
}

/** A short text for an errno value ('no such file or directory'). */
export function errnoText(errno: number): string {
  return lookup(errno)?.[1] ?? `errno ${Math.abs(errno)}`;
}
