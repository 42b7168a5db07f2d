/**
 * The block-device stack around a device, from sysfs: what it is built on (slaves) and
 * what is built on it (holders), all the way down and up. A COW device must lie outside
 * the origin's stack: writing to any of those would corrupt the origin.
 */
import { existsSync, readdirSync, readFileSync, realpathSync, statSync } from 'node:fs';
import { basename } from 'node:path';

import { devKey, splitDev, type DevNumber } from '../dev-number';
import { filesystemDevices } from './fs-devices';

export { devKey, splitDev, type DevNumber };

function sysfsDir(key: string): string | undefined {
  try {
    // realpath(3): one call, where Node's own realpathSync lstats every component.
    return realpathSync.native(`/sys/dev/block/${key}`);
  } catch {
    return undefined;
  }
}

function related(dir: string, kind: 'slaves' | 'holders'): string[] {
  const keys: string[] = [];
  let entries: string[] = [];
  try {
    entries = readdirSync(`${dir}/${kind}`);
  } catch {
    return keys;
  }
  for (const entry of entries) {
    try {
      keys.push(readFileSync(`${dir}/${kind}/${entry}/dev`, 'utf8').trim());
    } catch {
      // gone in the meantime
    }
  }
  return keys;
}

/** The parent disk of a partition (sda for sda1), which shares its blocks. */
function partitionParent(dir: string): string | undefined {
  // existsSync: most devices are not partitions, and a thrown ENOENT costs more than the stat.
  if (!existsSync(`${dir}/partition`)) return undefined;
  try {
    return readFileSync(`${dir}/../dev`, 'utf8').trim();
  } catch {
    return undefined;
  }
}

/** Partitions of a disk, which share its blocks: subfolders named after the disk (sda1 in sda). */
function partitionsOf(dir: string): string[] {
  const keys: string[] = [];
  const disk = basename(dir);
  let entries: string[] = [];
  try {
    entries = readdirSync(dir).filter((entry) => entry.startsWith(disk) && entry !== disk);
  } catch {
    return keys;
  }
  for (const entry of entries) {
    if (!existsSync(`${dir}/${entry}/partition`)) continue;
    try {
      keys.push(readFileSync(`${dir}/${entry}/dev`, 'utf8').trim());
    } catch {
      // not a partition
    }
  }
  return keys;
}

/**
 * The roots and every device `next` leads to from them, transitively (`next` gets each
 * device's sysfs folder and returns "MAJOR:MINOR" keys).
 */
function walk(roots: DevNumber[], next: (dir: string) => string[]): Set<string> {
  const seen = new Set<string>();
  const queue = roots.map(devKey);
  while (queue.length > 0) {
    const key = queue.pop()!;
    if (seen.has(key)) continue;
    seen.add(key);
    const dir = sysfsDir(key);
    if (dir) queue.push(...next(dir));
  }
  return seen;
}

/**
 * Every device that shares blocks with any of `roots`: the roots, everything below them
 * (slaves, parent disks), everything above (holders, partitions), transitively.
 */
export function deviceStack(roots: DevNumber[]): Set<string> {
  return walk(roots, (dir) => {
    const parent = partitionParent(dir);
    return [...related(dir, 'slaves'), ...related(dir, 'holders'), ...partitionsOf(dir), ...(parent ? [parent] : [])];
  });
}

/** /dev/NAME of a device number, from sysfs (undefined when sysfs does not know it). */
export function devicePathOf(dev: DevNumber): string | undefined {
  const dir = sysfsDir(devKey(dev));
  if (!dir) return undefined;
  try {
    const uevent = readFileSync(`${dir}/uevent`, 'utf8');
    const name = /^DEVNAME=(.+)$/m.exec(uevent)?.[1];
    return name ? `/dev/${name}` : undefined;
  } catch {
    return undefined;
  }
}

/** The devices built directly on `dev` (its holders in sysfs), as "MAJOR:MINOR" keys. */
export function holdersOf(dev: DevNumber): string[] {
  const dir = sysfsDir(devKey(dev));
  return dir ? related(dir, 'holders') : [];
}

/**
 * The roots and every device built on them (holders, partitions), transitively: the
 * devices whose writes land on the roots.
 */
export function devicesAbove(roots: DevNumber[]): Set<string> {
  return walk(roots, (dir) => [...related(dir, 'holders'), ...partitionsOf(dir)]);
}

/**
 * The filesystems that hold the backing files of the loop devices at or below `dev`, as
 * "MAJOR:MINOR" keys of the devices they are mounted from (every member of a btrfs); a
 * backing file that cannot be found any more (renamed or deleted) is left out.
 */
export function loopBackingFilesystems(dev: DevNumber): string[] {
  const found: string[] = [];
  walk([dev], (dir) => {
    try {
      const file = readFileSync(`${dir}/loop/backing_file`, 'utf8').replace(/\n$/, '');
      found.push(...filesystemDevices(splitDev(statSync(file, { bigint: true }).dev), file).map(devKey));
    } catch {
      // not a loop device, or its file is gone
    }
    return related(dir, 'slaves');
  });
  return found;
}
