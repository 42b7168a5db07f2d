/**
 * Block device numbers, and MAJOR:MINOR, the way device-mapper tables, the kernel's
 * replies and /sys/dev/block name a device.
 */

/** A block device number. */
export interface DevNumber {
  major: number;
  minor: number;
}

/** "MAJOR:MINOR", as device-mapper tables and /sys/dev/block name a device. */
export function devKey(dev: DevNumber): string {
  return `${dev.major}:${dev.minor}`;
}

/** The device number in "MAJOR:MINOR" (as the kernel reports table devices); undefined for anything else, such as a path. */
export function parseDevKey(text: string): DevNumber | undefined {
  const match = /^(\d+):(\d+)$/.exec(text);
  return match ? { major: Number(match[1]), minor: Number(match[2]) } : undefined;
}

/** Splits a kernel dev_t (as stat returns it) into major and minor. */
export function splitDev(dev: bigint): DevNumber {
  const major = Number(((dev >> 8n) & 0xfffn) | ((dev >> 32n) & ~0xfffn));
  const minor = Number((dev & 0xffn) | ((dev >> 12n) & ~0xffn));
  return { major, minor };
}
