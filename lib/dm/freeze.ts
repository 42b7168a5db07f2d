/**
 * The freeze of a snapshot in one native call: suspend the origin (flushing and freezing
 * its filesystem), resume the snapshot, resume the origin with its new table. It runs on
 * a thread of its own with memory locked, so that neither the application's I/O on the
 * frozen filesystem (which can fill libuv's thread pool) nor a page fault can keep the
 * origin suspended; a failed step makes the native side resume the origin with its
 * previous table before it reports.
 */
import { errnoCode } from '../errors';
import { makeSyscallError, type NativeControl, type NativeDeviceInfo, type NativeDeviceRef, type NativeFreezeOptions, type NativeFreezeResult } from '../native';
import type { UdevBatch } from './udev';

/** A step inside the freeze. */
export type FreezeStep = 'suspend-origin' | 'resume-snapshot' | 'resume-origin';

/** Options of DeviceMapper.freeze. */
export interface FreezeOptions {
  /** Both resumes share this batch's udev cookie; `batch.finish()` waits for udev afterwards. */
  batch: UdevBatch;
  /** Extra udev flags of the snapshot's resume (see UdevFlags). */
  snapshotUdevFlags?: number;
  /** Suspend the origin without freezing its filesystem (DM_SKIP_LOCKFS_FLAG). */
  skipLockfs?: boolean;
  /** A new table for the origin waits in its inactive slot: a failed freeze drops it. */
  originTableLoaded?: boolean;
  /** @internal Test seam (DMSNAP_TEST_SEAMS=1 only): fail or SIGKILL right after a step, inside the freeze. */
  seam?: { step: 'suspend-origin' | 'resume-snapshot'; action: 'fail' | 'kill' };
}

/** What a successful freeze did (`Info`: the device state as the caller reports it). */
export interface FreezeOutcome<Info = NativeDeviceInfo> {
  /** How long the origin was suspended, measured natively (CLOCK_MONOTONIC), in milliseconds. */
  freezeMs: number;
  /** Whether memory was locked during the freeze (see NativeFreezeResult.memoryLock). */
  memoryLock: NativeFreezeResult['memoryLock'];
  /** The snapshot and the origin after their resumes. */
  snapshot: Info;
  origin: Info;
}

/** A failed freeze: which step, and whether the origin was resumed with its previous table. */
export interface FreezeFailureFacts {
  /** The step that failed (the one after which a test seam failed). */
  freezeStep: FreezeStep;
  /** Whether the origin runs again with its previous table (set when a recovery was needed). */
  recovery?: NativeFreezeResult['recovery'];
}

/** Runs the freeze and turns a failed step into a DmError (or the test seam's Error) carrying FreezeFailureFacts. */
export async function runFreeze(
  control: NativeControl,
  origin: NativeDeviceRef,
  snapshot: NativeDeviceRef,
  suspendFlags: number,
  options: FreezeOptions,
): Promise<FreezeOutcome> {
  const { batch } = options;
  const snapSlot = batch.reserve(options.snapshotUdevFlags ?? 0);
  const originSlot = batch.reserve(0);
  const native: NativeFreezeOptions = { clearOnFailure: options.originTableLoaded === true };
  if (options.seam) {
    native.seamStep = options.seam.step === 'suspend-origin' ? 0 : 1;
    native.seamAction = options.seam.action;
  }
  let result: NativeFreezeResult;
  try {
    result = await control.freeze(origin, suspendFlags, snapshot, 0, snapSlot.eventNr, 0, originSlot.eventNr, native);
  } catch (error) {
    snapSlot.settle();
    originSlot.settle();
    throw error;
  }
  snapSlot.settle(result.snapshot);
  originSlot.settle(result.origin);
  for (const info of [result.snapshot, result.origin]) if (info) batch.ensureNodeLater(info.name, info.major, info.minor);
  if (!result.failure) {
    return { freezeMs: result.freezeMs, memoryLock: result.memoryLock, snapshot: result.snapshot!, origin: result.origin! };
  }
  throw freezeError(result);
}

function freezeError(result: NativeFreezeResult): Error {
  const { failure, recovery } = result;
  const { step, injected, errno, ioctl, path, device } = failure!;
  const error: Error = injected
    ? new Error(`test seam: failing after step "${step}"`)
    : makeSyscallError({ errno, syscall: 'ioctl', ioctl, path, device });
  if (recovery && !recovery.resumed) {
    error.message += `; resuming the origin afterwards failed too (${errnoCode(recovery.resumeErrno ?? 0)})`;
  }
  const facts: FreezeFailureFacts = { freezeStep: step, ...(recovery ? { recovery } : {}) };
  return Object.assign(error, facts);
}
