/**
 * Backing out of a table swap that failed: whatever the swap got to, the device ends on
 * the table it ran before, live, with nothing waiting in its inactive slot.
 */
import type { DeviceMapper } from '../dm/device-mapper';

/**
 * The staged table dropped (when `staged`), and the device resumed if the failure left it
 * suspended. Best effort: called on a path that already reports an error.
 */
export async function backOutSwap(dm: DeviceMapper, name: string, options: { staged: boolean; udevFlags?: number }): Promise<void> {
  if (options.staged) await dm.clear(name).catch(() => undefined);
  const info = await dm.find(name).catch(() => undefined);
  if (info?.suspended) await dm.resume(name, { skipLockfs: true, ...(options.udevFlags === undefined ? {} : { udevFlags: options.udevFlags }) }).catch(() => undefined);
}
