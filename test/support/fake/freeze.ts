/**
 * The fake kernel's control.freeze: the native sequence of native/freeze.cc (suspend the
 * origin, resume the snapshot, resume the origin; on a failure once suspended, drop the
 * origin's new table and resume it), made of the fake control's own ioctls, with the
 * same result shape and the same test seams.
 */
import type { NativeControl, NativeDeviceInfo, NativeDeviceRef, NativeFreezeResult } from '../../../lib/native';

type Failure = NonNullable<NativeFreezeResult['failure']>;
const STEPS = ['suspend-origin', 'resume-snapshot', 'resume-origin'] as const;

function describe(ref: NativeDeviceRef): string {
  if (ref.name) return ref.name;
  if (ref.uuid) return `uuid ${ref.uuid}`;
  return `${ref.major}:${ref.minor}`;
}

/** errno of a failed fake ioctl (the addon's errors carry it negative). */
function errnoOf(error: unknown): number {
  const errno = (error as { errno?: unknown }).errno;
  if (typeof errno !== 'number') throw error;
  return Math.abs(errno);
}

/** control.freeze of the fake: its arguments are the binding's, in the binding's order. */
export async function fakeFreeze(control: NativeControl, ...args: Parameters<NativeControl['freeze']>): Promise<NativeFreezeResult> {
  const [origin, originSuspendFlags, snapshot, snapshotResumeFlags, snapshotEventNr, originResumeFlags, originEventNr, options] = args;
  const result: NativeFreezeResult = { freezeMs: 0, memoryLock: 'locked' };
  const fail = (step: number, errno: number): Failure => ({
    step: STEPS[step],
    errno,
    injected: errno === 0,
    ioctl: 'DM_DEV_SUSPEND',
    path: control.path,
    device: describe(step === 1 ? snapshot : origin),
  });
  const seam = (step: number) => {
    if (options.seamStep !== step) return false;
    if (options.seamAction === 'kill') process.kill(process.pid, 'SIGKILL');
    return options.seamAction === 'fail';
  };
  const attempt = async (op: () => Promise<NativeDeviceInfo>): Promise<NativeDeviceInfo | number> => op().catch(errnoOf);
  const started = performance.now();
  const suspended = await attempt(() => control.suspend(origin, originSuspendFlags));
  if (typeof suspended === 'number') {
    result.failure = fail(0, suspended);
    result.freezeMs = performance.now() - started;
    return result;
  }
  if (seam(0)) {
    result.failure = fail(0, 0);
  } else {
    const snap = await attempt(() => control.resume(snapshot, snapshotResumeFlags, snapshotEventNr));
    if (typeof snap === 'number') {
      result.failure = fail(1, snap);
    } else {
      result.snapshot = snap;
      if (seam(1)) {
        result.failure = fail(1, 0);
      } else {
        const resumed = await attempt(() => control.resume(origin, originResumeFlags, originEventNr));
        if (typeof resumed === 'number') result.failure = fail(2, resumed);
        else result.origin = resumed;
      }
    }
  }
  if (result.failure) {
    const cleared = options.clearOnFailure ? await attempt(() => control.clear(origin)) : undefined;
    const resumed = await attempt(() => control.resume(origin, originResumeFlags, originEventNr));
    result.recovery = { cleared: cleared !== undefined && typeof cleared !== 'number', resumed: typeof resumed !== 'number' };
    if (typeof cleared === 'number') result.recovery.clearErrno = cleared;
    if (typeof resumed === 'number') result.recovery.resumeErrno = resumed;
    else result.origin = resumed;
  }
  result.freezeMs = performance.now() - started;
  return result;
}
