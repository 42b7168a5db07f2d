/**
 * Errors raised by dmsnap. Every error has a `code` that programs can match on; errors
 * from system calls also carry `errno`, `syscall` and `path`, as Node's own fs errors do.
 */
import { getSystemErrorMap } from 'node:util';

/** Base class of every error dmsnap raises. */
export class DmsnapError extends Error {
  /** A stable, machine-readable code such as 'EBUSY' or 'ERR_INVALID_ARG_VALUE'. */
  readonly code: string;

  constructor(message: string, code: string, options?: { cause?: unknown }) {
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
export function errnoCode(errno: number): string {
  return lookup(errno)?.[0] ?? `E${Math.abs(errno)}`;
}

/** A short text for an errno value ('no such file or directory'). */
export function errnoText(errno: number): string {
  return lookup(errno)?.[1] ?? `errno ${Math.abs(errno)}`;
}
