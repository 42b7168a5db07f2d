/**
 * The dm device state machine's ioctls on devices themselves (dm-ioctl.c): lookups,
 * the status header, DM_DEV_CREATE, DM_DEV_REMOVE, DM_DEV_RENAME and DM_LIST_DEVICES.
 */
import type { NativeDeviceInfo, NativeDeviceRef, NativeListEntry } from '../../../lib/native';
import * as C from './constants';
import { dmUevent, issueGlobalEvent, tableEvent } from './events';
import { refuse, type FakeState, type MappedDevice } from './model';
import { openCount, removeNow, scheduleDeferredRemovals } from './opens';
import { byteLength, field } from './parse';
import { dmKey, mdByMinor, mdByUuid } from './paths';

/** validate_params: flags the kernel always clears on input. */
export const cleanFlags = (flags: number) => (flags & ~(C.BUFFER_FULL | C.UEVENT_GENERATED | C.SECURE_DATA | C.DATA_OUT)) >>> 0;

/** __find_device_hash_cell: by name, else uuid, else device number; notes an inactive table. */
export function findDevice(s: FakeState, ref: NativeDeviceRef, flags: number): { md: MappedDevice; flags: number } {
  let md: MappedDevice | undefined;
  if (ref.name) md = s.mds.get(field(ref.name, C.NAME_LEN));
  else if (ref.uuid) md = mdByUuid(s, field(ref.uuid, C.UUID_LEN));
  else if (ref.major !== undefined && ref.minor !== undefined && ref.major === C.DM_MAJOR) md = mdByMinor(s, ref.minor);
  if (!md) return refuse(C.ENXIO);
  return { md, flags: md.inactive ? (flags | C.INACTIVE_PRESENT) >>> 0 : (flags & ~C.INACTIVE_PRESENT) >>> 0 };
}

/** __dev_status: the device's state in the header, the rest of the flags as sent. */
export function devStatus(s: FakeState, md: MappedDevice, flagsIn: number, names?: { name: string; uuid: string }): NativeDeviceInfo {
  let flags = flagsIn & ~(C.SUSPEND | C.READONLY | C.ACTIVE_PRESENT | C.INTERNAL_SUSPEND);
  if (md.suspended) flags |= C.SUSPEND;
  if (md.deferredRemove) flags |= C.DEFERRED_REMOVE;
  let targetCount = 0;
  if (md.live) {
    if (!(flags & C.QUERY_INACTIVE)) {
      if (md.diskReadOnly) flags |= C.READONLY;
      targetCount = md.live.targets.length;
    }
    flags |= C.ACTIVE_PRESENT;
  }
  if (flags & C.QUERY_INACTIVE && md.inactive) {
    if (md.inactive.readOnly) flags |= C.READONLY;
    targetCount = md.inactive.targets.length;
  }
  return {
    name: names?.name ?? md.name,
    uuid: names?.uuid ?? md.uuid,
    major: C.DM_MAJOR,
    minor: md.minor,
    openCount: openCount(s, dmKey(md)),
    eventNr: md.eventNr,
    targetCount,
    flags: flags >>> 0,
  };
}

/** The header as sent, for calls that return without __dev_status (DM_DEV_REMOVE). */
function headerAsSent(md: MappedDevice, ref: NativeDeviceRef, flags: number, eventNr: number): NativeDeviceInfo {
  const byNumber = !ref.name && !ref.uuid && ref.major !== undefined && ref.minor !== undefined;
  return {
    name: md.name,
    uuid: md.uuid,
    major: byNumber ? ref.major! : 0,
    minor: byNumber ? ref.minor! : 0,
    openCount: 0,
    eventNr: eventNr >>> 0,
    targetCount: 0,
    flags: flags >>> 0,
  };
}

export function create(s: FakeState, nameIn: string, uuidIn: string, flagsIn: number): NativeDeviceInfo {
  const name = field(nameIn, C.NAME_LEN);
  const uuid = field(uuidIn, C.UUID_LEN);
  let flags = cleanFlags(flagsIn);
  if (!name || name.includes('/')) refuse(C.EINVAL);
  let minor = 0;
  if (flags & C.PERSISTENT_DEV) {
    // The addon sends no device number, so the minor asked for is 0.
    if (mdByMinor(s, 0)) refuse(C.EBUSY);
  } else {
    while (mdByMinor(s, minor)) minor++; // idr_alloc: the lowest free minor
  }
  if (s.mds.has(name) || (uuid && mdByUuid(s, uuid))) refuse(C.EBUSY);
  const md: MappedDevice = {
    name,
    uuid,
    major: C.DM_MAJOR,
    minor,
    eventNr: 0,
    suspended: false,
    deferredRemove: false,
    hasDisk: false,
    diskReadOnly: false,
    removed: false,
  };
  s.mds.set(name, md);
  issueGlobalEvent(s);
  flags &= ~C.INACTIVE_PRESENT;
  return devStatus(s, md, flags, { name, uuid });
}

export function remove(s: FakeState, ref: NativeDeviceRef, flagsIn: number, eventNr: number): NativeDeviceInfo {
  const found = findDevice(s, ref, cleanFlags(flagsIn));
  const { md } = found;
  let { flags } = found;
  if (openCount(s, dmKey(md)) > 0) {
    if (!(flags & C.DEFERRED_REMOVE)) refuse(C.EBUSY);
    md.deferredRemove = true;
    issueGlobalEvent(s);
    return headerAsSent(md, ref, flags, eventNr);
  }
  flags &= ~C.DEFERRED_REMOVE;
  if (removeNow(s, md, eventNr >>> 0)) flags |= C.UEVENT_GENERATED;
  issueGlobalEvent(s);
  scheduleDeferredRemovals(s);
  return headerAsSent(md, ref, flags, eventNr);
}

export function rename(s: FakeState, ref: NativeDeviceRef, newValue: string, flagsIn: number, eventNr: number): NativeDeviceInfo {
  let flags = cleanFlags(flagsIn);
  const changeUuid = (flags & C.UUID_FLAG) !== 0;
  if (!newValue || byteLength(newValue) > (changeUuid ? C.UUID_LEN : C.NAME_LEN) - 1) refuse(C.EINVAL);
  if (!changeUuid && newValue.includes('/')) refuse(C.EINVAL);
  if (changeUuid ? mdByUuid(s, newValue) : s.mds.has(newValue)) refuse(C.EBUSY);
  // dm_hash_rename looks the device up by the request's name only.
  const oldName = ref.name ? field(ref.name, C.NAME_LEN) : '';
  const md = s.mds.get(oldName);
  if (!md) return refuse(C.ENXIO);
  if (changeUuid && md.uuid) refuse(C.EINVAL);
  if (changeUuid) {
    md.uuid = newValue;
  } else {
    s.mds.delete(md.name);
    md.name = newValue;
    s.mds.set(newValue, md);
  }
  if (md.live) tableEvent(s, md);
  if (dmUevent(s, md, 'change', eventNr >>> 0)) flags |= C.UEVENT_GENERATED;
  issueGlobalEvent(s);
  // __dev_status leaves the request's name and uuid fields as they were sent.
  return devStatus(s, md, flags, { name: oldName, uuid: '' });
}

/** With DM_UUID_FLAG: the uuid (null for none) from interface 4.45 on; before that only event_nr follows the name. */
export function listDevices(s: FakeState): NativeListEntry[] {
  const [major, minor] = s.system.driverVersion;
  const listsUuids = major > 4 || (major === 4 && minor >= 45);
  return [...s.mds.values()]
    .sort((a, b) => Buffer.compare(Buffer.from(a.name), Buffer.from(b.name)))
    .map((md) => ({ name: md.name, major: C.DM_MAJOR, minor: md.minor, eventNr: md.eventNr, ...(listsUuids ? { uuid: md.uuid || null } : {}) }));
}
