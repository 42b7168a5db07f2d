/** The fake NativeBinding: the control node, then the block-device, udev, mount, guardian, lock and loop calls. */
import type { NativeBinding, NativeControl } from '../../../lib/native';
import { blockDeviceCalls, failOpen } from './block-devices';
import { DM_CONSTANTS, EACCES, ENOENT } from './constants';
import { openControlState } from './control';
import { hostCalls } from './host';
import { loopCalls } from './loop';
import type { FakeState } from './model';
import { destroyCookie, udevCookieAdd, udevCookieCreate, udevCookieWait } from './udev';

export function fakeBinding(s: FakeState): NativeBinding {
  return {
    constants: DM_CONSTANTS,
    async openControl(path: string): Promise<NativeControl> {
      if (!s.system.dmLoaded || path !== '/dev/mapper/control') failOpen(ENOENT, 'open', path);
      if (s.system.unprivileged) failOpen(EACCES, 'open', path);
      return openControlState(s, path);
    },
    ...blockDeviceCalls(s),
    udevCookieCreate: () => udevCookieCreate(s),
    udevCookieAdd: (semid, delta) => udevCookieAdd(s, semid, delta),
    udevCookieWait: (semid, timeoutMs) => udevCookieWait(s, semid, timeoutMs),
    udevCookieDestroy: (semid) => destroyCookie(s, semid, true),
    ...hostCalls(s),
    ...loopCalls(s),
  };
}
