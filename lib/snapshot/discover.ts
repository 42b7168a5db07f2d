/**
 * The kernel is the only record: dmsnap's devices are found by their uuid tags and
 * understood from their tables.
 */
import type { DeviceListEntry, DeviceMapper } from '../dm/device-mapper';
import { parseTag, type Tag } from './tags';

export interface TaggedDevice extends DeviceListEntry {
  tag: Tag;
}

export interface OriginGroup {
  originId: string;
  origin?: TaggedDevice;
  real?: TaggedDevice;
  snaps: TaggedDevice[];
}

/** Every dmsnap device, grouped by origin. Devices without dmsnap's tag are left out. */
export async function scanGroups(dm: DeviceMapper): Promise<Map<string, OriginGroup>> {
  const groups = new Map<string, OriginGroup>();
  for (const device of await dm.list()) {
    let uuid = device.uuid;
    // Kernels before 4.45 do not list uuids: ask for each device.
    if (uuid === undefined) uuid = (await dm.find({ major: device.major, minor: device.minor }))?.uuid ?? null;
    const tag = parseTag(uuid);
    if (!tag) continue;
    const group = groups.get(tag.originId) ?? { originId: tag.originId, snaps: [] };
    const tagged: TaggedDevice = { ...device, uuid, tag };
    if (tag.role === 'origin') group.origin = tagged;
    else if (tag.role === 'real') group.real = tagged;
    else group.snaps.push(tagged);
    groups.set(tag.originId, group);
  }
  return groups;
}
