/**
 * The block devices a mounted filesystem writes to, from its st_dev. Most filesystems'
 * st_dev is their block device; btrfs (and other filesystems that hand out anonymous
 * device numbers, major 0) are found by path through /proc/self/mountinfo and, for btrfs,
 * every member device in /sys/fs/btrfs/<uuid>/devices.
 */
import { readdirSync, readFileSync, realpathSync, statSync } from 'node:fs';

import { devKey, parseDevKey, splitDev, type DevNumber } from '../dev-number';

/**
 * The mount source and filesystem type of the filesystem holding `path` (a resolved
 * path), from mountinfo: the mount with the longest mount point that contains it (the
 * last of equal ones: it is on top). By path, not st_dev: a btrfs subvolume's st_dev is
 * not the one mountinfo shows.
 */
export function mountSourceOf(path: string, mountinfo = readMountinfo()): { source: string; fsType: string } | undefined {
  let best: { source: string; fsType: string; point: string } | undefined;
  for (const line of mountinfo.split('\n')) {
    const fields = line.split(' ');
    const dash = fields.indexOf('-', 6);
    if (fields.length < 5 || dash < 0 || dash + 2 >= fields.length) continue;
    const point = unescapeMountinfo(fields[4]);
    const inside = point === '/' || path === point || path.startsWith(`${point}/`);
    if (inside && (!best || point.length >= best.point.length)) best = { point, fsType: fields[dash + 1], source: unescapeMountinfo(fields[dash + 2]) };
  }
  return best && { source: best.source, fsType: best.fsType };
}

/** mountinfo escapes space, tab, newline and backslash as \ooo. */
function unescapeMountinfo(field: string): string {
  return field.replace(/\\([0-7]{3})/g, (_all, octal: string) => String.fromCharCode(parseInt(octal, 8)));
}

function readMountinfo(): string {
  try {
    return readFileSync('/proc/self/mountinfo', 'utf8');
  } catch {
    return '';
  }
}

/** The members of the btrfs filesystem that has `member` among its devices. */
export function btrfsMembers(member: DevNumber, sysfs = '/sys'): DevNumber[] {
  const wanted = devKey(member);
  let filesystems: string[] = [];
  try {
    filesystems = readdirSync(`${sysfs}/fs/btrfs`);
  } catch {
    return [member];
  }
  for (const fsid of filesystems) {
    let names: string[] = [];
    try {
      names = readdirSync(`${sysfs}/fs/btrfs/${fsid}/devices`);
    } catch {
      continue;
    }
    const members = names.flatMap((name) => {
      try {
        const key = parseDevKey(readFileSync(`${sysfs}/fs/btrfs/${fsid}/devices/${name}/dev`, 'utf8').trim());
        return key ? [key] : [];
      } catch {
        return [];
      }
    });
    if (members.some((m) => devKey(m) === wanted)) return members;
  }
  return [member];
}

/**
 * The block devices the filesystem holding `path` lies on, given its st_dev
 * `dev`: `dev` itself for a filesystem on one block device; for an anonymous st_dev, the
 * mount source's device (and, for btrfs, every member). Empty for a filesystem on no block
 * device (tmpfs, proc).
 */
export function filesystemDevices(dev: DevNumber, path: string, options: { mountinfo?: string; sysfs?: string } = {}): DevNumber[] {
  if (dev.major !== 0) return [dev];
  let resolved: string;
  try {
    resolved = realpathSync(path);
  } catch {
    return [];
  }
  const mount = mountSourceOf(resolved, options.mountinfo);
  if (!mount || !mount.source.startsWith('/')) return [];
  let source: DevNumber;
  try {
    const st = statSync(mount.source, { bigint: true });
    if (!st.isBlockDevice()) return [];
    source = splitDev(st.rdev);
  } catch {
    return [];
  }
  return mount.fsType === 'btrfs' ? btrfsMembers(source, options.sysfs ?? '/sys') : [source];
}
