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
