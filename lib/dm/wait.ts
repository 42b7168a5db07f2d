/**
 * Waiting for a device's next event, as DM_DEV_WAIT and `dmsetup wait` do, but with
 * DM_DEV_ARM_POLL and poll(2) on a control descriptor of its own: no thread-pool thread
 * is held, and an AbortSignal cancels the wait.
 */
import { DmError } from '../errors';
import { callNative, type NativeBinding, type NativeControl, type NativeDeviceInfo, type NativeDeviceRef } from '../native';
import type { WaitOptions } from './types';

type Call = <T>(op: () => Promise<T>) => Promise<T>;

/** Resolves once the event counter of `ref` differs from `eventNr` (default: its value now). */
export async function waitForEvent(
  binding: NativeBinding,
  control: NativeControl,
  call: Call,
  ref: NativeDeviceRef,
  eventNr: number | undefined,
  options: WaitOptions,
): Promise<NativeDeviceInfo> {
  const signals = [options.signal, options.timeoutMs === undefined ? undefined : AbortSignal.timeout(options.timeoutMs)];
  const active = signals.filter((s): s is AbortSignal => s !== undefined);
  const signal = active.length > 1 ? AbortSignal.any(active) : active[0];
  signal?.throwIfAborted();
  // Follow the device by number: a rename (itself an event) must not lose it.
  const now = await call(() => control.info(ref, 0));
  const byNumber: NativeDeviceRef = { major: now.major, minor: now.minor };
  const target = eventNr ?? now.eventNr;
  const poller = await callNative(() => binding.openControl(control.path));
  const cancel = () => poller.cancelPoll();
  signal?.addEventListener('abort', cancel);
  try {
    for (;;) {
      // Arm first, then look: an event between the two still wakes the poll.
      try {
        await callNative(() => poller.armPoll());
      } catch (error) {
        // Kernels before device-mapper 4.36 have no DM_DEV_ARM_POLL: fall back to
        // DM_DEV_WAIT, which holds a thread-pool thread and cannot be cancelled.
        if (error instanceof DmError && (error.code === 'ENOTTY' || error.code === 'EINVAL')) {
          return await call(() => control.waitEvent(byNumber, target));
        }
        throw error;
      }
      const info = await call(() => control.info(byNumber, 0));
      if (info.eventNr !== target) return info;
      signal?.throwIfAborted();
      const readable = await callNative(() => poller.pollReadable());
      if (!readable) signal?.throwIfAborted();
    }
  } finally {
    signal?.removeEventListener('abort', cancel);
    poller.close();
  }
}
