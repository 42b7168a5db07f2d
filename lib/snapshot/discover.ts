/**
 * The kernel is the only record: dmsnap's devices are found by their uuid tags and
 * understood from their tables.
 */
import type { DeviceListEntry, DeviceMapper } from '../dm/device-mapper';
import { parseTag, type Tag } from './tags';

/** A device-mapper device with a dmsnap tag in its uuid. */
export interface TaggedDevice extends DeviceListEntry {
  /** The tag, parsed from the uuid. */
  tag: Tag;
}

/**
 * The devices of one origin, grouped by the originId in their tags. origin or real may be
 * missing after an interrupted prepare or release (see recover).
 */
export interface OriginGroup {
  /** The 16 hex digits shared by the group's tags. */
  originId: string;
  /** NAME, the wrapper the filesystem is mounted on. */
  origin?: TaggedDevice;
  /** NAME-real, the linear mapping of the backing device that snapshots read from. */
  real?: TaggedDevice;
  /** The snapshot devices, by name. */
  snaps: TaggedDevice[];
  /** The COW mappings of persistent snapshots (NAME-SNAP-cow, tag role 'cow'). */
  cows: TaggedDevice[];
}

/** Every dmsnap device, grouped by origin. Devices without dmsnap's tag are left out. */
export async function scanGroups(dm: DeviceMapper): Promise<Map<string, OriginGroup>> {
  const groups = new Map<string, OriginGroup>();
  for (const device of await dm.list()) {
    const tag = parseTag(device.uuid);
    if (!tag) continue;
    const group = groups.get(tag.originId) ?? { originId: tag.originId, snaps: [], cows: [] };
    const tagged: TaggedDevice = { ...device, tag };
    if (tag.role === 'origin') group.origin = tagged;
    else if (tag.role === 'real') group.real = tagged;
    else if (tag.role === 'cow') group.cows.push(tagged);
    else group.snaps.push(tagged);
    groups.set(tag.originId, group);
  }
  return groups;
}
