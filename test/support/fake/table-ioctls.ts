/**
 * The dm device state machine's ioctls on tables (dm-ioctl.c, dm.c): DM_TABLE_LOAD,
 * DM_TABLE_CLEAR, DM_DEV_SUSPEND (suspend, and resume with the table swap),
 * DM_TABLE_DEPS, DM_TABLE_STATUS and DM_TARGET_MSG.
 */
import type { NativeDeviceInfo, NativeDeviceRef, NativeTarget } from '../../../lib/native';
import * as C from './constants';
import { cleanFlags, devStatus, findDevice } from './devices';
import { dmUevent, issueGlobalEvent, recordUevent } from './events';
import { refuse, type FakeState, type LoadedTable, type MappedDevice } from './model';
import { scheduleDeferredRemovals } from './opens';
import { splitArgs } from './parse';
import { activateSnapshots, checkHandovers } from './snapshot';
import { areasInvalid, buildTable } from './tables';
import { statusText, tableParams } from './targets';

function destroyTable(s: FakeState, table: LoadedTable | undefined): void {
  if (table) table.devices.clear();
  scheduleDeferredRemovals(s);
}

export function suspend(s: FakeState, ref: NativeDeviceRef, flagsIn: number): NativeDeviceInfo {
  const { md, flags } = findDevice(s, ref, cleanFlags(flagsIn | C.SUSPEND));
  md.suspended = true;
  return devStatus(s, md, flags);
}

/** dm_swap_table: the inactive table goes live (a table without data devices keeps the live limits). */
function swapTable(s: FakeState, md: MappedDevice, newMap: LoadedTable): LoadedTable | undefined {
  md.suspended = true;
  const keepLimits = newMap.devices.size === 0 && md.live;
  if (!keepLimits && areasInvalid(s, newMap)) {
    destroyTable(s, newMap);
    return refuse(C.EINVAL);
  }
  const oldMap = md.live;
  md.live = newMap;
  md.diskReadOnly = newMap.readOnly;
  issueGlobalEvent(s);
  return oldMap;
}

export function resume(s: FakeState, ref: NativeDeviceRef, flagsIn: number, eventNr: number): NativeDeviceInfo {
  const found = findDevice(s, ref, cleanFlags(flagsIn & ~C.SUSPEND));
  const { md } = found;
  let flags = found.flags & ~C.INACTIVE_PRESENT;
  const newMap = md.inactive;
  md.inactive = undefined;
  let oldMap: LoadedTable | undefined;
  try {
    if (newMap) oldMap = swapTable(s, md, newMap);
    if (md.suspended) {
      // dm_resume needs a live table with sectors in it.
      if (!md.live || md.live.size === 0) refuse(C.EINVAL);
      checkHandovers(md);
      md.suspended = false;
      activateSnapshots(md);
      if (dmUevent(s, md, 'change', eventNr >>> 0)) flags |= C.UEVENT_GENERATED;
    }
    return devStatus(s, md, flags);
  } finally {
    if (oldMap) destroyTable(s, oldMap);
  }
}

export function load(s: FakeState, ref: NativeDeviceRef, specs: NativeTarget[], flagsIn: number): NativeDeviceInfo {
  const found = findDevice(s, ref, cleanFlags(flagsIn));
  const { md } = found;
  const table = buildTable(s, md, specs, (found.flags & C.READONLY) !== 0);
  if (!md.hasDisk) {
    // The first table sets up the queue (limits checked now) and adds the disk.
    if (areasInvalid(s, table)) refuse(C.EINVAL);
    md.hasDisk = true;
    recordUevent(s, md, 'add', 0);
  }
  const old = md.inactive;
  md.inactive = table;
  const info = devStatus(s, md, found.flags | C.INACTIVE_PRESENT);
  destroyTable(s, old);
  return info;
}

export function clear(s: FakeState, ref: NativeDeviceRef): NativeDeviceInfo {
  const { md, flags } = findDevice(s, ref, 0);
  const old = md.inactive;
  md.inactive = undefined;
  const info = devStatus(s, md, flags & ~C.INACTIVE_PRESENT);
  destroyTable(s, old);
  return info;
}

function chosenTable(md: MappedDevice, flags: number): LoadedTable | undefined {
  return flags & C.QUERY_INACTIVE ? md.inactive : md.live;
}

export function deps(s: FakeState, ref: NativeDeviceRef, flagsIn: number): { info: NativeDeviceInfo; devices: [number, number][] } {
  const { md, flags } = findDevice(s, ref, cleanFlags(flagsIn));
  const info = devStatus(s, md, flags);
  // The kernel adds each device at the head of the table's list.
  const held = [...(chosenTable(md, flags)?.devices.values() ?? [])].reverse();
  return { info, devices: held.map(({ dev }) => [dev.major, dev.minor] as [number, number]) };
}

export function tableStatus(s: FakeState, ref: NativeDeviceRef, flagsIn: number): { info: NativeDeviceInfo; targets: NativeTarget[] } {
  const { md, flags } = findDevice(s, ref, cleanFlags(flagsIn));
  const info = devStatus(s, md, flags);
  const table = chosenTable(md, flags);
  if (!table) return { info, targets: [] };
  info.targetCount = table.targets.length;
  const targets = table.targets.map((t) => ({
    start: t.start,
    length: t.length,
    type: t.type,
    params: flags & C.STATUS_TABLE ? tableParams(t) : statusText(s, t),
  }));
  return { info, targets };
}

/** Messages for the dm core itself ("@…"). */
function coreMessage(md: MappedDevice, argv: string[]): string | null {
  const word = argv[0]!.toLowerCase();
  if (word === '@cancel_deferred_remove') {
    if (argv.length !== 1) refuse(C.EINVAL);
    md.deferredRemove = false;
    return null;
  }
  if (word === '@stats_list') return '';
  return refuse(C.EINVAL);
}

export function message(s: FakeState, ref: NativeDeviceRef, sector: number, text: string): string | null {
  const { md } = findDevice(s, ref, 0);
  const argv = splitArgs(text);
  if (argv.length === 0) refuse(C.EINVAL);
  if (argv[0]!.startsWith('@')) return coreMessage(md, argv);
  // Without a live table the kernel returns 2 from the ioctl, having done nothing.
  if (!md.live) return null;
  const target = md.live.targets.find((t) => sector >= t.start && sector < t.start + t.length);
  if (!target) return refuse(C.EINVAL);
  const handler = s.system.messageHandlers.get(target.type);
  if (!handler) return refuse(C.EINVAL);
  const reply = handler(argv, { start: target.start, length: target.length, type: target.type, params: target.params });
  if (reply !== null && typeof reply === 'object') return refuse(reply.errno);
  return reply;
}
