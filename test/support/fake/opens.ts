/**
 * Who holds a device open: tables (dm's claim) and programs (mounts, exclusive opens),
 * the open count DM_DEV_STATUS reports, and what waits for the last closer: deferred
 * removals, and the detach of an autoclear loop device.
 */
import { EBUSY, EINVAL, ENOENT, ENOTBLK, ENXIO, EOVERFLOW, LOOP_CONSTANTS, MINOR_BITS } from './constants';
import { dmUevent, recordUevent, tableEvent, wakeWaiters } from './events';
import { refuse, type DevNumber, type FakeState, type LoadedTable, type MappedDevice } from './model';
import { dmKey, keyOf, lookupDevicePath, openable, resolveForTest } from './paths';

/** dm_open_count of a device: one open per (holding dm device, mode), plus programs' opens. */
export function openCount(s: FakeState, key: string): number {
  let count = s.externalOpens.get(key)?.count ?? 0;
  for (const md of s.mds.values()) {
    const modes = new Set<number>();
    for (const table of [md.live, md.inactive]) {
      const held = table?.devices.get(key);
      if (held) modes.add(held.mode);
    }
    count += modes.size;
  }
  return count;
}

/** Whether any table holds the device (dm claims it with one shared holder). */
export function claimedByTables(s: FakeState, key: string): boolean {
  for (const md of s.mds.values()) if (md.live?.devices.has(key) || md.inactive?.devices.has(key)) return true;
  return false;
}

/** Whether an exclusive open of the device fails with EBUSY: a table or an exclusive program holds it. */
export function heldExclusively(s: FakeState, key: string): boolean {
  return claimedByTables(s, key) || (s.externalOpens.get(key)?.exclusive ?? 0) > 0;
}

/** Counts a program's open of a device; returns its close, which runs once. */
export function addOpen(s: FakeState, key: string, exclusive: boolean): () => void {
  const opens = s.externalOpens.get(key) ?? { count: 0, exclusive: 0 };
  opens.count++;
  if (exclusive) opens.exclusive++;
  s.externalOpens.set(key, opens);
  let open = true;
  return () => {
    if (!open) return;
    open = false;
    opens.count--;
    if (exclusive) opens.exclusive--;
    if (opens.count === 0) s.externalOpens.delete(key);
    scheduleDeferredRemovals(s);
  };
}

/** Detaches a bound loop device: its block device goes, its node stays. */
export function unbindLoop(s: FakeState, device: string): void {
  s.loops.delete(device);
  s.system.blockDevices.delete(device);
}

/** lo_release with LO_FLAGS_AUTOCLEAR: a loop no table and no program holds any more is detached. */
export function clearUnusedLoops(s: FakeState): void {
  for (const [device, loop] of s.loops) {
    if (loop.flags & LOOP_CONSTANTS.LO_FLAGS_AUTOCLEAR! && openCount(s, loop.dev.key) === 0) unbindLoop(s, device);
  }
}

/** FakeSystem.openBlockDevice: a program's open of a device, by dm name or path. */
export function openForTest(s: FakeState, nameOrPath: string, options: { exclusive?: boolean } = {}): () => void {
  const dev = resolveForTest(s, nameOrPath);
  if (options.exclusive && claimedByTables(s, dev.key)) throw new Error(`fake: ${nameOrPath} is in use by device-mapper (EBUSY)`);
  return addOpen(s, dev.key, options.exclusive ?? false);
}

/** __hash_remove and dm_destroy: unhash, wake waiters, drop the tables, delete the disk. */
export function destroyDevice(s: FakeState, md: MappedDevice): void {
  s.mds.delete(md.name);
  md.removed = true;
  if (md.live) tableEvent(s, md);
  wakeWaiters(s, md, () => true);
  md.inactive = undefined;
  md.live = undefined;
  for (const key of s.cowMetadata.keys()) if (key.startsWith(`${dmKey(md)}@`)) s.cowMetadata.delete(key);
  clearUnusedLoops(s);
}

/** DM_DEV_REMOVE of a device nobody holds: gone at once, with its uevents; true when the cookie's uevent was sent. */
export function removeNow(s: FakeState, md: MappedDevice, cookie: number): boolean {
  destroyDevice(s, md);
  const sent = dmUevent(s, md, 'remove', cookie);
  if (md.hasDisk) recordUevent(s, md, 'remove', 0); // del_gendisk's own uevent
  return sent;
}

/** dm_deferred_remove: runs on a workqueue once the last opener of a marked device closes. */
export function scheduleDeferredRemovals(s: FakeState): void {
  clearUnusedLoops(s);
  if (s.deferredScheduled) return;
  const next = () => [...s.mds.values()].find((md) => md.deferredRemove && openCount(s, dmKey(md)) === 0);
  if (!next()) return;
  s.deferredScheduled = true;
  setImmediate(() => {
    s.deferredScheduled = false;
    for (let md = next(); md; md = next()) {
      destroyDevice(s, md);
      if (md.hasDisk) recordUevent(s, md, 'remove', 0);
    }
  });
}

/** dm_get_device: resolves a table's device argument and opens it for the table. */
export function getDevice(s: FakeState, table: LoadedTable, arg: string, mode: number): DevNumber {
  const dev = tableDeviceArg(s, arg);
  if (dev.key === dmKey(table.md)) refuse(EINVAL);
  const held = table.devices.get(dev.key);
  if (held) {
    held.mode |= mode;
    return held.dev;
  }
  if (!openable(s, dev)) refuse(ENXIO);
  // Programs holding it exclusively (a mount) keep dm's claim out.
  if ((s.externalOpens.get(dev.key)?.exclusive ?? 0) > 0) refuse(EBUSY);
  table.devices.set(dev.key, { dev, mode });
  return dev;
}

/** A table's device argument: "MAJOR:MINOR" or a path to a block device. */
function tableDeviceArg(s: FakeState, arg: string): DevNumber {
  const number = /^(\d+):(\d+)$/.exec(arg);
  if (number) {
    const major = Number(number[1]);
    const minor = Number(number[2]);
    if (major >= 1 << 12 || minor >= 1 << MINOR_BITS) refuse(EOVERFLOW);
    return { key: keyOf(major, minor), major, minor };
  }
  const found = lookupDevicePath(s, arg);
  if (!found) refuse(s.system.tableDeviceLookupErrno ?? ENOENT);
  if (found === 'other') refuse(s.system.tableDeviceLookupErrno ?? ENOTBLK);
  return found as DevNumber;
}
