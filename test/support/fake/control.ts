/**
 * The ioctl front end: a /dev/mapper/control descriptor (NativeControl) whose calls run
 * the fake kernel's ioctls and fail as the addon does (EBADF once closed, EACCES without
 * CAP_SYS_ADMIN, the kernel's errno otherwise), and its event polling.
 */
import { makeSyscallError, type NativeControl, type NativeDeviceInfo, type NativeDeviceRef } from '../../../lib/native';
import { fakeFreeze } from './freeze';
import { EACCES, EBADF } from './constants';
import { cleanFlags, create, devStatus, findDevice, listDevices, remove, rename } from './devices';
import { KernelError, type ControlState, type FakeState } from './model';
import { clear, deps, load, message, resume, suspend, tableStatus } from './table-ioctls';
import { TARGET_VERSIONS } from './targets';

type Ioctl = <T>(name: string, device: string, op: () => T | Promise<T>) => Promise<T>;

function describe(ref: NativeDeviceRef): string {
  if (ref.name) return ref.name;
  if (ref.uuid) return `uuid ${ref.uuid}`;
  if (ref.major !== undefined && ref.minor !== undefined) return `${ref.major}:${ref.minor}`;
  return '';
}

/** One ioctl: EBADF once closed, EACCES without CAP_SYS_ADMIN, else the kernel's answer. */
function ioctlOf(s: FakeState, state: ControlState): Ioctl {
  return async (name, device, op) => {
    const fail = (errno: number): never => {
      throw makeSyscallError({ errno, syscall: 'ioctl', ioctl: name, path: state.path, ...(device ? { device } : {}) });
    };
    if (state.closed) fail(EBADF);
    if (s.system.unprivileged) fail(EACCES);
    try {
      return await op();
    } catch (error) {
      if (error instanceof KernelError) return fail(error.errno);
      throw error;
    }
  };
}

/** DM_DEV_WAIT: answers at once if the event counter moved, else once it does. */
function waitEvent(s: FakeState, ref: NativeDeviceRef, eventNr: number): NativeDeviceInfo | Promise<NativeDeviceInfo> {
  const { md, flags } = findDevice(s, ref, 0);
  if (md.eventNr !== eventNr >>> 0) return devStatus(s, md, flags);
  return new Promise<NativeDeviceInfo>((resolve) => {
    s.waiters.push({ md, eventNr: eventNr >>> 0, wake: () => resolve(devStatus(s, md, flags)) });
  });
}

type DeviceIoctls = Omit<NativeControl, 'path' | 'closed' | 'freeze' | 'armPoll' | 'pollReadable' | 'cancelPoll' | 'close'>;

/** The calls that are one device-mapper ioctl each. */
function deviceIoctls(s: FakeState, ioctl: Ioctl): DeviceIoctls {
  return {
    version: () => ioctl('DM_VERSION', '', () => [...s.system.driverVersion] as [number, number, number]),
    listDevices: () => ioctl('DM_LIST_DEVICES', '', () => listDevices(s)),
    listVersions: () => ioctl('DM_LIST_VERSIONS', '', () => TARGET_VERSIONS.map((v) => ({ name: v.name, version: [...v.version] as [number, number, number] }))),
    create: (name, uuid, flags) => ioctl('DM_DEV_CREATE', name, () => create(s, name, uuid, flags)),
    remove: (ref, flags, eventNr) => ioctl('DM_DEV_REMOVE', describe(ref), () => remove(s, ref, flags, eventNr)),
    rename: (ref, newValue, flags, eventNr) => ioctl('DM_DEV_RENAME', describe(ref), () => rename(s, ref, newValue, flags, eventNr)),
    suspend: (ref, flags) => ioctl('DM_DEV_SUSPEND', describe(ref), () => suspend(s, ref, flags)),
    resume: (ref, flags, eventNr) => ioctl('DM_DEV_SUSPEND', describe(ref), () => resume(s, ref, flags, eventNr)),
    info: (ref, flags) =>
      ioctl('DM_DEV_STATUS', describe(ref), () => {
        const found = findDevice(s, ref, cleanFlags(flags));
        return devStatus(s, found.md, found.flags);
      }),
    waitEvent: (ref, eventNr) => ioctl('DM_DEV_WAIT', describe(ref), () => waitEvent(s, ref, eventNr)),
    load: (ref, targets, flags) => ioctl('DM_TABLE_LOAD', describe(ref), () => load(s, ref, targets, flags)),
    clear: (ref) => ioctl('DM_TABLE_CLEAR', describe(ref), () => clear(s, ref)),
    deps: (ref, flags) => ioctl('DM_TABLE_DEPS', describe(ref), () => deps(s, ref, flags)),
    tableStatus: (ref, flags) => ioctl('DM_TABLE_STATUS', describe(ref), () => tableStatus(s, ref, flags)),
    message: (ref, sector, text) => ioctl('DM_TARGET_MSG', describe(ref), () => message(s, ref, sector, text)),
  };
}

/** Opens a control descriptor on the fake kernel. */
export function openControlState(s: FakeState, path: string): NativeControl {
  const state: ControlState = { path, closed: false, armed: s.globalEventNr, polls: [] };
  s.controls.add(state);
  s.system.openControls++;
  const ioctl = ioctlOf(s, state);
  const control: NativeControl = {
    path,
    get closed() {
      return state.closed;
    },
    freeze: (...args) => fakeFreeze(control, ...args),
    ...deviceIoctls(s, ioctl),
    armPoll: () =>
      ioctl('DM_DEV_ARM_POLL', '', () => {
        state.armed = s.globalEventNr;
      }),
    pollReadable() {
      if (state.closed) return Promise.reject(makeSyscallError({ errno: EBADF, syscall: 'poll', path }));
      if (s.globalEventNr - state.armed > 0) return Promise.resolve(true);
      return new Promise<boolean>((resolve) => state.polls.push(resolve));
    },
    cancelPoll() {
      for (const done of state.polls.splice(0)) done(false);
    },
    close() {
      if (state.closed) return;
      state.closed = true;
      s.controls.delete(state);
      s.system.openControls--;
      for (const done of state.polls.splice(0)) done(false);
    },
  };
  return control;
}
