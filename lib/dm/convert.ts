/**
 * Between the client's types and the addon's: device references checked and turned into
 * the addon's form, the kernel's replies into DeviceInfo and TargetLine, flags from options.
 */
import type { NativeDeviceInfo, NativeDeviceRef, NativeTarget } from '../native';
import { sectors } from '../units';
import { check, checkInteger } from '../validate';
import { checkDeviceName, checkDeviceUuid } from './names';
import { checkTable, parseTable, type TargetLine } from './table';
import type { DeviceInfo, DeviceRef, SuspendOptions } from './types';

type Constants = Readonly<Record<string, number>>;

/** A table as lines, parsed if given as text, and checked. */
export function checkedTable(table: readonly TargetLine[] | string): TargetLine[] {
  const lines = typeof table === 'string' ? parseTable(table) : [...table];
  checkTable(lines);
  return lines;
}

/** DM_SKIP_LOCKFS_FLAG and DM_NOFLUSH_FLAG as the options ask. */
export function suspendFlags(options: SuspendOptions, constants: Constants): number {
  return (options.skipLockfs ? constants.DM_SKIP_LOCKFS_FLAG! : 0) | (options.noFlush ? constants.DM_NOFLUSH_FLAG! : 0);
}

/** A checked reference in the addon's form: { name }, { uuid } or { major, minor }. */
export function toNativeRef(ref: DeviceRef): NativeDeviceRef {
  if (typeof ref === 'string') {
    checkDeviceName(ref);
    return { name: ref };
  }
  check(typeof ref === 'object' && ref !== null, 'device', 'a name, { name }, { uuid } or { major, minor }', ref);
  if ('name' in ref) {
    checkDeviceName(ref.name);
    return { name: ref.name };
  }
  if ('uuid' in ref) {
    checkDeviceUuid(ref.uuid);
    return { uuid: ref.uuid };
  }
  checkInteger((ref as { major: unknown }).major, 'major', 0, 0xfffff);
  checkInteger((ref as { minor: unknown }).minor, 'minor', 0, 0xfffff);
  return { major: ref.major, minor: ref.minor };
}

/** The kernel's dm_ioctl header as DeviceInfo, its flags spelled out. */
export function toDeviceInfo(info: NativeDeviceInfo, c: Constants): DeviceInfo {
  const has = (flag: number | undefined) => (info.flags & flag!) !== 0;
  return {
    name: info.name,
    uuid: info.uuid === '' ? null : info.uuid,
    major: info.major,
    minor: info.minor,
    openCount: info.openCount,
    eventNr: info.eventNr,
    targetCount: info.targetCount,
    suspended: has(c.DM_SUSPEND_FLAG),
    readOnly: has(c.DM_READONLY_FLAG),
    liveTable: has(c.DM_ACTIVE_PRESENT_FLAG),
    inactiveTable: has(c.DM_INACTIVE_PRESENT_FLAG),
    deferredRemove: has(c.DM_DEFERRED_REMOVE),
  };
}

/** A target of a table the kernel returned. */
export function toTargetLine(target: NativeTarget): TargetLine {
  return { start: sectors(target.start), length: sectors(target.length), type: target.type, params: target.params };
}
