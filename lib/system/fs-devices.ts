/**
 * The block devices a mounted filesystem writes to, from its st_dev. Most filesystems'
 * st_dev is their block device; btrfs (and other filesystems that hand out anonymous
 * device numbers, major 0) are found through /proc/self/mountinfo and, for btrfs, every
 * member device in /sys/fs/btrfs/<uuid>/devices.
 */
import { readdirSync, readFileSync, statSync } from 'node:fs';

import { devKey, parseDevKey, splitDev, type DevNumber } from '../dev-number';

/** "MAJ:MIN" → the mount source and filesystem type, from mountinfo (the first mount of that st_dev). */
export function mountSourceOf(dev: DevNumber, mountinfo = readMountinfo()): { source: string; fsType: string } | undefined {
  const key = devKey(dev);
  for (const line of mountinfo.split('\n')) {
    const fields = line.split(' ');
    if (fields[2] !== key) continue;
    const dash = fields.indexOf('-', 6);
    if (dash < 0 || dash + 2 >= fields.length) continue;
    return { fsType: fields[dash + 1], source: unescapeMountinfo(fields[dash + 2]) };
  }
  return undefined;
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
 * The block devices the filesystem with st_dev `dev` lies on: `dev` itself for a
 * filesystem on one block device; for an anonymous st_dev, the mount source's device
 * (and, for btrfs, every member). Empty for a filesystem on no block device (tmpfs, proc).
 */
export function filesystemDevices(dev: DevNumber, options: { mountinfo?: string; sysfs?: string } = {}): DevNumber[] {
  if (dev.major !== 0) return [dev];
  const mount = mountSourceOf(dev, options.mountinfo);
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
