/**
 * Rules for device-mapper names and uuids, checked before any ioctl so that a bad name
 * fails with a clear message instead of a bare EINVAL from the kernel.
 */
import { check, checkString } from '../validate';

/** Longest name the kernel accepts (DM_NAME_LEN is 128 including the terminating NUL). */
export const MAX_NAME_LENGTH = 127;
/** Longest uuid the kernel accepts (DM_UUID_LEN is 129 including the terminating NUL). */
export const MAX_UUID_LENGTH = 128;

const RESERVED_NAMES = new Set(['.', '..', 'control']);

/** A name that can be a /dev/mapper entry: 1–127 bytes, no '/', not '.', '..' or 'control'. */
export function checkDeviceName(name: unknown, what = 'name'): asserts name is string {
  checkString(name, what);
  const bytes = Buffer.byteLength(name);
  check(bytes > 0 && bytes <= MAX_NAME_LENGTH, what, `1 to ${MAX_NAME_LENGTH} bytes long`, name);
  check(!name.includes('/'), what, "a name without '/' (it becomes a file in /dev/mapper)", name);
  check(!RESERVED_NAMES.has(name), what, "a name other than '.', '..' and 'control'", name);
  check(!/[\0\s]/.test(name), what, 'a name without white space or NUL bytes', name);
}

/** A uuid: 1–128 bytes of printable characters without white space. */
export function checkDeviceUuid(uuid: unknown, what = 'uuid'): asserts uuid is string {
  checkString(uuid, what);
  const bytes = Buffer.byteLength(uuid);
  check(bytes > 0 && bytes <= MAX_UUID_LENGTH, what, `1 to ${MAX_UUID_LENGTH} bytes long`, uuid);
  check(!/[\0\s]/.test(uuid), what, 'a uuid without white space or NUL bytes', uuid);
}
