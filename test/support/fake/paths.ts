/**
 * Block devices and the paths that name them: loop devices, nodes made by mknod, udev's
 * /dev/mapper links and devtmpfs's /dev/dm-N, and where a sector of a device really lives.
 */
import { DM_MAJOR, LOOP_MAJOR } from './constants';
import type { DevNumber, FakeState, MappedDevice } from './model';
import type { FakeBlockDevice } from './system';

export const keyOf = (major: number, minor: number) => `${major}:${minor}`;
export const dmKey = (md: MappedDevice) => keyOf(DM_MAJOR, md.minor);

export function mdByMinor(s: FakeState, minor: number): MappedDevice | undefined {
  for (const md of s.mds.values()) if (md.minor === minor) return md;
  return undefined;
}

export function mdByUuid(s: FakeState, uuid: string): MappedDevice | undefined {
  for (const md of s.mds.values()) if (md.uuid && md.uuid === uuid) return md;
  return undefined;
}

/** The dm device behind a device number, if it is one. */
export function mdOf(s: FakeState, dev: DevNumber): MappedDevice | undefined {
  return dev.major === DM_MAJOR ? mdByMinor(s, dev.minor) : undefined;
}

export function loopByNumber(s: FakeState, major: number, minor: number): FakeBlockDevice | undefined {
  for (const device of s.system.blockDevices.values()) if (device.major === major && device.minor === minor) return device;
  return undefined;
}

/** The paths a program sees: block devices, nodes made by mknod, udev's /dev/block/MAJOR:MINOR, and other files. */
export function lookupPath(s: FakeState, path: string): DevNumber | 'other' | undefined {
  const block = /^\/dev\/block\/(\d+):(\d+)$/.exec(path);
  if (block) {
    const dev = { key: path.slice('/dev/block/'.length), major: Number(block[1]), minor: Number(block[2]) };
    return openable(s, dev) ? dev : undefined;
  }
  const device = s.system.blockDevices.get(path);
  if (device) return { key: keyOf(device.major, device.minor), major: device.major, minor: device.minor };
  const node = s.system.nodes.get(path);
  if (node) return { key: keyOf(node.major, node.minor), major: node.major, minor: node.minor };
  if (s.system.otherFiles.has(path) || s.system.files.has(path) || (s.system.dmLoaded && path === '/dev/mapper/control')) return 'other';
  return undefined;
}

/** Also /dev/mapper/NAME (as udev makes it) and /dev/dm-N (devtmpfs) once the disk exists. */
export function lookupDevicePath(s: FakeState, path: string): DevNumber | 'other' | undefined {
  const found = lookupPath(s, path);
  if (found) return found;
  const mapper = /^\/dev\/mapper\/(.+)$/.exec(path);
  const numbered = /^\/dev\/dm-(\d+)$/.exec(path);
  const md = mapper ? s.mds.get(mapper[1]!) : numbered ? mdByMinor(s, Number(numbered[1])) : undefined;
  return md?.hasDisk ? { key: dmKey(md), major: DM_MAJOR, minor: md.minor } : undefined;
}

/** Whether a device number can be opened: an attached loop device or a dm device with a disk. */
export function openable(s: FakeState, dev: DevNumber): boolean {
  if (loopByNumber(s, dev.major, dev.minor)) return true;
  if (dev.major !== DM_MAJOR) return false;
  const md = mdByMinor(s, dev.minor);
  return !!md && md.hasDisk && !md.removed;
}

/** Size in sectors; a dm device is as large as its live table. */
export function sizeOf(s: FakeState, dev: DevNumber): number {
  const loop = loopByNumber(s, dev.major, dev.minor);
  if (loop) return Math.floor(loop.sizeBytes / 512);
  return mdOf(s, dev)?.live?.size ?? 0;
}

export function logicalSectors(s: FakeState, dev: DevNumber): number {
  const loop = loopByNumber(s, dev.major, dev.minor);
  return loop ? Math.max(1, loop.logicalSectorSize / 512) : 1;
}

/** Where a sector of a device really lives: follows linear dm tables down to a disk. */
export function storageKey(s: FakeState, dev: DevNumber, sector = 0): string {
  const target = mdOf(s, dev)?.live?.targets.find((t) => sector >= t.start && sector < t.start + t.length);
  if (target?.mapping.kind === 'linear') {
    return storageKey(s, target.mapping.dev, target.mapping.offset + (sector - target.start));
  }
  return `${dev.key}@${sector}`;
}

/** A device named by a dm name, a path, or "MAJOR:MINOR", for the test helpers. */
export function resolveForTest(s: FakeState, nameOrPath: string): DevNumber {
  const md = s.mds.get(nameOrPath);
  if (md) return { key: dmKey(md), major: DM_MAJOR, minor: md.minor };
  const number = /^(\d+):(\d+)$/.exec(nameOrPath);
  const found = number
    ? { key: nameOrPath, major: Number(number[1]), minor: Number(number[2]) }
    : lookupDevicePath(s, nameOrPath);
  if (!found || found === 'other' || !openable(s, found)) throw new Error(`fake: no block device ${nameOrPath}`);
  return found;
}

/** FakeSystem.addLoopDevice: a loop device (major 7, the next free minor); returns its path. */
export function addLoopDevice(s: FakeState, sizeBytes: number, options: { logicalSectorSize?: number; readOnly?: boolean } = {}): string {
  let minor = 0;
  while (loopByNumber(s, LOOP_MAJOR, minor)) minor++;
  const path = `/dev/loop${minor}`;
  s.system.blockDevices.set(path, {
    sizeBytes,
    logicalSectorSize: options.logicalSectorSize ?? 512,
    physicalSectorSize: options.logicalSectorSize ?? 512,
    readOnly: options.readOnly ?? false,
    major: LOOP_MAJOR,
    minor,
  });
  return path;
}
