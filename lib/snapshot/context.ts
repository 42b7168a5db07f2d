/**
 * What every lifecycle call needs: a device-mapper client (one per process unless the
 * caller passes its own) and the lock settings.
 */
import { DeviceMapper } from '../dm/device-mapper';
import { UdevFlags } from '../dm/udev';
import type { LockOptions } from '../system/lock';

/** udev must not probe the private layers (NAME-real, snapshots): they hold the same filesystem as the origin. */
export const HIDDEN_LAYER = UdevFlags.disableDiskRules | UdevFlags.disableOtherRules | UdevFlags.disableSubsystemRules;

/** Options every lifecycle call takes: the client to use and the lock settings. */
export interface LifecycleOptions extends LockOptions {
  /** The client to use; by default one shared client per process, opened on first use. */
  dm?: DeviceMapper;
}

let shared: Promise<DeviceMapper> | undefined;

/** The process-wide client (its control descriptor holds no event-loop handle open). */
export function sharedDeviceMapper(): Promise<DeviceMapper> {
  if (!shared) {
    shared = DeviceMapper.open();
    shared.catch(() => {
      shared = undefined;
    });
  }
  return shared;
}

/** The client in `options.dm`, else the shared one. */
export async function clientOf(options: LifecycleOptions): Promise<DeviceMapper> {
  return options.dm ?? sharedDeviceMapper();
}
