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

/** Advice for the user, keyed by what failed; undefined when there is nothing useful to add. */
function advice(failure: SyscallFailure, code: string): string | undefined {
  const onControl = failure.path !== undefined && CONTROL_NODE.test(failure.path) && !failure.ioctl;
  if (onControl && code === 'ENOENT') {
    return 'the device-mapper driver is not loaded: run "modprobe dm-mod" as root';
  }
  if (code === 'EACCES' || code === 'EPERM') {
    return 'device-mapper and block-device queries need root (CAP_SYS_ADMIN): run as root';
  }
  if (code === 'ENOTBLK') return 'name a block device such as /dev/sdb1, /dev/md2 or /dev/loop0';
  if (code === 'ENOENT' && !failure.ioctl) return 'check the path';
  if (code === 'ENXIO' && failure.device) return `no device-mapper device named "${failure.device}" exists`;
  return undefined;
}

export function explainFailure(failure: SyscallFailure): string {
  const code = errnoCode(failure.errno);
  const reason = code === 'ENOTBLK' ? 'not a block device' : errnoText(failure.errno);
  const hint = advice(failure, code);
  return `${subject(failure)} failed: ${reason} (${code})${hint ? `; ${hint}` : ''}`;
}
