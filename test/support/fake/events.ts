/**
 * Device-mapper events and uevents: a device's event counter (DM_DEV_WAIT), the global
 * counter (DM_DEV_ARM_POLL), and the uevents a device's kobject sends, which a running
 * udev answers through the request's cookie.
 */
import type { FakeState, MappedDevice } from './model';
import type { FakeUevent } from './system';
import { udevComplete } from './udev';

export function issueGlobalEvent(s: FakeState): void {
  s.globalEventNr++;
  for (const control of s.controls) {
    if (s.globalEventNr - control.armed > 0 && control.polls.length > 0) {
      const polls = control.polls.splice(0);
      for (const done of polls) done(true);
    }
  }
}

/** Wakes the DM_DEV_WAIT callers of a device that `due` picks. */
export function wakeWaiters(s: FakeState, md: MappedDevice, due: (eventNr: number) => boolean): void {
  for (const waiter of [...s.waiters]) {
    if (waiter.md === md && due(waiter.eventNr)) {
      s.waiters.splice(s.waiters.indexOf(waiter), 1);
      waiter.wake();
    }
  }
}

/** dm_table_event: the device's event counter moves and waiters wake. */
export function tableEvent(s: FakeState, md: MappedDevice): void {
  md.eventNr = (md.eventNr + 1) >>> 0;
  wakeWaiters(s, md, (eventNr) => eventNr !== md.eventNr);
  issueGlobalEvent(s);
}

export function recordUevent(s: FakeState, md: MappedDevice, action: FakeUevent['action'], cookie: number): void {
  s.system.uevents.push({ action, name: md.name, minor: md.minor, cookie });
  if (s.system.udevRunning && cookie !== 0) setImmediate(() => udevComplete(s, cookie & 0xffff));
}

/**
 * dm_kobject_uevent: fails (no DM_UEVENT_GENERATED_FLAG) for a device whose disk was
 * never added, because its kobject has no name yet.
 */
export function dmUevent(s: FakeState, md: MappedDevice, action: FakeUevent['action'], cookie: number): boolean {
  if (!md.hasDisk) return false;
  recordUevent(s, md, action, cookie);
  return true;
}
