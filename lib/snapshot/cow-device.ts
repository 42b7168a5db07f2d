/**
 * The COW device, opened once, exclusively and for writing, from its first check to its
 * zeroing. Every check reads the device that descriptor holds and the zeroing writes it,
 * so a path swapped in between (a symlink in a directory another user controls, a node
 * udev renames) can never have one device checked and another zeroed. The snapshot
 * table then names the COW by that device's number, never by its path.
 */
import type { BlockDeviceInfo } from '../system/block-device';
import { DmsnapError, SyscallError } from '../errors';
import { checkOpenCowIsBlank, type DeviceSignature } from '../safety/signatures';
import { devKey } from '../system/stack';
import type { HeldBlockDevice } from '../system/held-device';
import type { System } from '../system/system';

/** The COW held open, and what the kernel says of it. */
export interface OpenCow {
  device: HeldBlockDevice;
  info: BlockDeviceInfo;
}

/**
 * Opens the COW exclusively and writable, and queries it through that descriptor. A
 * failed open rejects with the system's error: explainOpenFailure turns it into the
 * refusal, once the caller knows the origin's devices.
 */
export async function openCow(system: System, path: string): Promise<OpenCow> {
  const device = await system.openBlockDevice(path, { exclusive: true, writable: true });
  try {
    return { device, info: await device.info() };
  } catch (error) {
    device.close();
    throw cannotUse(path, error);
  }
}

/** checkCowIsBlank of the open COW, its read errors named as such. */
export async function checkOpenCow(cow: OpenCow, force: boolean): Promise<DeviceSignature[]> {
  try {
    return await checkOpenCowIsBlank(cow.device, force);
  } catch (error) {
    if (error instanceof SyscallError) {
      throw new DmsnapError(`cannot read the COW device ${cow.info.path} to check that it holds no data: ${error.message}`, error.code, { cause: error });
    }
    throw error;
  }
}

/**
 * The refusal of a COW that could not be opened exclusively for writing. A busy device
 * of the origin's own stack (its backing disk, held by NAME-real) is `inOrigin`'s error,
 * not "in use". Errors name the path and what to do.
 */
export async function explainOpenFailure(
  system: System,
  path: string,
  error: unknown,
  inOrigin: (key: string) => DmsnapError | undefined,
): Promise<unknown> {
  if (!(error instanceof SyscallError) || error.syscall !== 'open') return error;
  // Which device it was only chooses the message: nothing is written after a failed open.
  const number = await system.deviceNumber(path).catch(() => undefined);
  const origin = number ? inOrigin(devKey(number)) : undefined;
  if (origin) return origin;
  if (error.code === 'EBUSY') {
    return new DmsnapError(`the COW device ${path} is in use (mounted, or held by md, device-mapper or another program); name an unused device`, 'EBUSY', {
      cause: error,
    });
  }
  if (error.code === 'EROFS' || error.code === 'EACCES') {
    const readOnly = await system.blockDevice(path).then((i) => i.readOnly, () => false);
    if (readOnly) return readOnlyCow(path);
  }
  return cannotUse(path, error);
}

export function readOnlyCow(path: string): DmsnapError {
  return new DmsnapError(`the COW device ${path} is read-only; name a writable block device`, 'EROFS');
}

function cannotUse(path: string, error: unknown): unknown {
  if (error instanceof SyscallError) return new DmsnapError(`cannot use ${path} as the COW device: ${error.message}`, error.code, { cause: error });
  return error;
}
